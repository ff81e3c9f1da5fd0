package milter

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/metrics"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		spec, network, addr, err string
	}{
		{"inet:8890@127.0.0.1", "tcp", "127.0.0.1:8890", ""},
		{"inet:8890@localhost", "tcp", "localhost:8890", ""},
		{"inet:8890", "tcp", ":8890", ""},
		{"inet:8890@[127.0.0.1]", "tcp", "127.0.0.1:8890", ""},
		{"inet6:8890@[::1]", "tcp6", "[::1]:8890", ""},
		{"inet6:8890@::1", "tcp6", "[::1]:8890", ""},
		{"inet6:8890", "tcp6", ":8890", ""},
		{"unix:/run/antespam/milter.sock", "unix", "/run/antespam/milter.sock", ""},
		{"local:/run/antespam/milter.sock", "unix", "/run/antespam/milter.sock", ""},
		{"unix:", "", "", "no socket path"},
		{"unix:/a\x00b", "", "", "NUL"},
		{"inet:", "", "", "port"},
		{"inet:-1@127.0.0.1", "", "", "port"},
		{"inet:+25@127.0.0.1", "", "", "port"},
		{"inet:70000@127.0.0.1", "", "", "port"},
		{"inet:http@127.0.0.1", "", "", "port"},
		{"inet:25@a b", "", "", "host"},
		{"inet:25@1.2.3.4@5", "", "", "host"},
		{"tcp:25@127.0.0.1", "", "", "unknown socket type"},
		{"127.0.0.1:25", "", "", "unknown socket type"},
		{"/run/milter.sock", "", "", "not inet"},
		{"", "", "", "not inet"},
	} {
		network, addr, err := ParseSpec(tc.spec)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseSpec(%q) error = %v, want one with %q", tc.spec, err, tc.err)
		case tc.err == "" && (err != nil || network != tc.network || addr != tc.addr):
			t.Errorf("ParseSpec(%q) = %q, %q, %v; want %q, %q", tc.spec, network, addr, err, tc.network, tc.addr)
		}
	}
}

// TestDialSpec: testserver.DialSpec, which cannot import config, dials
// what config.ParseListen (ParseSpec) makes of every valid spec.
func TestDialSpec(t *testing.T) {
	for _, spec := range []string{
		"inet:8890@127.0.0.1", "inet:8890@localhost", "inet:8890@[127.0.0.1]", "inet6:8890@[::1]",
		"inet6:8890@::1", "inet:8890", "inet6:8890", "unix:/run/antespam/milter.sock", "local:/tmp/m.sock",
	} {
		network, addr, err := ParseSpec(spec)
		if err != nil {
			t.Fatalf("ParseSpec(%q): %v", spec, err)
		}
		wantNet, wantAddr, wantPath := "tcp", addr, ""
		if network == "unix" {
			wantNet, wantPath = "unix", addr
		} else if host, port, _ := net.SplitHostPort(addr); host == "" {
			wantAddr = net.JoinHostPort("127.0.0.1", port)
		}
		if n, a, p := testserver.DialSpec(spec); n != wantNet || a != wantAddr || p != wantPath {
			t.Errorf("DialSpec(%q) = %q, %q, %q; ParseSpec says %q, %q, %q", spec, n, a, p, wantNet, wantAddr, wantPath)
		}
	}
}

