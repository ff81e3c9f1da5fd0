package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

func TestVersion(t *testing.T) {
	out, _, code := runBin(t, "version")
	if want := "antespam-milter " + testserver.DaemonVersion + "\n"; out != want || code != 0 {
		t.Errorf("version = %q, exit %d; want %q, exit 0", out, code, want)
	}
}

func TestUsageErrors(t *testing.T) {
	f := newFixture(t, "")
	for _, args := range [][]string{
		{"frobnicate"},
		{"version", "extra"},
		{"check", "-config", f.config},
		{"check", "-config", f.config, "rcpt"},
		{"check", "-config", f.config, "host"},
		{"check", "-config", f.config, "host", "192.0.2.1", "a.example", "extra"},
		{"check", "-config", f.config, "mx", "a@example.com"},
		{"check", "-config", f.config, "host", "mx.example.com"},
		{"cache", "purge", "-config", f.config, "host", "999.1.1.1"},
		{"check", "-bogus", "rcpt", "a@example.com"},
		{"cache"},
		{"cache", "flush"},
		{"config-test", "-config", f.config, "extra"},
		{"serve", "-config", f.config, "extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, stderr, code := runBin(t, args...)
			if code != 2 || !strings.Contains(stderr, "usage:") {
				t.Errorf("exit %d, stderr %q; want exit 2 and the usage", code, stderr)
			}
		})
	}
}

func TestConfigTest(t *testing.T) {
	f := newFixture(t, "")
	out, stderr, code := runBin(t, "config-test", "-config", f.config)
	if code != 0 || !strings.Contains(out, "config OK") {
		t.Fatalf("good config: exit %d, stdout %q, stderr %q", code, out, stderr)
	}

	bad := filepath.Join(t.TempDir(), "bad.toml")
	writeFile(t, bad, `listen = "tcp:25"
mode = "loud"
[recipients]
reject_reply = "450 4.1.1 no"
bogus = 1
[cache]
ttl = "-1s"
`)
	out, stderr, code = runBin(t, "config-test", "-config", bad)
	if code != 2 || strings.Contains(out, "config OK") {
		t.Fatalf("bad config: exit %d, stdout %q; want exit 2", code, out)
	}
	for _, want := range []string{
		bad + ":1: listen: ",
		bad + ":2: mode: ",
		bad + ":4: recipients.reject_reply: ",
		bad + ":5: recipients.bogus: unknown key",
		bad + ":7: cache.ttl: ",
	} {
		if !strings.Contains(stderr, "\n"+want) && !strings.HasPrefix(stderr, want) {
			t.Errorf("missing line starting %q in:\n%s", want, stderr)
		}
	}

	// A world-readable bind password file is a warning, not an error.
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, "secret\n")
	if err := os.Chmod(pw, 0o644); err != nil {
		t.Fatal(err)
	}
	ldap := filepath.Join(t.TempDir(), "ldap.toml")
	writeFile(t, ldap, fmt.Sprintf(`source = "ldap"
[ldap]
urls = ["ldap://127.0.0.1:1"]
base_dn = "dc=example,dc=com"
bind_dn = "cn=milter,dc=example,dc=com"
bind_password_file = %q
`, pw))
	out, stderr, code = runBin(t, "config-test", "-config", ldap)
	if code != 0 || !strings.Contains(out, "config OK") || !strings.Contains(stderr, "world-readable") {
		t.Errorf("world-readable password: exit %d, stdout %q, stderr %q; want exit 0 and a warning", code, out, stderr)
	}
	if strings.Contains(out+stderr, "secret") {
		t.Errorf("the password appears in the output: %q %q", out, stderr)
	}

	// A missing file is a config error too.
	_, stderr, code = runBin(t, "config-test", "-config", filepath.Join(t.TempDir(), "none.toml"))
	if code != 2 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing config: exit %d, stderr %q", code, stderr)
	}
}

