package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/metrics"
)

// Protocol is what the milter asks the MTA in negotiation: no HELO, no
// headers, no end of headers, no body. Only protocol version 2 flags
// (mask 0x7f) are used, as go-milter answers with version 2; no "no reply"
// flag is set, as go-milter writes a reply to every command regardless.
const Protocol = gomilter.OptNoHelo | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoBody

// Macros are the macros the milter asks for, per stage, with the symbol
// list (SMFIF_SETSYMLIST, the only action requested: the milter only
// replies). Postfix 3.7 and Sendmail 8.17 honour it from a version 2
// milter (tested in mta_test.go), so the MTA's own macro lists
// (milter_*_macros, confMILTER_MACROS_*) need not change. {client_addr}
// is a fallback for a connect address go-milter cannot parse; Postfix
// knows the queue id (i) only from the first accepted RCPT on.
var Macros = map[gomilter.Stage][]string{
	gomilter.StageConnect:  {"j", "{daemon_name}", "{client_addr}"},
	gomilter.StageMailFrom: {"i", "{auth_authen}"},
	gomilter.StageRcptTo:   {"i"},
}

// ServerOptions are the limits of a Server.
type ServerOptions struct {
	// MaxSessions caps the sessions open at once (max_sessions); 0 means
	// no cap.
	MaxSessions int
	// QueueTimeout is how long a connection beyond MaxSessions waits for a
	// free slot before it is closed (and counted as refused); 0 means 1s.
	// At most min(MaxSessions, 256) connections wait; more are refused at
	// once, so that waiting cannot exhaust the file descriptors.
	QueueTimeout time.Duration
	// IdleTimeout closes a session that sends nothing for that long
	// (session_idle_timeout); 0 means never.
	IdleTimeout time.Duration
}

// Server owns the listeners and the sessions. go-milter's Server parses
// the protocol; this one accepts the connections itself so that it can cap,
// time out, count and drain them: go-milter's Close does not drain and its
// Serve returns on the first Accept error.
type Server struct {
	policy atomic.Pointer[Policy]
	opts   ServerOptions
	log    *slog.Logger

	// ctx is the parent of every decision's context; cancel ends them at
	// the end of Shutdown.
	ctx    context.Context
	cancel context.CancelFunc

	slots   chan struct{} // nil when MaxSessions is 0
	waiting atomic.Int64  // connections waiting for a slot

	mu        sync.Mutex
	listeners map[*listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	drained   chan struct{} // closed once closing and no conns are left

	refusedLog atomic.Int64 // unix nanoseconds of the last refusal logged

	jobs chan *session // to idle decision workers (decide.go)
}

// NewServer returns a Server deciding by policy, which must not be nil.
// log receives the server's own events and the decisions while the policy
// in force has no Log; nil means slog.Default().
func NewServer(policy *Policy, opts ServerOptions, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = time.Second
	}
	s := &Server{
		opts:      opts,
		log:       log,
		listeners: map[*listener]struct{}{},
		conns:     map[*conn]struct{}{},
		drained:   make(chan struct{}),
		jobs:      make(chan *session),
	}
	if opts.MaxSessions > 0 {
		s.slots = make(chan struct{}, opts.MaxSessions)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.policy.Store(policy)
	return s
}

// SetPolicy swaps the policy in: the next decision of every session uses
// it. A nil policy is ignored.
func (s *Server) SetPolicy(p *Policy) {
	if p != nil {
		s.policy.Store(p)
	}
}

// Policy returns the policy in force.
func (s *Server) Policy() *Policy { return s.policy.Load() }

// logger is the logger of the policy in force, or the Server's: a reload
// that changes log_level or log_format swaps the policy, and the server's
// own lines (idle close, refusal, accept retry) follow it as the decision
// lines do.
func (s *Server) logger() *slog.Logger {
	if p := s.policy.Load(); p != nil && p.Log != nil {
		return p.Log
	}
	return s.log
}

// Active returns the number of open sessions.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Serve accepts milter connections on ln until Shutdown, each served in its
// own goroutine. It returns nil after Shutdown, or the listener's first
// error that is not temporary (temporary ones, such as running out of file
// descriptors, are retried with a backoff). Serve closes ln.
func (s *Server) Serve(ln net.Listener) error {
	l := &listener{
		Listener: ln,
		srv:      s,
		conns:    make(chan *conn),
		done:     make(chan struct{}),
		failed:   make(chan struct{}),
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()

	go l.acceptLoop()
	gs := &gomilter.Server{
		NewMilter: l.newSession,
		Protocol:  Protocol,
		Actions:   gomilter.OptSetSymList,
		SymList:   Macros,
	}
	err := gs.Serve(l)
	l.Close()

	s.mu.Lock()
	delete(s.listeners, l)
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil
	}
	return fmt.Errorf("milter accept on %s: %w", ln.Addr(), err)
}

// Shutdown stops accepting (a unix socket file is removed with its
// listener), then waits for the open sessions to end, which they do when
// the MTA ends its SMTP sessions. When ctx expires first, the sessions
// waiting for the MTA's next command are closed, those in the middle of a
// decision get up to decision_timeout to answer it, and whatever is left is
// closed. Shutdown returns nil when every session ended by itself.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	ls := make([]*listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	s.checkDrained()
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	defer s.cancel()

	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
	}

	n := 0
	for _, c := range s.openConns() {
		c.drain()
		n++
	}
	grace := s.policy.Load().Config.DecisionTimeout + 100*time.Millisecond
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-s.drained:
	case <-t.C:
		for _, c := range s.openConns() {
			c.Close()
		}
	}
	return fmt.Errorf("milter shutdown: %d sessions still open, closed: %w", n, ctx.Err())
}