// TestListenInet: sessions over inet and inet6 sockets.
func TestListenInet(t *testing.T) {
	pol := newPolicy(t, newMapSource(), testConfig(), discard())
	for _, spec := range []string{"inet:0@127.0.0.1", "inet6:0@[::1]"} {
		ln, err := Listen(spec, 0, "")
		if err != nil {
			if strings.HasPrefix(spec, "inet6") {
				testserver.Unavailable(t, "%s: %v (no IPv6 loopback)", spec, err)
			}
			t.Fatal(err)
		}
		serveOn(t, ln, pol, ServerOptions{}, discard())
		s := dial(t, "tcp", ln.Addr().String())
		must(t)(s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
		must(t)(s.Mail("a@b.test", nil))
		if got := must(t)(s.Rcpt("x@example.org", nil)); got != unknown("x@example.org") {
			t.Errorf("%s: Rcpt = %q", spec, got)
		}
	}
}

// TestListenUnix: mode and group applied, a stale socket replaced, a live
// one and a plain file refused, the socket removed at shutdown.
func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "milter.sock")
	group, gid := testGroup(t)

	// A stale socket: bound, then its listener gone without unlinking.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	ln, err := Listen("unix:"+path, 0o640, group)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want socket 0640", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != gid {
		t.Errorf("socket group %d, want %d (%s)", st.Gid, gid, group)
	}

	srv := serveOn(t, ln, newPolicy(t, newMapSource(), testConfig(), discard()), ServerOptions{}, discard())
	s := dial(t, "unix", path)
	if got := must(t)(s.Conn("localhost", gomilter.FamilyUnix, 0, path)); got != "continue" {
		t.Errorf("Conn over unix = %q", got)
	}
	must(t)(s.Mail("a@b.test", nil))
	if got := must(t)(s.Rcpt("x@example.org", nil)); got != unknown("x@example.org") {
		t.Errorf("Rcpt over unix = %q", got)
	}

	if _, err := Listen("local:"+path, 0o660, ""); err == nil || !strings.Contains(err.Error(), "another process is listening on "+path) {
		t.Errorf("second Listen on a live socket: %v", err)
	}

	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("keep me"), 0o600)
	if _, err := Listen("unix:"+plain, 0o660, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a plain file: %v", err)
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep me" {
		t.Error("plain file was touched")
	}
	if _, err := Listen("unix:"+filepath.Join(dir, "x.sock"), 0o660, "no-such-group-antespam"); err == nil {
		t.Error("Listen with an unknown group succeeded")
	}

	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Shutdown: %v", err)
	}
}

// testGroup is a group other than the current one when there is one.
func testGroup(t *testing.T) (string, int) {
	for _, name := range []string{"nogroup", "daemon", "users"} {
		if g, err := user.LookupGroup(name); err == nil {
			id, _ := strconv.Atoi(g.Gid)
			if id != os.Getgid() || name == "users" {
				return name, id
			}
		}
	}
	return strconv.Itoa(os.Getgid()), os.Getgid()
}

// TestMaxSessions: beyond max_sessions a connection waits for a slot, is
// refused when none frees in time, and the server stays up.
func TestMaxSessions(t *testing.T) {
	var logs logBuffer
	// The third session must get its slot within QueueTimeout of its
	// connect, through a wait here and a close the server has to notice:
	// a loaded machine can take a while.
	const queueTimeout = 3 * time.Second
	srv, addr := startServer(t, newPolicy(t, newMapSource(), testConfig(), nil),
		ServerOptions{MaxSessions: 2, QueueTimeout: queueTimeout}, logs.logger())
	refused0 := counterValue(t, metrics.SessionsRefused)

	s1 := dial(t, "tcp", addr)
	dial(t, "tcp", addr)

	// A third waits, and gets in when s1 ends.
	third := make(chan error, 1)
	var s3 *gomilter.ClientSession
	go func() {
		var err error
		s3, err = gomilter.NewClientWithOptions("tcp", addr, clientOpts).Session()
		third <- err
	}()
	select {
	case err := <-third:
		t.Fatalf("third session negotiated while 2 were open: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	eventually(t, 10*time.Second, "antespam_sessions_waiting is not 1 while the third waits", func() bool {
		return counterValue(t, metrics.SessionsWaiting) == 1
	})
	s1.Close()
	if err := <-third; err != nil {
		t.Fatalf("third session after one ended: %v", err)
	}
	t.Cleanup(func() { s3.Close() })

	// A fourth waits QueueTimeout, then is refused and counted.
	start := time.Now()
	if _, err := gomilter.NewClientWithOptions("tcp", addr, clientOpts).Session(); err == nil {
		t.Fatal("fourth session negotiated beyond max_sessions")
	} else {
		t.Logf("fourth session: %v", err)
	}
	if d := time.Since(start); d < queueTimeout {
		t.Errorf("refused after %s, before QueueTimeout (%s)", d, queueTimeout)
	}
	if got := counterValue(t, metrics.SessionsRefused) - refused0; got < 1 {
		t.Errorf("SessionsRefused grew by %v", got)
	}
	eventually(t, 10*time.Second, "antespam_sessions_waiting is not back to 0 after the refusal", func() bool {
		return counterValue(t, metrics.SessionsWaiting) == 0
	})
	if !strings.Contains(logs.String(), "max_sessions reached") {
		t.Errorf("no log line for the refusal:\n%s", logs.String())
	}
	if n := srv.Active(); n != 2 {
		t.Errorf("Active = %d, want 2", n)
	}

	// Still serving.
	if got := must(t)(s3.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1")); got != "continue" {
		t.Errorf("Conn = %q", got)
	}
	must(t)(s3.Mail("a@b.test", nil))
	if got := must(t)(s3.Rcpt("x@example.org", nil)); got != unknown("x@example.org") {
		t.Errorf("Rcpt = %q", got)
	}
}

