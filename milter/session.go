package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/lookup"
	"github.com/antespam/antespam-milter/metrics"
)

// Stages as they appear in logs and metrics.
const (
	stageConnect = "connect"
	stageRcpt    = "rcpt"
)

// session is the handler of one milter connection. go-milter calls
// NewMilter (Server.newSession) at accept and again after any response that
// does not continue, which would lose what is kept here: every reply is
// therefore a 'y' reply-code response, which continues.
type session struct {
	gomilter.NoOpMilter
	srv *Server

	// Connection data, copied in at Connect: go-milter replaces its macro
	// map at every stage.
	client     netip.Addr
	clientName string
	daemon     string
	mtaHost    string

	// Message data, copied in at MailFrom and cleared at Abort.
	queueID  string
	authUser string
}

var _ gomilter.Milter = (*session)(nil)

// Connect checks the client host, unless it is in trusted_networks or
// hosts are not checked.
func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	p := s.srv.policy.Load()
	s.clientName = host
	s.daemon = m.Macros["{daemon_name}"]
	s.mtaHost = m.Macros["j"]
	if q := m.Macros["i"]; q != "" {
		s.queueID = q
	}
	s.client = clientAddr(addr, m.Macros["{client_addr}"])

	if !p.Config.Hosts.Enabled {
		return gomilter.RespContinue, nil
	}
	if !s.client.IsValid() {
		// A local (unix socket) or unknown client: nothing to look up.
		s.log(p, stageConnect, Reply{Verdict: VerdictAccept, Reason: "no client address"}, lookup.Decision{}, nil)
		return gomilter.RespContinue, nil
	}
	if p.Trusted(s.client) {
		s.log(p, stageConnect, Reply{Verdict: VerdictAccept, Reason: "trusted network"}, lookup.Decision{Tier: "trusted"}, nil)
		return gomilter.RespContinue, nil
	}
	ctx, cancel := s.srv.decisionContext(p)
	start := time.Now()
	d, err := decide(func() (lookup.Decision, error) { return p.Decider.Host(ctx, s.client, host) })
	cancel()
	if d.Duration == 0 {
		d.Duration = time.Since(start)
	}
	return s.respond(p, stageConnect, p.HostReply(d, err), d, err)
}

// decide calls the Decider and turns a panic into a lookup error, so that
// it gets the reply a failed lookup gets (go-milter would recover it and
// close the connection, and the MTA would apply its default action).
func decide(f func() (lookup.Decision, error)) (d lookup.Decision, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("lookup panicked: %v", v)
		}
	}()
	return f()
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

// MailFrom records the queue id and the authenticated user; it never
// decides.
func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.queueID = m.Macros["i"]
	s.authUser = m.Macros["{auth_authen}"]
	return gomilter.RespContinue, nil
}

// RcptTo checks the recipient from the RCPT argument: Sendmail's
// {rcpt_addr} holds only the local part of a local address.
func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	p := s.srv.policy.Load()
	if q := m.Macros["i"]; q != "" {
		s.queueID = q
	}
	if !p.Config.Recipients.Enabled {
		return gomilter.RespContinue, nil
	}
	ctx, cancel := s.srv.decisionContext(p)
	start := time.Now()
	d, err := decide(func() (lookup.Decision, error) { return p.Decider.Recipient(ctx, rcpt) })
	cancel()
	if d.Duration == 0 {
		d.Duration = time.Since(start)
	}
	if d.Item == "" {
		d.Item = rcpt
	}
	return s.respond(p, stageRcpt, p.RcptReply(rcpt, d, err), d, err)
}

// Body answers the end of the message with continue, which the MTAs take
// as accept: NoOpMilter's RespAccept would make go-milter replace the
// session and lose the connection data for the next message.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// Abort ends the message; the connection data stays.
func (s *session) Abort(m *gomilter.Modifier) error {
	s.queueID = ""
	s.authUser = ""
	return nil
}

// respond logs and counts the decision and turns it into the response.
func (s *session) respond(p *Policy, stage string, r Reply, d lookup.Decision, err error) (gomilter.Response, error) {
	s.log(p, stage, r, d, err)
	if r.Verdict == VerdictAccept || p.Report() {
		return gomilter.RespContinue, nil
	}
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), r.Code), nil
}

func (s *session) log(p *Policy, stage string, r Reply, d lookup.Decision, err error) {
	verdict := r.Verdict
	report := p.Report() && verdict != VerdictAccept
	if report {
		verdict = "would_" + verdict
	}
	metrics.Decisions.WithLabelValues(stage, verdict).Inc()

	log := p.Log
	if log == nil {
		log = s.srv.log
	}
	level := slog.LevelInfo
	if err != nil && !errors.Is(err, lookup.ErrBadAddress) {
		level = slog.LevelWarn
	}
	if !log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("stage", stage),
		slog.String("verdict", verdict),
	)
	if s.queueID != "" {
		attrs = append(attrs, slog.String("queue_id", s.queueID))
	}
	if s.client.IsValid() {
		attrs = append(attrs, slog.String("client_addr", s.client.String()))
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
	log.LogAttrs(context.Background(), level, "decision", attrs...)
}
