package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// TestCheckLDAPMemcache: check against slapd and memcached, through the
// stack the daemon builds: answers come from ldap, then from memcached;
// with slapd stopped, answers within their TTL still come from memcached
// and, once past it, a found answer is served stale and a not-found one
// tempfails.
//
// The TTLs are 3s, not 1s: memcached counts expirations in whole seconds
// of its own clock, so an item stored for 1s may be gone a moment later
// (the second check then asked the directory again), while one stored
// for 3s lives at least 2s. memcache.timeout is 5s, not the default
// 100ms: on a loaded machine a slow get is a miss, and a miss with the
// directory down a tempfail, not the stale answer this test is about.
// ldap.timeout is 3s so that a loaded machine does not turn an answer
// into a tempfail either; a stopped slapd refuses at once.
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
timeout = "5s"
ttl = "3s"
negative_ttl = "3s"
[ldap]
urls = [%q]
base_dn = %q
bind_dn = %q
bind_password_file = %q
timeout = "3s"
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
	// cache purge deletes the very key the check stored (with the LDAP
	// tree's scope): the next check asks the directory again.
	if out, stderr, code := runBin(t, "cache", "purge", "-config", cfg, "rcpt", "bob@example.com"); code != 0 {
		t.Fatalf("purge: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if got = lines(1, "rcpt", "bob@example.com"); tier(got[0]) != "reject ldap" {
		t.Errorf("after purge: %q, want an answer from ldap", got)
	}
	got = lines(0, "-no-cache", "rcpt", "alice@example.com")
	if tier(got[0]) != "accept ldap" {
		t.Errorf("-no-cache: %q", got)
	}
	if got = lines(1, "host", "192.0.2.44", "mx.example.org"); tier(got[0]) != "reject ldap" {
		t.Errorf("host: %q", got)
	}

	slapd.Stop()
	// Until their TTLs pass, the answers come from memcached; then alice
	// is served stale and bob tempfails. Nothing else, ever: no 550 from
	// the directory, which is down.
	const bobTempfail = "tempfail\tbob@example.com\t451 4.3.0 <bob@example.com>: Temporary lookup failure\t"
	var seen []string
	if !testserver.Eventually(30*time.Second, func() bool {
		out, stderr, code := runBin(t, "check", "-config", cfg, "rcpt", "alice@example.com", "bob@example.com")
		got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(got) != 2 || (code != 1 && code != 3) {
			t.Fatalf("slapd down: exit %d, stdout %q, stderr %q", code, out, stderr)
		}
		alice, bob := tier(got[0]), tier(got[1])
		if strings.HasPrefix(got[1], bobTempfail) {
			bob = "tempfail"
		}
		if alice != "accept memcache" && alice != "accept stale" || bob != "reject memcache" && bob != "tempfail" {
			t.Fatalf("slapd down: %q; want alice from memcache or stale, bob from memcache or tempfailed", got)
		}
		if state := alice + ", " + bob; len(seen) == 0 || seen[len(seen)-1] != state {
			seen = append(seen, state)
		}
		return alice == "accept stale" && bob == "tempfail"
	}) {
		t.Fatalf("slapd down: answers not past their TTL within 30s: %q", seen)
	}
	t.Logf("slapd down: %q", seen)
	got = lines(0, "-json", "rcpt", "alice@example.com")
	if !strings.Contains(got[0], `"tier":"stale","stale":true`) {
		t.Errorf("-json stale: %q", got[0])
	}
}

// TestServeReloadMarksLRUStale: after SIGHUP the LRU asks the directory
// again; with the directory down, a found answer still bridges the outage
// and a not-found one is not served (451, never 550).
func TestServeReloadMarksLRUStale(t *testing.T) {
	slapd := testserver.StartSlapd(t, testserver.SlapdOptions{Entries: []testserver.Entry{
		testserver.Person("alice", "alice@example.com"),
	}})
	cfg := filepath.Join(t.TempDir(), "ldap.toml")
	listen := fmt.Sprintf("inet:%d@127.0.0.1", testserver.FreePort(t, "127.0.0.1"))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t, "127.0.0.1"))
	writeFile(t, cfg, fmt.Sprintf(`listen = %q
metrics_listen = %q
source = "ldap"
decision_timeout = "5s"
[hosts]
enabled = false
[recipients]
domains = ["example.com"]
[cache]
ttl = "1h"
negative_ttl = "1h"
[ldap]
urls = [%q]
base_dn = %q
timeout = "3s"
`, listen, metricsAddr, slapd.URL(), testserver.SlapdSuffix))
	d := testserver.StartDaemon(t, cfg)
	if body, code := get(t, "http://"+metricsAddr+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz with slapd up = %d %q", code, body)
	}

	if got := rcpt(t, d, "alice@example.com"); got != "continue" {
		t.Fatalf("alice: %q", got)
	}
	if got := rcpt(t, d, "bob@example.com"); got != defaultReject {
		t.Fatalf("bob: %q", got)
	}
	searches := slapd.Searches()
	// Within the TTL, the LRU answers.
	rcpt(t, d, "alice@example.com")
	rcpt(t, d, "bob@example.com")
	if n := slapd.Searches(); n != searches {
		t.Errorf("%d searches within the LRU's TTL, want none", n-searches)
	}

	// SIGHUP with the directory up: both are asked again.
	reload(t, d, 1)
	rcpt(t, d, "alice@example.com")
	rcpt(t, d, "bob@example.com")
	if n := slapd.Searches(); n != searches+2 {
		t.Errorf("%d searches after SIGHUP, want 2", n-searches)
	}

	// SIGHUP with the directory down: alice bridges, bob tempfails.
	slapd.Stop()
	if body, code := get(t, "http://"+metricsAddr+"/healthz"); code != 503 || !strings.Contains(body, "directory unreachable") {
		t.Errorf("/healthz with slapd down = %d %q, want 503", code, body)
	}
	reload(t, d, 2)
	if got := rcpt(t, d, "alice@example.com"); got != "continue" {
		t.Errorf("alice with slapd down after SIGHUP: %q, want continue (stale)", got)
	}
	if got := rcpt(t, d, "bob@example.com"); got != "451 4.3.0 <bob@example.com>: Temporary lookup failure" {
		t.Errorf("bob with slapd down after SIGHUP: %q, want 451", got)
	}
	if !strings.Contains(d.Output(), "rcpt=alice@example.com tier=lru stale=true") {
		t.Errorf("no stale decision logged:\n%s", d.Output())
	}
	body, _ := get(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{"antespam_stale_answers_total 1", "antespam_directory_up 0", `antespam_config_reloads_total{result="ok"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// reload sends SIGHUP and waits for the n-th "config reloaded".
func reload(t *testing.T, d *testserver.Daemon, n int) {
	t.Helper()
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(d.Output(), "config reloaded") < n {
		if time.Now().After(deadline) {
			t.Fatalf("reload %d not logged:\n%s", n, d.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