// TestShutdownDrains: Shutdown stops accepting at once, every session in
// the middle of a decision gets its answer, and Shutdown returns nil once
// the MTA has ended them all.
func TestShutdownDrains(t *testing.T) {
	src := newMapSource()
	src.block["slow@example.org"] = true
	pol := newPolicy(t, src, testConfig(func(c *config.Config) { c.DecisionTimeout = 10 * time.Second }), nil)
	srv, addr := startServer(t, pol, ServerOptions{}, discard())

	const n = 5
	sessions := make([]*gomilter.ClientSession, n)
	replies := make(chan string, n)
	for i := range sessions {
		s := dial(t, "tcp", addr)
		sessions[i] = s
		must(t)(s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
		must(t)(s.Mail("a@b.test", nil))
		go func() {
			a, err := s.Rcpt("slow@example.org", nil)
			if err != nil {
				replies <- "error: " + err.Error()
				return
			}
			replies <- testserver.Reply(a)
		}()
	}
	for range n {
		select {
		case <-src.started:
		case <-time.After(5 * time.Second):
			t.Fatal("lookups did not start")
		}
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	eventually(t, 5*time.Second, "listener still accepting after Shutdown", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned with sessions in flight: %v", err)
	default:
	}

	close(src.release)
	for range n {
		if got := <-replies; got != unknown("slow@example.org") {
			t.Errorf("in-flight Rcpt = %q", got)
		}
	}
	// The sessions go on until the MTA ends them.
	if got := must(t)(sessions[0].Rcpt("other@example.org", nil)); got != unknown("other@example.org") {
		t.Errorf("Rcpt during drain = %q", got)
	}
	for _, s := range sessions {
		s.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the sessions ended")
	}
}

// TestShutdownTimeout: when shutdown_timeout expires, idle sessions are
// closed and a decision in progress still gets its reply.
func TestShutdownTimeout(t *testing.T) {
	src := newMapSource()
	src.block["slow@example.org"] = true
	pol := newPolicy(t, src, testConfig(func(c *config.Config) { c.DecisionTimeout = 5 * time.Second }), nil)
	srv, addr := startServer(t, pol, ServerOptions{}, discard())

	busy := dial(t, "tcp", addr)
	must(t)(busy.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
	must(t)(busy.Mail("a@b.test", nil))
	idle := dial(t, "tcp", addr)
	must(t)(idle.Conn("h", gomilter.FamilyInet, 25, "10.0.0.2"))

	got := make(chan string, 1)
	go func() {
		a, err := busy.Rcpt("slow@example.org", nil)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- testserver.Reply(a)
	}()
	<-src.started

	done := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	// Once shutdown_timeout has expired the idle session is closed and
	// only the busy one is left.
	eventually(t, 5*time.Second, "idle session not closed after shutdown_timeout", func() bool { return srv.Active() == 1 })
	if _, err := idle.Mail("a@b.test", nil); err == nil {
		t.Error("idle session still open after shutdown_timeout")
	}
	close(src.release)
	if r := <-got; r != unknown("slow@example.org") {
		t.Errorf("in-flight Rcpt = %q", r)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want a deadline error", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Shutdown took %s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if n := srv.Active(); n != 0 {
		t.Errorf("Active = %d after Shutdown", n)
	}
}

// packet frames one milter command.
func packet(code byte, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, code), data...)
}

func optneg() []byte {
	d := binary.BigEndian.AppendUint32(nil, 6)
	d = binary.BigEndian.AppendUint32(d, 0x3f)
	d = binary.BigEndian.AppendUint32(d, 0)
	return packet('O', d)
}

func connPacket(host, ip string) []byte {
	d := append([]byte(host), 0, '4', 0, 25)
	return packet('C', append(append(d, ip...), 0))
}

func rcptPacket(addr string) []byte { return packet('R', append([]byte("<"+addr+">"), 0)) }

func openFDs() int {
	es, _ := os.ReadDir("/proc/self/fd")
	return len(es)
}

// TestClientDrop: an MTA that drops its connections anywhere in a session
// leaves no goroutine, descriptor or session behind.
func TestClientDrop(t *testing.T) {
	src := newMapSource()
	src.block["slow@example.org"] = true
	srv, addr := startServer(t, newPolicy(t, src, testConfig(func(c *config.Config) { c.DecisionTimeout = 300 * time.Millisecond }), nil), ServerOptions{MaxSessions: 100}, discard())
	// Warm up, so that lazily started goroutines count in the baseline.
	s := dial(t, "tcp", addr)
	must(t)(s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
	s.Close()
	eventually(t, 5*time.Second, "warm-up session did not end", func() bool { return srv.Active() == 0 })
	g0, fd0 := runtime.NumGoroutine(), openFDs()

	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			var script []byte
			switch i % 6 {
			case 0: // nothing at all
			case 1:
				script = optneg()
			case 2:
				script = append(optneg(), connPacket("h", "192.0.2.1")...)
			case 3: // half a packet
				script = append(optneg(), connPacket("h", "192.0.2.1")[:7]...)
			case 4: // a decision in progress
				script = append(append(optneg(), connPacket("h", "10.0.0.1")...), rcptPacket("slow@example.org")...)
			case 5: // a length announcing more than ever comes
				script = append(optneg(), 0, 0, 1, 0, 'R')
			}
			c.Write(script)
			if i%2 == 0 {
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				c.Read(make([]byte, 64))
			}
		}()
	}
	wg.Wait()
	eventually(t, 10*time.Second, "sessions left open", func() bool { return srv.Active() == 0 })
	eventually(t, 10*time.Second, "goroutines leaked", func() bool { return runtime.NumGoroutine() <= g0+3 })
	eventually(t, 10*time.Second, "descriptors leaked", func() bool { return openFDs() <= fd0+2 })
}

