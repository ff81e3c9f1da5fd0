// Package e2e_test proves antespam-milter with a real Postfix and a real
// Sendmail, driven over SMTP from chosen loopback addresses: the daemon
// built from the tree, a real slapd with the test directory below and a
// real memcached, and each MTA configured with the README's own snippets
// (examples/postfix-main.cf.snippet, examples/sendmail.mc.snippet).
// Accepted mail is relayed to an SMTP sink in the test, so "delivered to
// the accepted recipients only" is checked on the envelope.
package e2e_test

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// Client addresses the cases connect from.
const (
	clientPlain   = "127.0.0.10" // neither listed nor trusted
	clientMalign  = "127.0.0.2"  // listed in ou=hosts
	clientTrusted = "127.0.0.3"  // listed, but in trusted_networks
)

// directory is the test data: who exists and who is listed.
func directory() []testserver.Entry {
	return []testserver.Entry{
		testserver.Person("alice", "alice@example.com"),
		testserver.Person("bob", "bob@example.com"),
		testserver.Person("carol", "carol@example.com"),
		testserver.Person("dave", "dave@example.com"),
		testserver.Person("catchall", "", "@catchall.example"),
		testserver.Host(clientMalign, clientMalign),
		testserver.Host(clientTrusted, clientTrusted),
	}
}

// env is one MTA with its own daemon, slapd, memcached and sink.
type env struct {
	mta       string // "postfix" or "sendmail"
	addr      string // SMTP listener, milter over inet
	addr6     string // SMTP listener on [::1], same milter
	sink      *sink
	slapd     *testserver.Slapd
	memcached *testserver.Memcached
	daemon    *testserver.Daemon
	daemonCfg string
	// mtaLog is the MTA's log so far; nil when it has none (Sendmail
	// logs to syslog only).
	mtaLog func() string
}

var seq atomic.Int64

// id names one message, so the sink can tell which recipients got it.
func id(t *testing.T) string {
	return fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), seq.Add(1))
}

// writeDaemonConfig writes a daemon config listening on listen, reading
// slapd, and returns its path. Every case asserts exact replies, so a
// machine stall must not turn a lookup into a 451: ldap.timeout is 3s,
// decision_timeout 5s above it, and Sendmail's R:10s above that (a stopped
// slapd refuses at once, so "LDAP down" does not wait for either).
func writeDaemonConfig(t *testing.T, dir, name, listen string, slapd *testserver.Slapd, memcached *testserver.Memcached) string {
	t.Helper()
	cfg := fmt.Sprintf(`# e2e daemon config
listen = %q
socket_mode = "0666"
source = "ldap"
trusted_networks = [%q]
decision_timeout = "5s"
shutdown_timeout = "2s"
log_level = "debug"

[recipients]
domains = ["example.com", "catchall.example"]
recipient_delimiter = "+"
catch_all = true

[ldap]
urls = [%q]
base_dn = %q
timeout = "3s"
connections = 1

[memcache]
servers = [%q]
`, listen, clientTrusted, slapd.URL(), testserver.SlapdSuffix, memcached.Addr())
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// setSocketAccess sets socket_mode and socket_group in a config written by
// writeDaemonConfig.
func setSocketAccess(t *testing.T, path, mode, group string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), `socket_mode = "0666"`, fmt.Sprintf("socket_mode = %q\nsocket_group = %q", mode, group), 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snippet reads one of the README's MTA snippets from examples/.
func snippet(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testserver.RepoRoot(t), "examples", name))
	if err != nil {
		t.Fatalf("the README's MTA snippet: %v", err)
	}
	return string(b)
}

func newEnv(t *testing.T, mta string) *env {
	t.Helper()
	e := &env{mta: mta, sink: startSink(t)}
	e.slapd = testserver.StartSlapd(t, testserver.SlapdOptions{Entries: directory()})
	e.memcached = testserver.StartMemcached(t)
	port := testserver.FreePort(t, "127.0.0.1")
	e.daemonCfg = writeDaemonConfig(t, t.TempDir(), "inet.toml", "inet:"+strconv.Itoa(port)+"@127.0.0.1", e.slapd, e.memcached)
	e.daemon = testserver.StartDaemon(t, e.daemonCfg)
	return e
}