func TestCheckFileSource(t *testing.T) {
	f := newFixture(t, "")
	tests := []struct {
		args           []string
		verdict, reply string
		tier, item     string
	}{
		{[]string{"rcpt", "alice@example.com"}, "accept", "-", "file", "alice@example.com"},
		{[]string{"rcpt", "<Alice+news@EXAMPLE.COM>"}, "accept", "-", "file", "alice+news@example.com"},
		{[]string{"rcpt", "carol@example.com"}, "accept", "-", "file", "carol@example.com"},
		{[]string{"rcpt", "anyone@catchall.example"}, "accept", "-", "file", "anyone@catchall.example"},
		{[]string{"rcpt", "postmaster@example.com"}, "accept", "-", "always", "postmaster@example.com"},
		{[]string{"rcpt", "who@elsewhere.org"}, "accept", "-", "not-ours", "who@elsewhere.org"},
		{[]string{"rcpt", "bob@example.com"}, "reject", "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown", "file", "bob@example.com"},
		{[]string{"host", "192.0.2.9"}, "reject", "554 5.7.1 Connection refused: client host is listed", "file", "192.0.2.9"},
		{[]string{"host", "198.51.100.7", "mail.example.org"}, "reject", "554 5.7.1 Connection refused: client host is listed", "file", "198.51.100.7 mail.example.org"},
		{[]string{"host", "203.0.113.5", "mx1.bad.example.net"}, "reject", "554 5.7.1 Connection refused: client host is listed", "file", "203.0.113.5 mx1.bad.example.net"},
		{[]string{"host", "203.0.113.5", "mx1.good.example.net"}, "accept", "-", "file", "203.0.113.5 mx1.good.example.net"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, stderr, code := runBin(t, append([]string{"check", "-config", f.config}, tt.args...)...)
			fields := strings.Split(strings.TrimSuffix(out, "\n"), "\t")
			if len(fields) != 5 {
				t.Fatalf("output %q (stderr %q): want 5 tab-separated fields", out, stderr)
			}
			got := [4]string{fields[0], fields[1], fields[2], fields[3]}
			if want := [4]string{tt.verdict, tt.item, tt.reply, tt.tier}; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			wantCode := 0
			if tt.verdict == "reject" {
				wantCode = 1
			}
			if code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
		})
	}

	// Several items: one line each, exit 1 as one is rejected; -json.
	out, _, code := runBin(t, "check", "-config", f.config, "-json", "-no-cache", "rcpt", "alice@example.com", "bob@example.com")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || len(lines) != 2 {
		t.Fatalf("-json: exit %d, output %q; want exit 1 and 2 lines", code, out)
	}
	var r struct {
		Item       string   `json:"item"`
		Verdict    string   `json:"verdict"`
		Reply      string   `json:"reply"`
		Tier       string   `json:"tier"`
		Stale      *bool    `json:"stale"`
		DurationMS *float64 `json:"duration_ms"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &r); err != nil {
		t.Fatalf("-json line %q: %v", lines[1], err)
	}
	if r.Item != "bob@example.com" || r.Verdict != "reject" || !strings.HasPrefix(r.Reply, "550 5.1.1 ") ||
		r.Tier != "file" || r.Stale == nil || *r.Stale || r.DurationMS == nil {
		t.Errorf("-json: got %+v from %q", r, lines[1])
	}
}

// TestCheckExampleConfig: the config make run uses works as shipped
// (paths relative to the repository root, where make runs).
func TestCheckExampleConfig(t *testing.T) {
	const cfg = "examples/antespam-milter.toml"
	if out, stderr, code := runBin(t, "config-test", "-config", cfg); code != 0 {
		t.Fatalf("config-test %s: exit %d, %q %q", cfg, code, out, stderr)
	}
	out, stderr, code := runBin(t, "check", "-config", cfg, "rcpt", "alice@example.com", "alice+news@example.com", "nobody@example.com")
	want := []string{"accept\talice@example.com\t-\tfile\t", "accept\talice+news@example.com\t-\tfile\t",
		"reject\tnobody@example.com\t550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown\tfile\t"}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || len(lines) != len(want) {
		t.Fatalf("check: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %q, want prefix %q", lines[i], w)
		}
	}
	if out, _, code := runBin(t, "check", "-config", cfg, "host", "192.0.2.1", "mx.bad.example"); code != 1 || !strings.HasPrefix(out, "reject\t") {
		t.Errorf("listed host: exit %d, %q", code, out)
	}
}

// TestCheckTempfail: a directory that cannot be reached tempfails a
// recipient (exit 3) and, by default, accepts a host.
func TestCheckTempfail(t *testing.T) {
	port := testserver.FreePort(t, "127.0.0.1") // nothing listens there
	cfg := filepath.Join(t.TempDir(), "ldap.toml")
	writeFile(t, cfg, fmt.Sprintf(`source = "ldap"
decision_timeout = "2s"
[ldap]
urls = ["ldap://127.0.0.1:%d"]
base_dn = "dc=example,dc=com"
timeout = "300ms"
`, port))
	out, stderr, code := runBin(t, "check", "-config", cfg, "rcpt", "alice@example.com", "postmaster@example.com")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 3 || len(lines) != 2 {
		t.Fatalf("exit %d, output %q, stderr %q; want exit 3, 2 lines", code, out, stderr)
	}
	if want := "tempfail\talice@example.com\t451 4.3.0 <alice@example.com>: Temporary lookup failure\terror\t"; !strings.HasPrefix(lines[0], want) {
		t.Errorf("line %q, want prefix %q", lines[0], want)
	}
	if !strings.HasPrefix(lines[1], "accept\tpostmaster@example.com\t-\talways\t") {
		t.Errorf("postmaster line %q", lines[1])
	}
	out, _, code = runBin(t, "check", "-config", cfg, "host", "192.0.2.1")
	if code != 0 || !strings.HasPrefix(out, "accept\t192.0.2.1\t-\terror\t") {
		t.Errorf("host with hosts.on_lookup_error = accept: exit %d, %q", code, out)
	}
}

func TestPurgeWithoutMemcache(t *testing.T) {
	f := newFixture(t, "")
	_, stderr, code := runBin(t, "cache", "purge", "-config", f.config, "rcpt", "bob@example.com")
	if code != 2 || !strings.Contains(stderr, "memcache.servers") {
		t.Errorf("exit %d, stderr %q; want exit 2 naming memcache.servers", code, stderr)
	}
}

// TestCheckAndPurgeMemcache: a not-found answer is shared through
// memcached until purged.
func TestCheckAndPurgeMemcache(t *testing.T) {
	mc := testserver.StartMemcached(t)
	// memcache.timeout is 100ms by default: a loaded machine can turn a
	// hit into a miss, which is right for a daemon but not what this
	// test is about.
	f := newFixture(t, fmt.Sprintf("[memcache]\nservers = [%q]\ntimeout = \"5s\"\n", mc.Addr()))
	checkTier := func(want string) {
		t.Helper()
		out, stderr, _ := runBin(t, "check", "-config", f.config, "rcpt", "Bob@Example.com")
		if fields := strings.Split(out, "\t"); len(fields) != 5 || fields[3] != want {
			t.Fatalf("check: %q (stderr %q), want tier %s", out, stderr, want)
		}
	}
	checkTier("file")
	checkTier("memcache")
	out, stderr, code := runBin(t, "cache", "purge", "-config", f.config, "rcpt", "bob@EXAMPLE.com", "postmaster@example.com")
	if code != 0 || !regexp.MustCompile(`(?m)^purged\tbob@example.com\tantespam:\S*:rcpt:\S*bob@example.com$`).MatchString(out) ||
		!strings.Contains(out, "skipped\tpostmaster@example.com") || !strings.Contains(out, "SIGHUP") {
		t.Fatalf("purge: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	checkTier("file")
	out, _, code = runBin(t, "cache", "purge", "-config", f.config, "host", "192.0.2.1", "Mx.Example.NET")
	if code != 0 || !strings.Contains(out, "purged\t192.0.2.1 mx.example.net\t") {
		t.Errorf("purge host: exit %d, %q", code, out)
	}
}

// TestPurgeWithoutDirectory: cache purge needs only memcached: with the
// LDAP URLs on a closed port and on a server that never answers, and a
// bind configured, it purges without dialling the directory and exits 0.
func TestPurgeWithoutDirectory(t *testing.T) {
	mc := testserver.StartMemcached(t)
	closed := testserver.FreePort(t, "127.0.0.1")
	hole, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hole.Close() })
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, "secret\n")
	cfg := filepath.Join(t.TempDir(), "ldap.toml")
	writeFile(t, cfg, fmt.Sprintf(`source = "ldap"
decision_timeout = "10s"
[memcache]
servers = [%q]
timeout = "5s"
[ldap]
urls = ["ldap://%s", "ldap://127.0.0.1:%d"]
base_dn = "dc=example,dc=com"
bind_dn = "cn=admin,dc=example,dc=com"
bind_password_file = %q
timeout = "5s"
`, mc.Addr(), hole.Addr(), closed, pw))
	start := time.Now()
	out, stderr, code := runBin(t, "cache", "purge", "-config", cfg, "rcpt", "bob@example.com")
	if code != 0 || !strings.HasPrefix(out, "purged\tbob@example.com\t") {
		t.Errorf("purge: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	t.Logf("purge took %s", time.Since(start).Round(time.Millisecond))
	if out, stderr, code := runBin(t, "cache", "purge", "-config", cfg, "host", "192.0.2.1"); code != 0 || !strings.HasPrefix(out, "purged\t192.0.2.1\t") {
		t.Errorf("purge host: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// Not even dialled: a connection the purges made would wait in the
	// black hole's accept queue. (Not a time limit: a loaded machine can
	// make a purge slow; waiting for the directory is what is wrong.)
	hole.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := hole.Accept(); err == nil {
		c.Close()
		t.Error("cache purge dialled the directory")
	}
}

// TestCheckUnreadableList: a list that cannot be read is a config error
// (exit 2), not a verdict.
func TestCheckUnreadableList(t *testing.T) {
	f := newFixture(t, "")
	if err := os.Remove(f.rcpts); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runBin(t, "check", "-config", f.config, "rcpt", "alice@example.com")
	if code != 2 || !strings.Contains(stderr, f.rcpts) {
		t.Errorf("exit %d, stderr %q; want exit 2 naming %s", code, stderr, f.rcpts)
	}
}