// TestIdleTimeout: a silent MTA connection is closed after
// session_idle_timeout; an active one is not, nor one silent within a
// transaction (the MTA sends nothing while the client sends the message).
func TestIdleTimeout(t *testing.T) {
	var logs logBuffer
	srv, addr := startServer(t, newPolicy(t, newMapSource(), testConfig(), nil), ServerOptions{IdleTimeout: 300 * time.Millisecond}, logs.logger())

	active := dial(t, "tcp", addr)
	must(t)(active.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
	must(t)(active.Mail("a@b.test", nil))
	for range 6 {
		time.Sleep(100 * time.Millisecond)
		if got := must(t)(active.Rcpt("x@example.org", nil)); got != unknown("x@example.org") {
			t.Fatalf("active session: Rcpt = %q", got)
		}
	}

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Timed from before the write: the server closes at least the idle
	// timeout after it, and this goroutine may be descheduled between the
	// write and a clock read after it.
	start := time.Now()
	silent.Write(optneg())
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	for {
		if _, err := silent.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("silent session not closed within 5s")
			}
			break
		}
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %s, before the idle timeout", d)
	}

	if !strings.Contains(logs.String(), "milter session idle, closing") {
		t.Errorf("idle close not logged:\n%s", logs.String())
	}
	// The active session's transaction is still open: the MTA is silent
	// while the client sends the message, for longer than the idle
	// timeout, and the session stays.
	time.Sleep(700 * time.Millisecond)
	_, act, err := active.End()
	if err != nil {
		t.Fatalf("end of a message sent more slowly than the idle timeout: %v", err)
	}
	if act.Code != gomilter.ActContinue {
		t.Errorf("End = %q", testserver.Reply(act))
	}
	// Between transactions the idle timeout applies again.
	eventually(t, 5*time.Second, "idle sessions still counted", func() bool { return srv.Active() == 0 })
}

