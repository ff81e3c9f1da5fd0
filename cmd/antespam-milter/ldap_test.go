package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// TestCheckLDAPMemcache: check against slapd and memcached, through the
// stack the daemon builds: answers come from ldap, then from memcached;
// with slapd stopped, a found answer past its memcached TTL is served
// stale and a not-found one tempfails.
func TestCheckLDAPMemcache(t *testing.T) {
	slapd := testserver.StartSlapd(t, testserver.SlapdOptions{Entries: []testserver.Entry{
		testserver.Person("alice", "alice@example.com"),
		testserver.Host("192.0.2.0/24"),
	}})
	mc := testserver.StartMemcached(t)
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, slapd.RootPassword()+"\n")
	cfg := filepath.Join(t.TempDir(), "ldap.toml")
	writeFile(t, cfg, fmt.Sprintf(`source = "ldap"
[recipients]
domains = ["example.com"]
[memcache]
servers = [%q]
ttl = "1s"
negative_ttl = "1s"
[ldap]
urls = [%q]
base_dn = %q
bind_dn = %q
bind_password_file = %q
timeout = "500ms"
`, mc.Addr(), slapd.URL(), testserver.SlapdSuffix, testserver.SlapdRootDN, pw))

	lines := func(wantCode int, args ...string) []string {
		t.Helper()
		out, stderr, code := runBin(t, append([]string{"check", "-config", cfg}, args...)...)
		if code != wantCode {
			t.Fatalf("check %v: exit %d, want %d; stdout %q, stderr %q", args, code, wantCode, out, stderr)
		}
		return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	}
	tier := func(line string) string {
		if f := strings.Split(line, "\t"); len(f) == 5 {
			return f[0] + " " + f[3]
		}
		return "malformed: " + line
	}

	got := lines(1, "rcpt", "alice@example.com", "bob@example.com")
	if tier(got[0]) != "accept ldap" || tier(got[1]) != "reject ldap" {
		t.Errorf("first check: %q", got)
	}
	got = lines(1, "rcpt", "alice@example.com", "bob@example.com")
	if tier(got[0]) != "accept memcache" || tier(got[1]) != "reject memcache" {
		t.Errorf("second check: %q", got)
	}
	got = lines(0, "-no-cache", "rcpt", "alice@example.com")
	if tier(got[0]) != "accept ldap" {
		t.Errorf("-no-cache: %q", got)
	}
	if got = lines(1, "host", "192.0.2.44", "mx.example.org"); tier(got[0]) != "reject ldap" {
		t.Errorf("host: %q", got)
	}

	slapd.Stop()
	time.Sleep(1100 * time.Millisecond) // past memcache.ttl
	got = lines(3, "rcpt", "alice@example.com", "bob@example.com")
	if tier(got[0]) != "accept stale" {
		t.Errorf("slapd down, found answer past its TTL: %q, want served stale", got[0])
	}
	if !strings.HasPrefix(got[1], "tempfail\tbob@example.com\t451 4.3.0 <bob@example.com>: Temporary lookup failure\t") {
		t.Errorf("slapd down, not-found answer past its TTL: %q, want a tempfail", got[1])
	}
	got = lines(0, "-json", "rcpt", "alice@example.com")
	if !strings.Contains(got[0], `"tier":"stale","stale":true`) {
		t.Errorf("-json stale: %q", got[0])
	}
}
