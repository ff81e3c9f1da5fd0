package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/internal/testserver"
)

const defaultReject = "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown"

func TestServeInvalidConfigExits2(t *testing.T) {
	f := newFixture(t, "mode = \"loud\"")
	d := testserver.StartDaemonWith(t, f.config, testserver.DaemonOptions{NoWait: true})
	if !d.Wait(10 * time.Second) {
		t.Fatal("daemon still running on an invalid config")
	}
	if d.ExitCode() != 2 || !strings.Contains(d.Output(), "key=mode") {
		t.Errorf("exit %d, output:\n%s\nwant exit 2 and the error with its key", d.ExitCode(), d.Output())
	}
}

// TestServeReload: SIGHUP with a valid config swaps it in; with an invalid
// one the daemon logs every error with key and line and keeps the old.
func TestServeReload(t *testing.T) {
	f := newFixture(t, "")
	f.metrics = fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t, "127.0.0.1"))
	f.write(t, "")
	notify := listenNotify(t)
	d := testserver.StartDaemonWith(t, f.config, testserver.DaemonOptions{Env: []string{"NOTIFY_SOCKET=" + notify.path}})
	notify.expect(t, "READY=1")

	if got := rcpt(t, d, "bob@example.com"); got != defaultReject {
		t.Fatalf("before reload: %q, want %q", got, defaultReject)
	}
	if got := rcpt(t, d, "dave@example.com"); got != "550 5.1.1 <dave@example.com>: Recipient address rejected: User unknown" {
		t.Fatalf("before reload: %q", got)
	}
	if body, code := get(t, "http://"+f.metrics+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}

	// A valid change: another reply text and dave in always_accept.
	f.write(t, `[recipients]
domains = ["example.com", "catchall.example"]
recipient_delimiter = "+"
catch_all = true
always_accept = ["postmaster", "dave"]
reject_reply = "550 5.1.1 <{rcpt}>: no such user here"
`)
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	if !d.WaitOutput("config reloaded", 10*time.Second) {
		t.Fatalf("no reload logged:\n%s", d.Output())
	}
	if got := rcpt(t, d, "bob@example.com"); got != "550 5.1.1 <bob@example.com>: no such user here" {
		t.Errorf("after reload: %q", got)
	}
	if got := rcpt(t, d, "dave@example.com"); got != "continue" {
		t.Errorf("after reload, always_accept dave: %q", got)
	}

	// An invalid config: logged with key and line, the old one stays.
	writeFile(t, f.config, fmt.Sprintf("listen = %q\nsource = \"file\"\nmode = \"loud\"\n[cache]\nttl = \"-1s\"\n", f.listen))
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	if !d.WaitOutput("invalid config, keeping the old one", 10*time.Second) {
		t.Fatalf("no error logged:\n%s", d.Output())
	}
	out := d.Output()
	if !strings.Contains(out, "line=3 key=mode") {
		t.Errorf("the error does not name key and line:\n%s", out)
	}
	if got := rcpt(t, d, "bob@example.com"); got != "550 5.1.1 <bob@example.com>: no such user here" {
		t.Errorf("after a bad reload: %q, want the previous config's reply", got)
	}
	body, _ := get(t, "http://"+f.metrics+"/metrics")
	for _, want := range []string{
		`antespam_config_reloads_total{result="error"} 1`,
		`antespam_config_reloads_total{result="ok"} 1`,
		`antespam_decisions_total{stage="rcpt",verdict="reject"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// /healthz follows the directory: the file source's lists.
	if err := os.Rename(f.hosts, f.hosts+".away"); err != nil {
		t.Fatal(err)
	}
	if body, code := get(t, "http://"+f.metrics+"/healthz"); code != 503 || !strings.Contains(body, "hosts") {
		t.Errorf("/healthz without the hosts list = %d %q, want 503 naming it", code, body)
	}

	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "STOPPING=1")
	if !d.Wait(10*time.Second) || d.ExitCode() != 0 {
		t.Errorf("after SIGTERM: exited %v, status %d", d.Exited(), d.ExitCode())
	}
}

// TestServeSIGTERMUnderLoad: sessions in the middle of a transaction when
// SIGTERM arrives each get their answers; then the daemon exits 0 within
// shutdown_timeout and removes its unix socket.
func TestServeSIGTERMUnderLoad(t *testing.T) {
	f := newFixture(t, "")
	sock := filepath.Join(f.dir, "milter.sock")
	f.listen = "unix:" + sock
	f.write(t, `log_format = "json"`)
	d := testserver.StartDaemon(t, f.config)

	const n = 40
	var (
		ready, term sync.WaitGroup
		mu          sync.Mutex
		failures    []string
	)
	sigSent := make(chan struct{})
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	ready.Add(n)
	term.Add(n)
	for i := range n {
		go func() {
			defer term.Done()
			c := d.MilterClient(20*time.Second, nil)
			s, err := c.Session()
			if err != nil {
				ready.Done()
				fail("session %d: %v", i, err)
				return
			}
			defer s.Close()
			_, err = s.Conn("client.test", gomilter.FamilyInet, 25, "127.0.0.1")
			if err == nil {
				_, err = s.Mail("<s@example.org>", nil)
			}
			ready.Done()
			if err != nil {
				fail("session %d: %v", i, err)
				return
			}
			<-sigSent
			for _, r := range []struct{ addr, want string }{
				{"alice@example.com", "continue"},
				{fmt.Sprintf("nobody%d@example.com", i), fmt.Sprintf("550 5.1.1 <nobody%d@example.com>: Recipient address rejected: User unknown", i)},
			} {
				a, err := s.Rcpt("<"+r.addr+">", nil)
				if err != nil {
					fail("session %d rcpt %s after SIGTERM: %v", i, r.addr, err)
					return
				}
				if got := testserver.Reply(a); got != r.want {
					fail("session %d rcpt %s: %q, want %q", i, r.addr, got, r.want)
				}
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Stopped accepting: the socket goes away while sessions go on.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unix socket still there 5s after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d.Exited() {
		t.Fatal("daemon exited with sessions still open")
	}
	close(sigSent)
	term.Wait()
	if !d.Wait(10 * time.Second) {
		t.Fatal("daemon still running 10s after its sessions ended")
	}
	if took := time.Since(start); took > 5*time.Second+2*time.Second {
		t.Errorf("exit took %s, shutdown_timeout is 5s", took)
	}
	if d.ExitCode() != 0 {
		t.Errorf("exit status %d, want 0", d.ExitCode())
	}
	for _, f := range failures {
		t.Error(f)
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("the socket still accepts connections")
	}

	// log_format = "json": every line is a JSON object; one per decision.
	decisions := 0
	for _, line := range strings.Split(strings.TrimSpace(d.Output()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if m["msg"] == "decision" && m["stage"] == "rcpt" {
			decisions++
		}
	}
	if decisions != 2*n {
		t.Errorf("%d rcpt decisions logged, want %d", decisions, 2*n)
	}
}

func get(t *testing.T, url string) (string, int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// notifySocket stands in for systemd's NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "n.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{path: p, conn: c}
}

// expect reads the next datagram and checks it starts with state.
func (n *notifySocket) expect(t *testing.T, state string) {
	t.Helper()
	buf := make([]byte, 4096)
	n.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	k, err := n.conn.Read(buf)
	if err != nil {
		t.Fatalf("waiting for %s: %v", state, err)
	}
	if got := string(buf[:k]); !strings.HasPrefix(got, state) {
		t.Fatalf("sd_notify %q, want %s", got, state)
	}
}