// TestServerLogFollowsPolicy: after SetPolicy (a reload that may change
// log_level), the server's own lines go to the new policy's logger.
func TestServerLogFollowsPolicy(t *testing.T) {
	var first, reloaded logBuffer
	srv, addr := startServer(t, newPolicy(t, newMapSource(), testConfig(), nil), ServerOptions{IdleTimeout: 100 * time.Millisecond}, first.logger())
	srv.SetPolicy(newPolicy(t, newMapSource(), testConfig(), reloaded.logger()))

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(optneg())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, c) // until the idle close
	eventually(t, 5*time.Second, "idle close not logged by the new policy's logger", func() bool {
		return strings.Contains(reloaded.String(), "milter session idle, closing")
	})
	if strings.Contains(first.String(), "milter session idle, closing") {
		t.Errorf("idle close logged by the first logger:\n%s", first.String())
	}
}

// flakyListener fails its first Accepts with err.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestAcceptErrors: running out of descriptors is retried, not fatal;
// another error ends Serve with it.
func TestAcceptErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	serveOn(t, &flakyListener{Listener: inner, fails: 3, err: emfile}, newPolicy(t, newMapSource(), testConfig(), nil), ServerOptions{}, logs.logger())
	s := dial(t, "tcp", inner.Addr().String())
	if got := must(t)(s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1")); got != "continue" {
		t.Errorf("Conn = %q", got)
	}
	if n := strings.Count(logs.String(), "milter accept failed, retrying"); n != 3 {
		t.Errorf("%d retries logged, want 3", n)
	}

	inner2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(newPolicy(t, newMapSource(), testConfig(), nil), ServerOptions{}, discard())
	err = srv.Serve(&flakyListener{Listener: inner2, fails: 1, err: errors.New("boom")})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Serve = %v, want boom", err)
	}
}

// TestMaxSessionsQueueFull: when as many connections wait as the queue
// holds, the next one is refused at once, and the waiting one gets in.
func TestMaxSessionsQueueFull(t *testing.T) {
	srv, addr := startServer(t, newPolicy(t, newMapSource(), testConfig(), nil),
		ServerOptions{MaxSessions: 1, QueueTimeout: 10 * time.Second}, discard())
	first := dial(t, "tcp", addr)

	waiting := make(chan error, 1)
	go func() {
		s, err := gomilter.NewClientWithOptions("tcp", addr, clientOpts).Session()
		if err == nil {
			s.Close()
		}
		waiting <- err
	}()
	eventually(t, 5*time.Second, "second connection not queued", func() bool { return srv.waiting.Load() == 1 })

	start := time.Now()
	if _, err := gomilter.NewClientWithOptions("tcp", addr, clientOpts).Session(); err == nil {
		t.Fatal("a connection beyond the queue negotiated")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refused after %s, not at once", d)
	}
	first.Close()
	if err := <-waiting; err != nil {
		t.Errorf("queued connection: %v", err)
	}
}