func (s *Server) openConns() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// checkDrained closes drained once closing with no session left; s.mu is
// held.
func (s *Server) checkDrained() {
	if s.closing && len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// track registers c, which holds a slot, as a session; nil when the
// server is shutting down (c is then closed and its slot released).
func (s *Server) track(nc net.Conn) *conn {
	c := &conn{Conn: nc, srv: s, idle: s.opts.IdleTimeout}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		s.release()
		return nil
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	metrics.SessionsActive.Inc()
	metrics.SessionsTotal.Inc()
	return c
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.checkDrained()
	s.mu.Unlock()
	metrics.SessionsActive.Dec()
	s.release()
}

func (s *Server) release() {
	if s.slots != nil {
		<-s.slots
	}
}

// refuse closes a connection beyond max_sessions, with at most one log
// line a second.
func (s *Server) refuse(c net.Conn) {
	defer c.Close()
	metrics.SessionsRefused.Inc()
	now := time.Now().UnixNano()
	last := s.refusedLog.Load()
	if now-last >= int64(time.Second) && s.refusedLog.CompareAndSwap(last, now) {
		s.logger().Warn("milter connection refused: max_sessions reached",
			slog.Int("max_sessions", s.opts.MaxSessions), slog.String("remote", c.RemoteAddr().String()))
	}
}

// maxWaiting caps the connections waiting for a session slot.
const maxWaiting = 256

// listener feeds go-milter's Serve with admitted, tracked connections.
// Its own accept loop retries temporary errors and enforces max_sessions.
type listener struct {
	net.Listener
	srv   *Server
	conns chan *conn
	// accepted is the connection Accept returned last, until go-milter's
	// Serve, which calls NewMilter right after Accept in the same
	// goroutine, takes it for the new session.
	accepted atomic.Pointer[conn]
	done     chan struct{} // closed by Close
	once     sync.Once
	failed   chan struct{} // closed when the accept loop stops on err
	err      error
}

// Accept returns the next admitted connection.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		l.accepted.Store(c)
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.err
	}
}

// newSession is go-milter's NewMilter: a session on the connection just
// accepted. A call that replaces a session after a response that does not
// continue (ours all continue) gets no connection: the session then
// leaves the read deadline as it is.
func (l *listener) newSession() gomilter.Milter {
	return &session{srv: l.srv, conn: l.accepted.Swap(nil)}
}

