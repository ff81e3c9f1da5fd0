package milter

import (
	"context"
	"log/slog"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Decisions run on decision workers, not on the session's goroutine.
//
// A session's goroutine lives as long as the MTA keeps the connection,
// mostly idle, and Go never gives back the stack a goroutine grew while
// it stays as deep as go-milter's read loop: the lookup paths (at Connect
// Checker.Host and its candidate keys, at RCPT the LRU) and the slog text
// handler go past the 4 KB go-milter's own loop needs, and every idle
// session then kept an 8 KB stack (bench-memory: 12.8 KB a session, 79 MB
// of goroutine stacks for 10,000, against 7.4 KB for a no-op milter).
// The session hands the decision and its log line to a worker, a
// goroutine that stays deep once and serves decision after decision, and
// waits for it: two goroutine switches per decision.
//
// A decision that needs neither a lookup nor a log line (a check that is
// off, or a local or trusted client while Info lines are not logged) is
// answered on the session's goroutine: it is shallow, and the switches
// would cost more than it does. A trusted or local client's decision that
// is logged still goes to a worker, as the log line is what would grow
// the session's stack.
//
// Workers are started when none is free (a decision blocked on LDAP must
// not hold up another session's) and end after workerIdle without work,
// so a burst leaves nothing behind.

// workerIdle is how long a decision worker waits for work before it ends.
const workerIdle = 500 * time.Millisecond

// job is the decision a session hands to a worker, and its outcome.
type job struct {
	p     *Policy
	stage string
	arg   string // the client's host name at Connect, the recipient at RCPT

	resp     gomilter.Response
	err      error
	panicked any // re-raised in the session's goroutine
}

// decide runs the stage's decision, on a worker unless it is shallow, and
// returns its response.
func (s *session) decide(p *Policy, stage, arg string) (gomilter.Response, error) {
	if s.shallow(p, stage) {
		return s.answer(p, stage, arg)
	}
	if s.done == nil {
		s.done = make(chan struct{}, 1)
	}
	s.job = job{p: p, stage: stage, arg: arg}
	s.srv.dispatch(s)
	<-s.done
	j := s.job
	s.job = job{}
	if j.panicked != nil {
		panic(j.panicked)
	}
	return j.resp, j.err
}

// work is the worker's side of decide.
func (s *session) work() {
	defer func() {
		if v := recover(); v != nil {
			s.job.panicked = v
		}
		s.done <- struct{}{}
	}()
	j := &s.job
	j.resp, j.err = s.answer(j.p, j.stage, j.arg)
}

// answer decides the stage and turns the outcome into the response.
func (s *session) answer(p *Policy, stage, arg string) (gomilter.Response, error) {
	switch stage {
	case stageConnect:
		d, r := p.DecideHost(s.srv.ctx, s.client, arg)
		return s.respond(p, stageConnect, r, d)
	case stageRcpt:
		d, r := p.DecideRcpt(s.srv.ctx, arg)
		return s.respond(p, stageRcpt, r, d)
	}
	return respContinue, nil
}

// shallow reports whether the stage's decision needs neither a lookup
// nor a log line: the check is off (such decisions are not logged), or
// the client has no address or is trusted and Info lines are not logged.
// It follows the order of DecideHost and DecideRcpt.
func (s *session) shallow(p *Policy, stage string) bool {
	c := p.Config
	switch stage {
	case stageRcpt:
		return !c.Recipients.Enabled
	case stageConnect:
		if !c.Hosts.Enabled {
			return true
		}
		if !s.client.IsValid() || p.Trusted(s.client) {
			return !s.logger(p).Enabled(context.Background(), slog.LevelInfo)
		}
	}
	return false
}

// dispatch hands s's job to a free worker, or to a new one.
func (srv *Server) dispatch(s *session) {
	select {
	case srv.jobs <- s:
	default:
		go srv.worker(s)
	}
}

// worker runs s's job, then the jobs handed to it, until it has been idle
// for workerIdle or the server has shut down.
func (srv *Server) worker(s *session) {
	s.work()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		select {
		case s = <-srv.jobs:
			s.work()
			t.Reset(workerIdle)
		case <-t.C:
			return
		case <-srv.ctx.Done():
			return
		}
	}
}