// TestPostfix runs every case against Postfix, plus one milter over a unix
// socket.
func TestPostfix(t *testing.T) {
	t.Parallel()
	start := time.Now()
	defer func() { t.Logf("postfix suite wall time: %s", time.Since(start).Round(time.Millisecond)) }()

	e := newEnv(t, "postfix")
	// A second daemon on a unix socket, in a directory Postfix's smtpd
	// (user postfix) can reach.
	sockDir, err := os.MkdirTemp("", "antespam-e2e-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	if err := os.Chmod(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "milter.sock")
	unixCfg := writeDaemonConfig(t, t.TempDir(), "unix.toml", "unix:"+sock, e.slapd, e.memcached)
	// As the README says: the socket's group is postfix, not world access.
	setSocketAccess(t, unixCfg, "0660", "postfix")
	testserver.StartDaemon(t, unixCfg)

	_, inetAddr, _ := testserver.DialSpec(readListen(t, e.daemonCfg))
	pf := testserver.StartPostfix(t, testserver.PostfixOptions{
		Snippet:   snippet(t, "postfix-main.cf.snippet"),
		Milters:   []string{"inet:" + inetAddr, "unix:" + sock},
		RelayHost: e.sink.Addr(),
		IPv6:      true,
	})
	e.addr, e.addr6, e.mtaLog = pf.Listeners[0], pf.Listeners6[0], pf.Log
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix main.cf:\n%s", pf.MainCF)
		}
	})

	runCases(t, e, replies{
		greeting:      "220 mx.test.example ESMTP",
		refused:       "554 5.7.1 Connection refused: client host is listed",
		rejectConnect: "554 mx.test.example ESMTP not accepting connections",
		rcptOK:        func(string) string { return "250 2.1.5 Ok" },
		rcptPrefix:    func(string) string { return "" },
		tempfail:      func(a string) string { return "451 4.3.0 <" + a + ">: Temporary lookup failure" },
		// Postfix logs the milter's reply.
		connectLog: regexp.MustCompile(`milter-reject: CONNECT from \S*\[` + regexp.QuoteMeta(clientMalign) + `\]: ` +
			regexp.QuoteMeta("554 5.7.1 Connection refused: client host is listed")),
		milterDown: "451 4.7.1 Service unavailable - try again later",
		dataOK:     "250 2.0.0 Ok: queued as ",
	})

	t.Run("unix socket", func(t *testing.T) {
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		g, err := user.LookupGroup("postfix")
		if err != nil {
			t.Fatal(err)
		}
		if gid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)); fi.Mode().Perm() != 0o660 || gid != g.Gid {
			t.Errorf("socket %s: mode %v gid %s, want 0660 and group postfix (%s)", sock, fi.Mode().Perm(), gid, g.Gid)
		}
		c := dialSMTP(t, pf.Listeners[1], clientPlain)
		c.expectPrefix("250", "EHLO client.test")
		c.expectPrefix("250 2.1.0", "MAIL FROM:<sender@sender.example>")
		c.expect("250 2.1.5 Ok", "RCPT TO:<alice@example.com>")
		c.expect("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown", "RCPT TO:<nobody@example.com>")
		id := c.send(t, "250 2.0.0")
		c.quit()
		checkDelivered(t, e, id, "alice@example.com")
	})
}

// TestSendmail runs every case against Sendmail.
func TestSendmail(t *testing.T) {
	t.Parallel()
	start := time.Now()
	defer func() { t.Logf("sendmail suite wall time: %s", time.Since(start).Round(time.Millisecond)) }()

	e := newEnv(t, "sendmail")
	listen := readListen(t, e.daemonCfg)
	sm := testserver.StartSendmail(t, testserver.SendmailOptions{
		Snippet:   snippet(t, "sendmail.mc.snippet"),
		Milter:    listen,
		RelayHost: e.sink.Addr(),
		IPv6:      true,
	})
	e.addr, e.addr6, e.mtaLog = sm.Addr, sm.Addr6, sm.Log
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sendmail.mc:\n%s\nsendmail output:\n%s\nsendmail log:\n%s", sm.MC, sm.Output(), sm.Log())
		}
	})

	prefix := func(addr string) string { return "<" + addr + ">... " }
	runCases(t, e, replies{
		greeting:      "220 mx.test.example ESMTP Sendmail",
		refused:       "554 5.7.1 Connection refused: client host is listed",
		rejectConnect: "554 mx.test.example ESMTP not accepting messages",
		rcptOK:        func(a string) string { return "250 2.1.5 <" + a + ">... Recipient ok" },
		rcptPrefix:    prefix,
		// Sendmail prefixes "<addr>... " to 5xx replies only.
		tempfail: func(a string) string { return "451 4.3.0 <" + a + ">: Temporary lookup failure" },
		// Sendmail does not log the milter's text for a connect reject.
		connectLog: regexp.MustCompile(`Milter: connect: host=\S*\[` + regexp.QuoteMeta(clientMalign) + `\], addr=` +
			regexp.QuoteMeta(clientMalign) + `, rejecting commands`),
		milterDown: "451 4.3.2 Please try again later",
		dataOK:     "250 2.0.0 ",
	})
}

// readListen returns the listen spec of a daemon config written by
// writeDaemonConfig.
func readListen(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^listen = "([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no listen in %s", path)
	}
	return string(m[1])
}

