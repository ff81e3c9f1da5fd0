package milter

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/antespam/antespam-milter/lookup"
	"github.com/antespam/antespam-milter/metrics"
)

// Stages as they appear in logs and metrics.
const (
	stageConnect = "connect"
	stageRcpt    = "rcpt"
)

// session is the handler of one milter connection. go-milter calls
// NewMilter (the listener's newSession) at accept and again after any
// response that does not continue, which would lose what is kept here:
// every reply is therefore a 'y' reply-code response, which continues.
type session struct {
	gomilter.NoOpMilter
	srv *Server
	// conn is the session's connection, told when a transaction opens and
	// ends (its read deadline depends on it); nil in a session go-milter
	// made to replace another, which ours never need.
	conn *conn

	// Connection data, copied in at Connect: go-milter replaces its macro
	// map at every stage.
	client     netip.Addr
	clientText string // client.String(), made at the first log line
	clientName string
	daemon     string
	mtaHost    string

	// Message data, copied in at MailFrom and cleared at Abort.
	queueID  string
	authUser string

	// The decision handed to a worker (decide.go) and its end, made at
	// the first decision.
	job  job
	done chan struct{}

	// reply is the response of the last decision that was not continue.
	reply replyResponse
}

var _ gomilter.Milter = (*session)(nil)

// Connect checks the client host with Policy.DecideHost, on a decision
// worker unless the decision is shallow (decide.go).
func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	p := s.srv.policy.Load()
	s.clientName = host
	s.daemon = m.Macros["{daemon_name}"]
	s.mtaHost = m.Macros["j"]
	if q := m.Macros["i"]; q != "" {
		s.queueID = q
	}
	s.client = clientAddr(addr, m.Macros["{client_addr}"])
	s.clientText = ""
	return s.decide(p, stageConnect, host)
}

// clientAddr is the address from the connect packet or, when go-milter
// could not parse it (it hands over a nil net.IP), the {client_addr}
// macro, which Sendmail writes as "IPv6:::1" for IPv6.
func clientAddr(ip net.IP, macro string) netip.Addr {
	if a, ok := netip.AddrFromSlice(ip); ok {
		return a.Unmap()
	}
	macro = strings.TrimPrefix(strings.Trim(macro, "[]"), "IPv6:")
	if a, err := netip.ParseAddr(macro); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

// replyResponse is a 'y' (reply code) response to the MTA, kept in the
// session and refilled at every reject or tempfail: go-milter writes a
// response out before it reads the next command, so one per session is
// enough, where gomilter.NewResponseStr and its Response made three
// allocations per reply. Like NewResponseStr's, it continues.
type replyResponse struct {
	msg  gomilter.Message
	data []byte
}

var _ gomilter.Response = (*replyResponse)(nil)

// set makes r the reply line code, NUL-terminated as NewResponseStr makes
// it.
func (r *replyResponse) set(code string) *replyResponse {
	r.data = append(append(r.data[:0], code...), 0)
	r.msg = gomilter.Message{Code: byte(gomilter.ActReplyCode), Data: r.data}
	return r
}

func (r *replyResponse) Response() *gomilter.Message { return &r.msg }
func (r *replyResponse) Continue() bool              { return true }

// continueResponse is gomilter.RespContinue without an allocation per
// response: go-milter only reads the Message.
type continueResponse struct{}

var continueMessage = gomilter.Message{Code: byte(gomilter.ActContinue)}

func (continueResponse) Response() *gomilter.Message { return &continueMessage }
func (continueResponse) Continue() bool              { return true }

// respContinue is the session's continue response.
var respContinue gomilter.Response = continueResponse{}

// MailFrom records the queue id and the authenticated user; it never
// decides. It opens a transaction: the MTA is silent from the last RCPT to
// the end of the message (headers and body are masked off), so the
// connection's idle deadline is lifted until the message ends.
func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.queueID = m.Macros["i"]
	s.authUser = m.Macros["{auth_authen}"]
	if s.conn != nil {
		s.conn.transaction(true)
	}
	return respContinue, nil
}

// RcptTo checks the recipient from the RCPT argument (Sendmail's
// {rcpt_addr} holds only the local part of a local address) with
// Policy.DecideRcpt, on a decision worker unless recipients are not
// checked.
func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	p := s.srv.policy.Load()
	if q := m.Macros["i"]; q != "" {
		s.queueID = q
	}
	return s.decide(p, stageRcpt, rcpt)
}

// Body answers the end of the message with continue, which the MTAs take
// as accept: NoOpMilter's RespAccept would make go-milter replace the
// session and lose the connection data for the next message. The
// transaction is over: the idle deadline applies again.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	if s.conn != nil {
		s.conn.transaction(false)
	}
	return respContinue, nil
}