// Close stops the accept loop and closes the listener.
func (l *listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

func (l *listener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if !temporary(err) {
				l.err = err
				close(l.failed)
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.srv.logger().Warn("milter accept failed, retrying", slog.Any("error", err), slog.Duration("backoff", delay))
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		l.admit(c)
	}
}

// admit hands c on when a session slot is free; otherwise c waits for
// one, up to QueueTimeout, or is refused when too many already wait.
func (l *listener) admit(c net.Conn) {
	s := l.srv
	if s.slots == nil {
		l.deliver(c)
		return
	}
	select {
	case s.slots <- struct{}{}:
		l.deliver(c)
		return
	default:
	}
	if s.waiting.Add(1) > int64(min(s.opts.MaxSessions, maxWaiting)) {
		s.waiting.Add(-1)
		s.refuse(c)
		return
	}
	metrics.SessionsWaiting.Inc()
	go func() {
		t := time.NewTimer(s.opts.QueueTimeout)
		defer t.Stop()
		select {
		case s.slots <- struct{}{}:
			s.stopWaiting()
			l.deliver(c)
		case <-t.C:
			s.stopWaiting()
			s.refuse(c)
		case <-l.done:
			s.stopWaiting()
			c.Close()
		}
	}()
}

// stopWaiting counts a connection out of the wait for a slot, as soon as
// the wait is over (delivering it may block a little longer).
func (s *Server) stopWaiting() {
	s.waiting.Add(-1)
	metrics.SessionsWaiting.Dec()
}

// deliver tracks c, which holds a slot, and passes it to Serve.
func (l *listener) deliver(nc net.Conn) {
	c := l.srv.track(nc)
	if c == nil {
		return
	}
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// temporary reports whether an Accept error is worth a retry: out of file
// descriptors or memory, or a connection aborted before it was accepted.
func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// TransactionTimeout is the read deadline of a session with a transaction
// open (from MAIL to the end of the message or an abort) when it is longer
// than session_idle_timeout: headers and body are masked off, so the MTA
// says nothing from the last RCPT until the client has sent the whole
// message, however slowly.
const TransactionTimeout = time.Hour

// conn is one session's connection: it keeps a read deadline (the idle
// timeout between transactions, TransactionTimeout within one) and ends
// the session's bookkeeping when closed.
type conn struct {
	net.Conn
	srv  *Server
	idle time.Duration // session_idle_timeout; 0: no deadline

	// Owned by the session's goroutine, which go-milter uses both to read
	// and to call the handler.
	inTransaction bool
	deadline      time.Time // the read deadline set

	mu       sync.Mutex // orders setting a deadline against drain
	draining atomic.Bool
	once     sync.Once
}

// transaction tells c that a transaction opened or ended; the next read
// applies the deadline that goes with it.
func (c *conn) transaction(open bool) { c.inTransaction = open }

// timeout is the read deadline in force from now; 0 means none.
func (c *conn) timeout() time.Duration {
	switch {
	case c.idle <= 0:
		return 0
	case c.inTransaction:
		return max(TransactionTimeout, c.idle)
	}
	return c.idle
}

// deadlineSlack is how far a read deadline may run past its timeout, so
// that it is moved at most once per slack (about once a second) rather
// than at every read: setting it takes a lock and a timer update.
func deadlineSlack(timeout time.Duration) time.Duration { return min(time.Second, timeout/8) }

// Read waits for the MTA at most the timeout in force. An idle or drained
// session ends as if the MTA had closed it (io.EOF), so that go-milter
// does not log it as an error; the idle case is logged here.
func (c *conn) Read(b []byte) (int, error) {
	if c.draining.Load() {
		return 0, io.EOF
	}
	t := c.timeout()
	if t > 0 {
		// Keep the deadline within [now+t, now+t+slack].
		want := time.Now().Add(t)
		slack := deadlineSlack(t)
		if c.deadline.Before(want) || c.deadline.After(want.Add(slack)) {
			c.mu.Lock()
			if c.draining.Load() {
				c.mu.Unlock()
				return 0, io.EOF
			}
			c.deadline = want.Add(slack)
			c.Conn.SetReadDeadline(c.deadline)
			c.mu.Unlock()
		}
	}
	n, err := c.Conn.Read(b)
	if err != nil && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		if !c.draining.Load() {
			c.srv.logger().Info("milter session idle, closing", slog.String("remote", c.RemoteAddr().String()),
				slog.Duration("idle_timeout", t), slog.Bool("in_transaction", c.inTransaction))
		}
		return 0, io.EOF
	}
	return n, err
}

// drain ends the session at its next read, or now if it is waiting in
// one; a decision in progress still gets its reply written.
func (c *conn) drain() {
	c.mu.Lock()
	c.draining.Store(true)
	c.Conn.SetReadDeadline(time.Unix(1, 0))
	c.mu.Unlock()
}

// Close closes the connection and ends the session's bookkeeping once.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.srv.untrack(c) })
	return err
}