// replies are what one MTA says where the two differ.
type replies struct {
	greeting      string // prefix of the 220 greeting
	refused       string // the daemon's reply to a listed host (in logs only)
	rejectConnect string // what the client sees when the milter refuses it
	rcptOK        func(addr string) string
	rcptPrefix    func(addr string) string // before the milter's text
	tempfail      func(addr string) string // our 451 at RCPT
	connectLog    *regexp.Regexp           // the MTA's log line for clientMalign
	milterDown    string                   // reply to MAIL with the daemon down
	dataOK        string                   // prefix of the reply to the final dot
}

func (r replies) unknown(addr string) string {
	return "550 5.1.1 " + r.rcptPrefix(addr) + "<" + addr + ">: Recipient address rejected: User unknown"
}

// session opens an SMTP session from src up to MAIL FROM.
func session(t *testing.T, addr, src string, r replies) *smtpClient {
	t.Helper()
	c := dialSMTP(t, addr, src)
	if !strings.HasPrefix(c.Greeting, r.greeting) {
		t.Fatalf("greeting from %s: got %q, want %q...", src, c.Greeting, r.greeting)
	}
	c.expectPrefix("250", "EHLO client.test")
	c.expectPrefix("250 2.1.0", "MAIL FROM:<sender@sender.example>")
	return c
}

func checkDelivered(t *testing.T, e *env, id string, want ...string) {
	t.Helper()
	e.sink.waitDelivered(id, len(want), 60*time.Second)
	// Anything unexpected arrives with the accepted ones: wait a little.
	time.Sleep(300 * time.Millisecond)
	got := e.sink.waitDelivered(id, len(want), 0)
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("message %s delivered to %q, want %q", id, got, want)
	}
}

