package faults_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// packet is one milter packet: length, command, data.
func packet(cmd byte, data string) []byte {
	b := make([]byte, 5, 5+len(data))
	binary.BigEndian.PutUint32(b, uint32(1+len(data)))
	b[4] = cmd
	return append(b, data...)
}

// baseline reads go_goroutines and process_open_fds once they have held
// still for a second.
func baseline(t *testing.T, e *env) (goroutines, fds float64) {
	t.Helper()
	prevG, prevF := -1.0, -1.0
	for range 20 {
		m := metricsAll(t, e.metrics)
		g, f := m["go_goroutines"], m["process_open_fds"]
		if g == prevG && f == prevF {
			return g, f
		}
		prevG, prevF = g, f
		time.Sleep(time.Second)
	}
	return prevG, prevF
}

// TestMTADropsMidSession: 240 milter connections cut at every stage — at
// once, in a half-written packet, after negotiation, after connect and
// MAIL, right after sending RCPT, and with RCPT's lookup stuck on a frozen
// slapd — leave no goroutine or file descriptor behind, and the daemon
// serves as before.
func TestMTADropsMidSession(t *testing.T) {
	e := startEnv(t, envOptions{})
	if got := ask(t, e.d, userAddr(0), "nobody@example.com"); got[0] != accept || got[1] != reject {
		t.Fatalf("before: %q", got)
	}
	baseG, baseF := baseline(t, e)
	if baseG <= 0 || baseF <= 0 {
		t.Fatalf("no go_goroutines/process_open_fds in /metrics (%v, %v)", baseG, baseF)
	}

	const each = 40
	negotiated := func(i int) (*gomilter.ClientSession, net.Conn) {
		d := &countingDialer{}
		s, err := e.d.MilterClient(10*time.Second, d).Session()
		if err != nil {
			t.Errorf("session %d: %v", i, err)
			return nil, nil
		}
		return s, d.last()
	}
	// mailed is negotiated plus Connect and MAIL; nil on failure.
	mailed := func(i int) net.Conn {
		s, c := negotiated(i)
		if s == nil {
			return nil
		}
		if _, err := s.Conn("mx.client.test", gomilter.FamilyInet, 25, "192.0.2.1"); err != nil {
			t.Errorf("conn: %v", err)
		}
		if _, err := s.Mail("<s@example.org>", nil); err != nil {
			t.Errorf("mail: %v", err)
		}
		return c
	}
	stages := []struct {
		name string
		cut  func(i int)
	}{
		{"at once", func(int) {
			if c, err := net.Dial(e.d.Network, e.d.Address); err == nil {
				c.Close()
			}
		}},
		{"half a packet", func(int) {
			if c, err := net.Dial(e.d.Network, e.d.Address); err == nil {
				c.Write(packet('O', "\x00\x00\x00\x06")[:7])
				c.Close()
			}
		}},
		{"after negotiation", func(i int) {
			if _, c := negotiated(i); c != nil {
				c.Close()
			}
		}},
		{"after MAIL", func(i int) {
			if c := mailed(i); c != nil {
				c.Close()
			}
		}},
		{"right after RCPT", func(i int) {
			if c := mailed(i); c != nil {
				c.Write(packet('R', "<"+userAddr(100+i)+">\x00"))
				c.Close()
			}
		}},
	}
	run := func(name string, cut func(int), offset int) {
		var wg sync.WaitGroup
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cut(offset + i)
			}()
		}
		wg.Wait()
		t.Logf("%d connections cut %s", each, name)
	}
	for k, s := range stages {
		run(s.name, s.cut, k*each)
	}
	// RCPT sent, its lookup stuck on a frozen slapd, then the MTA goes.
	e.slapd.Freeze()
	run("with the lookup in flight", stages[len(stages)-1].cut, 300)
	e.slapd.Thaw()

	var g, f float64
	ok := testserver.Eventually(30*time.Second, func() bool {
		m := metricsAll(t, e.metrics)
		g, f = m["go_goroutines"], m["process_open_fds"]
		return g <= baseG+10 && f <= baseF+5 && m["antespam_sessions_active"] == 0
	})
	t.Logf("goroutines %v -> %v, open fds %v -> %v", baseG, g, baseF, f)
	if !ok {
		t.Errorf("after %d cut connections: goroutines %v (before %v), open fds %v (before %v); want at most +10 and +5",
			6*each, g, baseG, f, baseF)
	}
	if got := askRecovered(t, e.d, userAddr(1), "nobody@example.com"); got[0] != accept || got[1] != reject {
		t.Errorf("after: %q", got)
	}
	if e.d.Exited() {
		t.Error("the daemon exited")
	}
}