// Abort ends the message; the connection data stays.
func (s *session) Abort(m *gomilter.Modifier) error {
	s.queueID = ""
	s.authUser = ""
	if s.conn != nil {
		s.conn.transaction(false)
	}
	return nil
}

// respond logs and counts the decision and turns it into the response. A
// check that is off is neither logged nor counted.
func (s *session) respond(p *Policy, stage string, r Reply, d lookup.Decision) (gomilter.Response, error) {
	if d.Tier == TierDisabled {
		return respContinue, nil
	}
	s.log(p, stage, r, d)
	if r.Verdict == VerdictAccept || p.Report() {
		return respContinue, nil
	}
	return s.reply.set(r.Code), nil
}

func (s *session) log(p *Policy, stage string, r Reply, d lookup.Decision) {
	report := p.Report() && r.Verdict != VerdictAccept
	verdict := countDecision(stage, r.Verdict, report)
	err := r.Err

	log := s.logger(p)
	level := slog.LevelInfo
	if err != nil && !errors.Is(err, lookup.ErrBadAddress) {
		level = slog.LevelWarn
	}
	if !log.Enabled(context.Background(), level) {
		return
	}
	ap := attrPool.Get().(*[]slog.Attr)
	attrs := append((*ap)[:0],
		slog.String("stage", stage),
		slog.String("verdict", verdict),
	)
	if s.queueID != "" {
		attrs = append(attrs, slog.String("queue_id", s.queueID))
	}
	if s.client.IsValid() {
		if s.clientText == "" {
			s.clientText = s.client.String()
		}
		attrs = append(attrs, slog.String("client_addr", s.clientText))
	}
	attrs = append(attrs, slog.String("client_name", s.clientName))
	if s.daemon != "" {
		attrs = append(attrs, slog.String("daemon", s.daemon))
	}
	if s.authUser != "" {
		attrs = append(attrs, slog.String("auth_user", s.authUser))
	}
	if stage == stageRcpt {
		attrs = append(attrs, slog.String("rcpt", d.Item))
	}
	if d.Tier != "" {
		attrs = append(attrs, slog.String("tier", d.Tier))
	}
	attrs = append(attrs,
		slog.Bool("stale", d.Stale),
		slog.Duration("duration", d.Duration),
		slog.String("reason", r.Reason),
	)
	if r.Code != "" {
		attrs = append(attrs, slog.String("reply", strings.ReplaceAll(r.Code, "%%", "%")))
	}
	if report {
		attrs = append(attrs, slog.Bool("would_"+r.Verdict, true))
	}
	// The record is made here and handed to the handler, as
	// Logger.LogAttrs would, but without its runtime.Callers for a source
	// position the handler does not print. Its attrs are one group with
	// an empty key, which every handler writes inline, exactly as the
	// attrs one by one: a Record holds 5 attrs and allocates for more, a
	// group is one. The slice goes back to the pool after Handle: the
	// handlers the daemon and its tests use have written the record out
	// by then (one that kept records would have to copy the group).
	rec := slog.NewRecord(time.Now(), level, "decision", 0)
	rec.AddAttrs(slog.Attr{Value: slog.GroupValue(attrs...)})
	_ = log.Handler().Handle(context.Background(), rec)
	clear(attrs)
	*ap = attrs[:0]
	attrPool.Put(ap)
}

// logger is where p's decisions are logged: p.Log, or the Server's.
func (s *session) logger(p *Policy) *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return s.srv.log
}

// attrPool holds the attribute slices of decision lines (up to 16 attrs;
// the handler has copied them by the time the slice goes back).
var attrPool = sync.Pool{New: func() any {
	a := make([]slog.Attr, 0, 16)
	return &a
}}

// decisionCounters holds the metrics.Decisions series, resolved once per
// stage and verdict so that counting a decision is an atomic add.
var decisionCounters = func() map[[2]string]prometheus.Counter {
	m := map[[2]string]prometheus.Counter{}
	for _, stage := range []string{stageConnect, stageRcpt} {
		for _, v := range []string{VerdictAccept, VerdictReject, VerdictTempfail, "would_" + VerdictReject, "would_" + VerdictTempfail} {
			m[[2]string{stage, v}] = metrics.Decisions.WithLabelValues(stage, v)
		}
	}
	return m
}()

// countDecision counts a decision in metrics.Decisions and returns the
// verdict as logged: "would_reject" and "would_tempfail" in report mode.
func countDecision(stage, verdict string, report bool) string {
	if report {
		verdict = "would_" + verdict
	}
	if c := decisionCounters[[2]string{stage, verdict}]; c != nil {
		c.Inc()
	} else {
		metrics.Decisions.WithLabelValues(stage, verdict).Inc()
	}
	return verdict
}