func runCases(t *testing.T, e *env, r replies) {
	t.Run("known recipient delivered", func(t *testing.T) {
		c := session(t, e.addr, clientPlain, r)
		c.expect(r.rcptOK("alice@example.com"), "RCPT TO:<alice@example.com>")
		id := c.send(t, r.dataOK)
		c.quit()
		checkDelivered(t, e, id, "alice@example.com")
	})

	t.Run("unknown recipient", func(t *testing.T) {
		c := session(t, e.addr, clientPlain, r)
		c.expect(r.unknown("nobody@example.com"), "RCPT TO:<nobody@example.com>")
		c.quit()
	})

	t.Run("mixed recipients", func(t *testing.T) {
		c := session(t, e.addr, clientPlain, r)
		for _, rc := range []struct{ addr, want string }{
			{"bob@example.com", r.rcptOK("bob@example.com")},
			{"nobody@example.com", r.unknown("nobody@example.com")},
			{"carol+lists@example.com", r.rcptOK("carol+lists@example.com")},
			{"nobody+lists@example.com", r.unknown("nobody+lists@example.com")},
			{"anyone@catchall.example", r.rcptOK("anyone@catchall.example")},
			{"someone@other.example", r.rcptOK("someone@other.example")},
			{"Dave@Example.COM", r.rcptOK("Dave@Example.COM")},
		} {
			c.expect(rc.want, "RCPT TO:<%s>", rc.addr)
		}
		id := c.send(t, r.dataOK)
		c.quit()
		checkDelivered(t, e, id, "bob@example.com", "carol+lists@example.com",
			"anyone@catchall.example", "someone@other.example", "Dave@Example.COM")
	})

	t.Run("IPv6 client", func(t *testing.T) {
		c := session(t, e.addr6, "::1", r)
		c.expect(r.rcptOK("alice@example.com"), "RCPT TO:<alice@example.com>")
		c.expect(r.unknown("nobody@example.com"), "RCPT TO:<nobody@example.com>")
		c.quit()
	})

	t.Run("malign client refused at connect", func(t *testing.T) {
		c := dialSMTP(t, e.addr, clientMalign)
		if !strings.HasPrefix(c.Greeting, r.rejectConnect) {
			t.Errorf("greeting: got %q, want %q", c.Greeting, r.rejectConnect)
		}
		// The client may still talk; nothing gets through.
		if got := c.cmd("MAIL FROM:<sender@sender.example>"); !strings.HasPrefix(got, "5") && got != "" {
			t.Errorf("MAIL after a refused connect: %q", got)
		}
		c.quit()
		// The reason is in the daemon's log, and in Postfix's.
		if !testserver.Eventually(20*time.Second, func() bool {
			return hasLine(e.daemon.Output(), "stage=connect", "verdict=reject", "client_addr="+clientMalign, r.refused)
		}) {
			t.Errorf("the daemon's log has no connect reject of %s with %q:\n%s", clientMalign, r.refused, e.daemon.Output())
		}
		if e.mtaLog != nil {
			re := r.connectLog
			if !testserver.Eventually(20*time.Second, func() bool { return re.MatchString(e.mtaLog()) }) {
				t.Errorf("the %s log has no line matching %s", e.mta, re)
			}
		}
	})

	t.Run("trusted client not refused", func(t *testing.T) {
		// It is listed: without trusted_networks it would be refused.
		b, err := os.ReadFile(e.daemonCfg)
		if err != nil {
			t.Fatal(err)
		}
		untrusted := filepath.Join(t.TempDir(), "untrusted.toml")
		cfg := regexp.MustCompile(`(?m)^trusted_networks = .*$`).ReplaceAllString(string(b), "trusted_networks = []")
		if err := os.WriteFile(untrusted, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, errOut, code := testserver.RunDaemonCommand(t, "check", "-config", untrusted, "-no-cache", "host", clientTrusted); code != 1 {
			t.Errorf("check host %s without trusted_networks: exit %d, want 1 (listed)\n%s%s", clientTrusted, code, out, errOut)
		}

		c := session(t, e.addr, clientTrusted, r)
		c.expect(r.rcptOK("alice@example.com"), "RCPT TO:<alice@example.com>")
		c.expect(r.unknown("nobody@example.com"), "RCPT TO:<nobody@example.com>")
		id := c.send(t, r.dataOK)
		c.quit()
		checkDelivered(t, e, id, "alice@example.com")
	})

	// The cases below change the daemon or the directory: in order.
	t.Run("SIGHUP during a session", func(t *testing.T) {
		c := session(t, e.addr, clientPlain, r)
		c.expect(r.rcptOK("alice@example.com"), "RCPT TO:<alice@example.com>")
		reloads := strings.Count(e.daemon.Output(), "config reloaded")
		if err := e.daemon.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !testserver.Eventually(30*time.Second, func() bool { return strings.Count(e.daemon.Output(), "config reloaded") > reloads }) {
			t.Fatalf("no \"config reloaded\" in the daemon's log after SIGHUP:\n%s", e.daemon.Output())
		}
		if e.daemon.Exited() {
			t.Fatalf("the daemon exited on SIGHUP:\n%s", e.daemon.Output())
		}
		c.expect(r.unknown("nobody@example.com"), "RCPT TO:<nobody@example.com>")
		c.expect(r.rcptOK("bob@example.com"), "RCPT TO:<bob@example.com>")
		id := c.send(t, r.dataOK)
		c.quit()
		checkDelivered(t, e, id, "alice@example.com", "bob@example.com")
		// And a new session after the reload.
		c = session(t, e.addr, clientPlain, r)
		c.expect(r.rcptOK("carol@example.com"), "RCPT TO:<carol@example.com>")
		c.quit()
	})

	t.Run("LDAP down", func(t *testing.T) {
		// alice is in the cache from the cases above.
		c := session(t, e.addr, clientPlain, r)
		c.expect(r.rcptOK("alice@example.com"), "RCPT TO:<alice@example.com>")
		c.quit()
		e.slapd.Stop()
		c = session(t, e.addr, clientPlain, r)
		c.expect(r.rcptOK("alice@example.com"), "RCPT TO:<alice@example.com>")
		for _, a := range []string{"ghost@example.com", "newbie+x@example.com"} {
			got := c.cmd("RCPT TO:<%s>", a)
			if want := r.tempfail(a); got != want {
				t.Errorf("RCPT TO:<%s> with LDAP down: got %q, want %q", a, got, want)
			}
		}
		id := c.send(t, r.dataOK)
		c.quit()
		checkDelivered(t, e, id, "alice@example.com")

		e.slapd.Start()
		// The daemon reconnects: the unknown one is unknown again.
		if !testserver.Eventually(40*time.Second, func() bool {
			c := session(t, e.addr, clientPlain, r)
			defer c.quit()
			return c.cmd("RCPT TO:<ghost@example.com>") == r.unknown("ghost@example.com")
		}) {
			t.Errorf("ghost@example.com not rejected within 40s of slapd's restart")
		}
	})

	t.Run("daemon down", func(t *testing.T) {
		e.daemon.Stop()
		c := dialSMTP(t, e.addr, clientPlain)
		c.expectPrefix("250", "EHLO client.test")
		c.expect(r.milterDown, "MAIL FROM:<sender@sender.example>")
		c.quit()

		e.daemon = testserver.StartDaemon(t, e.daemonCfg)
		c = session(t, e.addr, clientPlain, r)
		c.expect(r.rcptOK("alice@example.com"), "RCPT TO:<alice@example.com>")
		c.expect(r.unknown("nobody@example.com"), "RCPT TO:<nobody@example.com>")
		id := c.send(t, r.dataOK)
		c.quit()
		checkDelivered(t, e, id, "alice@example.com")
	})
}

// hasLine reports whether one line of log holds every one of parts.
func hasLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}