// TestSIGHUPUnderLoad: a SIGHUP every 100 ms during a steady load: every
// session gets its answers, none fails, none is tempfailed, and the
// daemon reloads every time (signals may merge).
func TestSIGHUPUnderLoad(t *testing.T) {
	e := startEnv(t, envOptions{useMemcache: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tl := newTally(e.opts.decisionTimeout + margin)
	done := startLoad(ctx, e.d, loadSpec{workers: 16, rate: 150, max: 750, next: mixedLoad(3, 40)}, tl)
	sent := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
			if err := e.d.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	t.Logf("%d SIGHUPs: %s", sent, tl)
	checkTotals(t, "SIGHUP every 100ms", tl, map[string]string{knownG: accept, freshG: accept, unknownG: reject})
	if tl.sent != 750 {
		t.Errorf("sent %d RCPTs, want 750", tl.sent)
	}
	var reloads float64
	testserver.Eventually(10*time.Second, func() bool {
		reloads = metric(t, e.metrics, `antespam_config_reloads_total{result="ok"}`)
		return strings.Count(e.d.Output(), "config reloaded") == int(reloads) && reloads >= 1
	})
	t.Logf("%v reloads for %d SIGHUPs", reloads, sent)
	if reloads < float64(sent)/4 || reloads > float64(sent) {
		t.Errorf("%v reloads for %d SIGHUPs", reloads, sent)
	}
	if n := metric(t, e.metrics, `antespam_config_reloads_total{result="error"}`); n > 0 {
		t.Errorf("%v failed reloads", n)
	}
	if e.d.Exited() {
		t.Fatal("the daemon exited")
	}
}

// TestMaxSessions: with max_sessions open, a new connection waits for a
// slot (and gets it when one frees up), or is closed after its wait with
// a log line and a count; the daemon stays up and serves again after.
func TestMaxSessions(t *testing.T) {
	const max = 4
	e := startEnv(t, envOptions{extra: fmt.Sprintf("max_sessions = %d", max)})
	held := make([]*gomilter.ClientSession, max)
	for i := range held {
		s, err := e.d.MilterClient(10*time.Second, nil).Session()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if _, err := s.Conn("mx.client.test", gomilter.FamilyInet, 25, "192.0.2.1"); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		held[i] = s
	}

	// One more: refused after its wait, not served.
	start := time.Now()
	_, err := e.d.MilterClient(10*time.Second, nil).Session()
	waited := time.Since(start)
	if err == nil {
		t.Fatalf("session %d of max_sessions = %d was served", max+1, max)
	}
	// Refused by the daemon after its queue timeout (a second): the
	// connection closed, not the client's own 10s read timeout.
	if waited < 500*time.Millisecond || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("refused after %s (%v), want the daemon to close it after a wait of about a second", waited, err)
	}
	if !e.d.WaitOutput("max_sessions reached", 15*time.Second) {
		t.Errorf("no log line for the refused connection:\n%s", e.d.Output())
	}
	if v := metric(t, e.metrics, "antespam_sessions_refused_total"); v < 1 {
		t.Errorf("antespam_sessions_refused_total = %v", v)
	}

	// One more while a slot frees up: it waits and is served. The slot is
	// freed only once the daemon holds the connection while all slots are
	// taken: it is then waiting (served at once otherwise, the test would
	// pass without the wait).
	got := make(chan error, 1)
	dialer := &countingDialer{}
	go func() {
		s, err := e.d.MilterClient(10*time.Second, dialer).Session()
		if err == nil {
			_, err = s.Conn("mx.client.test", gomilter.FamilyInet, 25, "192.0.2.1")
			if err == nil {
				var a *gomilter.Action
				_, err = s.Mail("<s@example.org>", nil)
				if err == nil {
					a, err = s.Rcpt("<"+userAddr(3)+">", nil)
				}
				if err == nil && classify(a) != accept {
					err = fmt.Errorf("rcpt: %s", classify(a))
				}
			}
			s.Close()
		}
		got <- err
	}()
	if v := metric(t, e.metrics, "antespam_sessions_active"); v != max {
		t.Fatalf("antespam_sessions_active = %v, want %d: every slot held", v, max)
	}
	// It waits at most a second (the queue timeout) from the accept:
	// look every millisecond, not with Eventually's growing pauses, so
	// that a loaded machine leaves most of that second to the close.
	deadline := time.Now().Add(30 * time.Second)
	for dialer.n.Load() != 1 || !e.d.Accepted(dialer.last().LocalAddr()) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not accept the connection beyond max_sessions within 30s")
		}
		time.Sleep(time.Millisecond)
	}
	held[0].Close()
	if err := <-got; err != nil {
		t.Errorf("session waiting for a freed slot: %v", err)
	}

	for _, s := range held[1:] {
		s.Close()
	}
	if !testserver.Eventually(10*time.Second, func() bool { return metric(t, e.metrics, "antespam_sessions_active") == 0 }) {
		t.Error("sessions still active after closing them all")
	}
	// max sessions at once, then more: all served.
	tl := newTally(0)
	runLoad(context.Background(), e.d, loadSpec{workers: max, rate: 200, max: 100, next: func(n int) item {
		return item{knownG, userAddr(n)}
	}}, tl)
	checkTotals(t, "after", tl, map[string]string{knownG: accept})
	if e.d.Exited() {
		t.Fatal("the daemon exited")
	}
}
