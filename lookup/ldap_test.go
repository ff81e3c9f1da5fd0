package lookup

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/metrics"
)

// ldapEntries is the directory most LDAP tests search.
var ldapEntries = []testserver.Entry{
	testserver.Person("alice", "alice@example.com"),
	testserver.Person("bob", "bob@example.com", "robert@example.com"),
	testserver.Person("catchall-example.org", "@example.org"),
	testserver.Host("bad.example.net"),
	testserver.Host("192.0.2.1", "192.0.2.1"),
	testserver.Host("net-198.51.100", "198.51.100.0/24"),
	testserver.Host("prefix-203.0.113", "203.0.113"),
	testserver.Host("net-2001:db8:1", "2001:db8:1::/64"),
	testserver.Host("bücher.example"), // UTF-8: base64 in LDIF, escaped in filters
	testserver.Host(" odd, name+#"),   // DN special characters
}

// startLDAPDirectory starts a slapd holding ldapEntries.
func startLDAPDirectory(t *testing.T, tls bool) *testserver.Slapd {
	t.Helper()
	return testserver.StartSlapd(t, testserver.SlapdOptions{Entries: ldapEntries, TLS: tls})
}

// ldapOptions are the defaults of the config for the test directory.
func ldapOptions(urls ...string) LDAPOptions {
	return LDAPOptions{
		URLs:            urls,
		BaseDN:          testserver.SlapdSuffix,
		RecipientFilter: "(|(mail=%s)(mailLocalAddress=%s))",
		HostFilter:      "(|(ipHostNumber=%s)(cn=%s))",
		Timeout:         time.Second,
	}
}

// newTestLDAP is NewLDAP that fails the test on error and closes at the
// end; log may be nil.
func newTestLDAP(t *testing.T, opts LDAPOptions, log *slog.Logger) *LDAP {
	t.Helper()
	l, err := NewLDAP(opts, log)
	if err != nil {
		t.Fatalf("NewLDAP: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// metricValue reads a counter or gauge.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatalf("read metric: %v", err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func ldapRcpt(candidates ...string) Key {
	return Key{Kind: Recipient, Name: candidates[0], Candidates: candidates}
}

func ldapHost(candidates ...string) Key {
	return Key{Kind: Host, Name: candidates[0], Candidates: candidates}
}

// mustLookup looks key up with a generous deadline and fails on error.
func mustLookup(t *testing.T, src Source, key Key) Answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := src.Lookup(ctx, key)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", key.Candidates, err)
	}
	return a
}

// waitFound polls until key is found, for recovery after an outage.
func waitFound(t *testing.T, src Source, key Key, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		a, err := src.Lookup(ctx, key)
		cancel()
		if err == nil && a.Found {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%q not found again within %s; last error: %v", key.Candidates, within, lastErr)
}

func TestLDAPLookup(t *testing.T) {
	s := startLDAPDirectory(t, false)
	l := newTestLDAP(t, ldapOptions(s.URL()), nil)
	long := strings.Repeat("a", 300) + "@example.com"
	tests := []struct {
		name string
		key  Key
		want bool
	}{
		{"mail", ldapRcpt("alice@example.com"), true},
		{"mail, other case", ldapRcpt("ALICE@Example.COM"), true},
		{"mailLocalAddress", ldapRcpt("robert@example.com"), true},
		{"not found", ldapRcpt("nobody@example.com"), false},
		{"+ext then base address", ldapRcpt("bob+x@example.com", "bob@example.com"), true},
		{"+ext alone", ldapRcpt("bob+x@example.com"), false},
		{"catch-all candidate", ldapRcpt("anyone@example.org", "@example.org"), true},
		{"no catch-all candidate", ldapRcpt("anyone@example.org"), false},
		{"catch-all of another domain", ldapRcpt("anyone@example.net", "@example.net"), false},
		{"no candidates", Key{Kind: Recipient, Name: "x"}, false},
		{"host by IP", ldapHost("192.0.2.1", "192.0.2", "192.0", "192", "192.0.2.0/24", "192.0.0.0/16", "192.0.0.0/8"), true},
		{"host by CIDR", ldapHost("198.51.100.7", "198.51.100", "198.51", "198", "198.51.100.0/24", "198.51.0.0/16", "198.0.0.0/8"), true},
		{"host by prefix", ldapHost("203.0.113.9", "203.0.113", "203.0", "203", "203.0.113.0/24", "203.0.0.0/16", "203.0.0.0/8"), true},
		{"host by IPv6 /64", ldapHost("2001:db8:1::25", "2001:db8:1::/64", "2001:db8:1::/56", "2001:db8::/48"), true},
		{"host by hostname", ldapHost("192.0.2.200", "bad.example.net", "example.net"), true},
		{"host by parent domain", ldapHost("192.0.2.200", "192.0.2", "mx.bad.example.net", "bad.example.net", "example.net"), true},
		{"host by UTF-8 name", ldapHost("192.0.2.200", "bücher.example"), true},
		{"host by name with DN specials", ldapHost(" odd, name+#"), true},
		{"host not listed", ldapHost("192.0.2.2", "192.0.2", "192.0", "192", "mx.good.example.com", "good.example.com", "example.com"), false},
		{"host parent is not a child", ldapHost("10.0.0.1", "example.net"), false},
		// Filter injection: each must match nothing and not fail.
		{"star", ldapRcpt("*"), false},
		{"star address", ldapRcpt("*@example.com"), false},
		{"star local part only", ldapRcpt("*", "@*"), false},
		{"close and reopen", ldapRcpt("x@example.com)(mail=*"), false},
		{"or injection", ldapRcpt("(|(mail=*))"), false},
		{"or injection after a close", ldapRcpt(")(|(mail=*))("), false},
		{"backslash", ldapRcpt(`alice\@example.com`), false},
		{"escaped star", ldapRcpt(`\2a`), false},
		{"NUL", ldapRcpt("alice@example.com\x00"), false},
		{"NUL inside", ldapRcpt("ali\x00ce@example.com"), false},
		{"NUL then junk", ldapRcpt("alice@example.com\x00junk"), false},
		{"host NUL", ldapHost("192.0.2.1\x00"), false},
		{"invalid UTF-8", ldapRcpt("\xff\xfe@example.com"), false},
		{"300-byte address", ldapRcpt(long), false},
		{"host star", ldapHost("*", "*.example.net"), false},
		{"host injection", ldapHost("192.0.2.9)(cn=*"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := mustLookup(t, l, tc.key)
			if a.Found != tc.want {
				t.Errorf("Found = %v, want %v", a.Found, tc.want)
			}
			if a.Tier != "ldap" || a.At.IsZero() {
				t.Errorf("Answer = %+v, want Tier ldap and At set", a)
			}
		})
	}
	for _, f := range s.SearchFilters() {
		if strings.Contains(f, "=*)") {
			t.Errorf("slapd received an unescaped wildcard: %s", f)
		}
	}
}

// One decision is one search, whatever the number of candidates.
func TestLDAPOneSearchPerLookup(t *testing.T) {
	s := startLDAPDirectory(t, false)
	l := newTestLDAP(t, ldapOptions(s.URL()), nil)
	before := s.Searches()
	mustLookup(t, l, ldapHost("192.0.2.200", "192.0.2", "192.0", "192", "192.0.2.0/24", "192.0.0.0/16", "192.0.0.0/8", "mx.bad.example.net", "bad.example.net", "example.net"))
	if got := s.Searches() - before; got != 1 {
		t.Fatalf("%d searches for one lookup, want 1", got)
	}
	filters := s.SearchFilters()
	if f := filters[len(filters)-1]; !strings.HasPrefix(f, "(|") || !strings.Contains(f, "(cn=example.net)") {
		t.Errorf("filter %s, want one OR of every candidate", f)
	}
}

func TestLDAPFilterTemplates(t *testing.T) {
	tests := []struct {
		name, tmpl string
		key        Key
		want       string
		ok         bool
	}{
		{"s", "(mail=%s)", ldapRcpt("a@b.example"), "(mail=a@b.example)", true},
		{"u and d", "(&(uid=%u)(associatedDomain=%d))", ldapRcpt("a@b.example"), "(&(uid=a)(associatedDomain=b.example))", true},
		{"catch-all skips %u", "(uid=%u)", ldapRcpt("@b.example"), "", false},
		{"catch-all with %d", "(associatedDomain=%d)", ldapRcpt("@b.example"), "(associatedDomain=b.example)", true},
		{"host skips %d", "(associatedDomain=%d)", ldapHost("192.0.2.1"), "", false},
		{"percent", "(description=100%%)", ldapRcpt("a@b"), "(description=100%)", true},
		{"escaped", "(mail=%s)", ldapRcpt("*)(x=\\\xff@b"), `(mail=\2a\29\28x=\5c\ff@b)`, true},
		{"NUL not queried", "(mail=%s)", ldapRcpt("a@b\x00c", "a\x00@b"), "", false},
		{"OR of candidates", "(mail=%s)", ldapRcpt("a+x@b", "a@b", "@b"), "(|(mail=a+x@b)(mail=a@b)(mail=@b))", true},
		{"duplicates once", "(mail=%d)", ldapRcpt("a+x@b", "a@b"), "(mail=b)", true},
		{"only queryable candidates", "(uid=%u)", ldapRcpt("a@b", "@b"), "(uid=a)", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := buildFilter(tc.tmpl, tc.key)
			if got != tc.want || ok != tc.ok {
				t.Errorf("buildFilter(%q, %q) = %q, %v; want %q, %v", tc.tmpl, tc.key.Candidates, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestLDAPOptionsErrors(t *testing.T) {
	junkCA := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junkCA, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*LDAPOptions)
		want   string
	}{
		{"no URLs", func(o *LDAPOptions) { o.URLs = nil }, "no URLs"},
		{"bad scheme", func(o *LDAPOptions) { o.URLs = []string{"http://127.0.0.1"} }, "scheme"},
		{"no base", func(o *LDAPOptions) { o.BaseDN = "" }, "base DN"},
		{"bad template", func(o *LDAPOptions) { o.RecipientFilter = "(mail=%s" }, "filter template"},
		{"two filters side by side", func(o *LDAPOptions) { o.RecipientFilter = "(mail=%s)(cn=%s)" }, "filter template"},
		{"host template with %d", func(o *LDAPOptions) { o.HostFilter = "(associatedDomain=%d)" }, "may only use %s"},
		{"host template with %u", func(o *LDAPOptions) { o.HostFilter = "(|(cn=%s)(uid=%u))" }, "may only use %s"},
		{"bind DN without a password", func(o *LDAPOptions) { o.BindDN = "cn=x" }, "empty password"},
		{"no filters", func(o *LDAPOptions) { o.RecipientFilter, o.HostFilter = "", "" }, "filter"},
		{"CA file without certificates", func(o *LDAPOptions) { o.TLSCAFile = junkCA }, "no PEM certificate"},
		{"missing CA file", func(o *LDAPOptions) { o.TLSCAFile = "/nonexistent/ca.pem" }, "CA file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ldapOptions("ldap://127.0.0.1:1")
			tc.change(&o)
			_, err := NewLDAP(o, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewLDAP: %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestLDAPParseURL(t *testing.T) {
	tests := []struct {
		url, network, addr string
		tls                bool
	}{
		{"ldap://127.0.0.1", "tcp", "127.0.0.1:389", false},
		{"ldap://ldap.example.com:3389/", "tcp", "ldap.example.com:3389", false},
		{"ldaps://ldap.example.com", "tcp", "ldap.example.com:636", true},
		{"ldap://[::1]:3389", "tcp", "[::1]:3389", false},
		{"ldapi://%2Frun%2Fslapd%2Fldapi", "unix", "/run/slapd/ldapi", false},
		{"ldapi://", "unix", "/var/run/slapd/ldapi", false},
	}
	for _, tc := range tests {
		u, err := parseLDAPURL(tc.url, false, &tls.Config{})
		if err != nil {
			t.Errorf("parseLDAPURL(%q): %v", tc.url, err)
			continue
		}
		if u.network != tc.network || u.addr != tc.addr || (u.tls != nil) != tc.tls {
			t.Errorf("parseLDAPURL(%q) = %s %s tls=%v; want %s %s tls=%v", tc.url, u.network, u.addr, u.tls != nil, tc.network, tc.addr, tc.tls)
		}
	}
	for _, bad := range []string{"http://x", "ldap://", "ldap://host:port:1", "ldapi://%zz"} {
		if _, err := parseLDAPURL(bad, false, &tls.Config{}); err == nil {
			t.Errorf("parseLDAPURL(%q): nil error", bad)
		}
	}
}

func TestLDAPFailover(t *testing.T) {
	s := startLDAPDirectory(t, false)
	closed := "ldap://127.0.0.1:" + strconv.Itoa(testserver.FreePort(t, "127.0.0.1"))
	blackHole := "ldap://" + testserver.BlackHole(t)
	tests := []struct {
		name  string
		first string
	}{
		{"first URL refuses connections", closed},
		{"first URL never answers", blackHole},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := ldapOptions(tc.first, s.URL())
			opts.Timeout = 500 * time.Millisecond
			var logs bytes.Buffer
			l := newTestLDAP(t, opts, slog.New(slog.NewTextHandler(&logs, nil)))
			for _, c := range []string{"alice@example.com", "bob@example.com"} {
				start := time.Now()
				if a := mustLookup(t, l, ldapRcpt(c)); !a.Found {
					t.Errorf("%s not found through the second URL", c)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("lookup took %s", d)
				}
			}
			if !strings.Contains(logs.String(), tc.first) {
				t.Errorf("no warning naming %s in the log:\n%s", tc.first, logs.String())
			}
		})
	}
}

// An entry added while slapd runs is found by the next lookup.
func TestLDAPAddWhileRunning(t *testing.T) {
	s := startLDAPDirectory(t, false)
	l := newTestLDAP(t, ldapOptions(s.URL()), nil)
	carol := ldapRcpt("carol@example.com")
	if mustLookup(t, l, carol).Found {
		t.Fatal("carol found before she was added")
	}
	s.Add(t, testserver.Person("carol", "carol@example.com"), testserver.Host("203.0.113.66", "203.0.113.66"))
	if !mustLookup(t, l, carol).Found {
		t.Error("carol not found after Add")
	}
	if !mustLookup(t, l, ldapHost("203.0.113.66")).Found {
		t.Error("host 203.0.113.66 not found after Add")
	}
}

// 200 concurrent lookups of one new key through the coalescing tier reach
// slapd as exactly one search. slapd is frozen until every caller has
// joined the shared call, so the count does not depend on timing.
func TestLDAPCoalescedLookupsOneSearch(t *testing.T) {
	s := startLDAPDirectory(t, false)
	opts := ldapOptions(s.URL())
	opts.Timeout = 10 * time.Second
	l := newTestLDAP(t, opts, nil)
	c := NewCoalesce(l, nil)
	var joined sync.WaitGroup
	joined.Add(200)
	c.joined = joined.Done
	before := s.Searches()
	s.Freeze()
	key := ldapRcpt("bob+new@example.com", "bob@example.com")
	var wg sync.WaitGroup
	var found, failed atomic.Int64
	for range 200 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			a, err := c.Lookup(ctx, key)
			switch {
			case err != nil:
				failed.Add(1)
			case a.Found:
				found.Add(1)
			}
		})
	}
	joined.Wait()
	s.Thaw()
	wg.Wait()
	if found.Load() != 200 || failed.Load() != 0 {
		t.Errorf("%d found, %d failed of 200", found.Load(), failed.Load())
	}
	if n := s.Searches() - before; n != 1 {
		t.Errorf("slapd received %d searches for 200 concurrent lookups of one key, want 1", n)
	}
}

// A server that accepts and hangs up at once is not hammered: lookups
// fail fast during the backoff instead of dialling each time.
func TestLDAPBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	l := newTestLDAP(t, ldapOptions("ldap://"+ln.Addr().String()), nil)
	lookups := 0
	for start := time.Now(); time.Since(start) < time.Second; lookups++ {
		if _, err := l.Lookup(context.Background(), ldapRcpt("alice@example.com")); err == nil {
			t.Fatal("Lookup against a server that hangs up: nil error")
		}
	}
	// 4 slots, each backing off 100 ms, 200 ms, 400 ms...: about 16
	// dials in a second; without a backoff, one per lookup.
	t.Logf("%d connections for %d lookups", accepts.Load(), lookups)
	if n := accepts.Load(); n > 40 {
		t.Errorf("%d connections in 1s for %d lookups, want at most 40", n, lookups)
	}
}

// slapd stopped: errors, never misses; restarted: the same LDAP answers.
func TestLDAPOutageAndRecovery(t *testing.T) {
	s := startLDAPDirectory(t, false)
	opts := ldapOptions(s.URL())
	opts.Timeout = 500 * time.Millisecond
	opts.Connections = 2
	l := newTestLDAP(t, opts, nil)
	alice := ldapRcpt("alice@example.com")
	if !mustLookup(t, l, alice).Found {
		t.Fatal("alice not found before the outage")
	}
	errorsBefore := metricValue(t, metrics.DirectoryErrors.WithLabelValues("ldap"))
	if up := metricValue(t, metrics.DirectoryUp); up != 1 {
		t.Errorf("DirectoryUp = %v after a lookup, want 1", up)
	}
	s.Stop()
	for _, key := range []Key{alice, ldapRcpt("nobody@example.com"), ldapHost("192.0.2.1")} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a, err := l.Lookup(ctx, key)
		cancel()
		if err == nil {
			t.Errorf("Lookup(%q) with slapd stopped = %+v, nil; want an error", key.Candidates, a)
		}
	}
	if err := l.Ping(context.Background()); err == nil {
		t.Error("Ping with slapd stopped: nil error")
	}
	// Other tests may run in parallel: at least our three errors.
	if got := metricValue(t, metrics.DirectoryErrors.WithLabelValues("ldap")) - errorsBefore; got < 3 {
		t.Errorf("DirectoryErrors rose by %v, want at least 3", got)
	}
	s.Start()
	waitFound(t, l, alice, 10*time.Second)
	if a := mustLookup(t, l, ldapRcpt("nobody@example.com")); a.Found {
		t.Error("nobody found after recovery")
	}
	if err := l.Ping(context.Background()); err != nil {
		t.Errorf("Ping after recovery: %v", err)
	}
}

// A server restarted between two lookups leaves pooled connections that
// are closed: the next lookup redials (or retries once) and succeeds.
func TestLDAPRestartBetweenLookups(t *testing.T) {
	s := startLDAPDirectory(t, false)
	opts := ldapOptions(s.URL())
	opts.Connections = 2
	l := newTestLDAP(t, opts, nil)
	alice := ldapRcpt("alice@example.com")
	for i := range 3 {
		if !mustLookup(t, l, alice).Found {
			t.Fatalf("round %d: alice not found", i)
		}
		s.Stop()
		s.Start()
	}
}

// slapd frozen: an error within Timeout (or the caller's deadline), then
// recovery on SIGCONT.
func TestLDAPFrozenServer(t *testing.T) {
	s := startLDAPDirectory(t, false)
	const timeout = 500 * time.Millisecond
	// Generous for a loaded machine, still far below the 10 s a missing
	// request timeout would take.
	const slack = 5 * time.Second
	opts := ldapOptions(s.URL())
	opts.Timeout = timeout
	l := newTestLDAP(t, opts, nil)
	alice := ldapRcpt("alice@example.com")
	mustLookup(t, l, alice)

	s.Freeze()
	check := func(name string, ctx context.Context, within time.Duration) {
		t.Helper()
		start := time.Now()
		a, err := l.Lookup(ctx, alice)
		d := time.Since(start)
		if err == nil {
			t.Errorf("%s: Lookup with slapd frozen = %+v, nil; want an error", name, a)
		}
		if d > within {
			t.Errorf("%s: error after %s, want within %s", name, d, within)
		}
	}
	// A generous caller deadline, so that a missing request timeout shows
	// as a failure rather than a hang.
	generous := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { check("pooled connection "+strconv.Itoa(i), generous(), timeout+slack) })
	}
	wg.Wait()
	// The broken connection was dropped: the next lookup dials a frozen
	// server and must still give up within Timeout.
	check("new connection", generous(), timeout+slack)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	check("caller deadline", ctx, 100*time.Millisecond+slack)
	cancel()

	s.Thaw()
	waitFound(t, l, alice, 10*time.Second)
}

// Outages and Close leave no goroutine behind (each go-ldap connection
// runs two).
func TestLDAPNoGoroutineLeak(t *testing.T) {
	s := startLDAPDirectory(t, false)
	before := runtime.NumGoroutine()
	opts := ldapOptions(s.URL())
	opts.Timeout = 300 * time.Millisecond
	l, err := NewLDAP(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	alice := ldapRcpt("alice@example.com")
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { _, _ = l.Lookup(context.Background(), alice) })
	}
	wg.Wait()
	s.Freeze()
	for range 3 {
		_, _ = l.Lookup(context.Background(), alice)
	}
	s.Thaw()
	waitFound(t, l, alice, 10*time.Second)
	s.Stop()
	_, _ = l.Lookup(context.Background(), alice)
	s.Start()
	waitFound(t, l, alice, 10*time.Second)
	l.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before NewLDAP:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// 500 concurrent lookups on one connection stay under slapd's limit of 100
// pending requests on an anonymous connection.
func TestLDAPConcurrentOneConnection(t *testing.T) {
	s := startLDAPDirectory(t, false)
	opts := ldapOptions(s.URL())
	opts.Connections = 1
	opts.MaxInFlight = 64
	opts.Timeout = 5 * time.Second
	l := newTestLDAP(t, opts, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for i := range 500 {
		wg.Go(func() {
			key, want := ldapRcpt("alice@example.com"), true
			if i%2 == 1 {
				key, want = ldapRcpt(fmt.Sprintf("user%d@example.com", i)), false
			}
			a, err := l.Lookup(context.Background(), key)
			if err == nil && a.Found != want {
				err = fmt.Errorf("%s: Found = %v", key.Name, a.Found)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 3 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Fatalf("%d of 500 lookups failed", n)
	}
	// One "who am I?" probe per connection dialled.
	if got := strings.Count(s.Log(), "EXT oid=1.3.6.1.4.1.4203.1.11.3"); got != 1 {
		t.Errorf("slapd accepted %d connections, want 1", got)
	}
}

func TestLDAPBind(t *testing.T) {
	s := startLDAPDirectory(t, false)
	t.Run("right password", func(t *testing.T) {
		opts := ldapOptions(s.URL())
		opts.BindDN, opts.BindPassword = testserver.SlapdRootDN, s.RootPassword()
		l := newTestLDAP(t, opts, nil)
		if !mustLookup(t, l, ldapRcpt("alice@example.com")).Found {
			t.Error("alice not found after a bind")
		}
		if !strings.Contains(s.Log(), `BIND dn="`+testserver.SlapdRootDN+`" method=128`) {
			t.Error("slapd saw no simple bind as the root DN")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		const password = "wrong-hunter2"
		opts := ldapOptions(s.URL())
		opts.BindDN, opts.BindPassword = testserver.SlapdRootDN, password
		var logs bytes.Buffer
		l, err := NewLDAP(opts, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		if err == nil {
			l.Close()
			t.Fatal("NewLDAP with a wrong password: nil error")
		}
		if !strings.Contains(err.Error(), "Invalid Credentials") || !strings.Contains(err.Error(), "bind") {
			t.Errorf("error %q does not say the bind was refused", err)
		}
		if strings.Contains(err.Error()+logs.String(), password) {
			t.Errorf("the password leaked:\nerror: %v\nlog: %s", err, logs.String())
		}
	})
	t.Run("server down at start", func(t *testing.T) {
		// Not a configuration error: NewLDAP succeeds, lookups fail.
		opts := ldapOptions("ldap://127.0.0.1:" + strconv.Itoa(testserver.FreePort(t, "127.0.0.1")))
		opts.BindDN, opts.BindPassword = testserver.SlapdRootDN, "secret"
		l := newTestLDAP(t, opts, nil)
		if _, err := l.Lookup(context.Background(), ldapRcpt("alice@example.com")); err == nil {
			t.Error("Lookup with no server: nil error")
		}
	})
}

func TestLDAPTLS(t *testing.T) {
	s := startLDAPDirectory(t, true)
	other := testserver.UntrustedCAFile(t)
	tests := []struct {
		name     string
		url      string
		startTLS bool
		caFile   string
		wantErr  string // "" for success
	}{
		{"ldaps with the CA", s.TLSURL(), false, s.CAFile(), ""},
		{"StartTLS with the CA", s.URL(), true, s.CAFile(), ""},
		{"ldaps, name in the certificate", strings.Replace(s.TLSURL(), "127.0.0.1", "localhost", 1), false, s.CAFile(), ""},
		{"ldaps with another CA", s.TLSURL(), false, other, "certificate"},
		{"ldaps with the system roots", s.TLSURL(), false, "", "certificate"},
		{"StartTLS with another CA", s.URL(), true, other, "certificate"},
		{"StartTLS with the system roots", s.URL(), true, "", "certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := ldapOptions(tc.url)
			opts.StartTLS, opts.TLSCAFile = tc.startTLS, tc.caFile
			l := newTestLDAP(t, opts, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			a, err := l.Lookup(ctx, ldapRcpt("alice@example.com"))
			if tc.wantErr == "" {
				if err != nil || !a.Found {
					t.Fatalf("Lookup = %+v, %v; want found", a, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Lookup = %+v, %v; want an error about %q", a, err, tc.wantErr)
			}
		})
	}
	if !strings.Contains(s.Log(), "oid=1.3.6.1.4.1.1466.20037") {
		t.Error("slapd saw no StartTLS request")
	}
}

// A server without TLS refuses StartTLS: the lookup fails, it never goes
// on in plain text.
func TestLDAPStartTLSRefusedFailsClosed(t *testing.T) {
	s := startLDAPDirectory(t, false)
	opts := ldapOptions(s.URL())
	opts.StartTLS = true
	// The server answered "no": a configuration error, refused at start.
	l, err := NewLDAP(opts, nil)
	if err == nil {
		l.Close()
		t.Fatal("NewLDAP with StartTLS against a server without TLS: nil error")
	}
	if !strings.Contains(err.Error(), "StartTLS") {
		t.Fatalf("NewLDAP: %v; want a StartTLS error", err)
	}
	if n := s.Searches(); n != 0 {
		t.Errorf("slapd received %d searches over plain text", n)
	}
}

func TestLDAPPingAndClose(t *testing.T) {
	s := startLDAPDirectory(t, false)
	l := newTestLDAP(t, ldapOptions(s.URL()), nil)
	if err := l.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	opts := ldapOptions(s.URL())
	opts.BaseDN = "dc=nowhere,dc=example"
	wrong := newTestLDAP(t, opts, nil)
	if err := wrong.Ping(context.Background()); err == nil {
		t.Error("Ping of a missing base DN: nil error")
	}
	if _, err := wrong.Lookup(context.Background(), ldapRcpt("alice@example.com")); err == nil {
		t.Error("Lookup under a missing base DN: nil error, want one (not a miss)")
	}
	l.Close()
	if _, err := l.Lookup(context.Background(), ldapRcpt("alice@example.com")); !errors.Is(err, errLDAPClosed) {
		t.Errorf("Lookup after Close: %v, want %v", err, errLDAPClosed)
	}
}

// BenchmarkLDAPLookup: parallel lookups (two candidates each, half found,
// half not) against a local slapd with 1000 people and its stats log off.
func BenchmarkLDAPLookup(b *testing.B) {
	entries := make([]testserver.Entry, 1000)
	for i := range entries {
		entries[i] = testserver.Person("user"+strconv.Itoa(i), "user"+strconv.Itoa(i)+"@example.com")
	}
	s := testserver.StartSlapd(b, testserver.SlapdOptions{Entries: entries, Quiet: true})
	l, err := NewLDAP(ldapOptions(s.URL()), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	// Many lookups in flight, as in the daemon (64 goroutines on 2 CPUs).
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			// Odd numbers past 1000 do not exist.
			key := ldapRcpt("user"+strconv.Itoa(i%2000)+"@example.com", "@example.com")
			if _, err := l.Lookup(ctx, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A server that answers but cannot serve now (unwilling, a refused
// StartTLS, a certificate that fails verification) makes the dial try the
// next URL. Alone at start, it is logged and NewLDAP succeeds (so that the
// daemon starts and recovers), except a refused StartTLS, which fails
// closed; lookups fail with the server's reason, never miss.
func TestLDAPFailoverPastRefusals(t *testing.T) {
	plain := startLDAPDirectory(t, false)
	served := startLDAPDirectory(t, true)
	untrusted := startLDAPDirectory(t, true)
	noProbe := testserver.StartSlapd(t, testserver.SlapdOptions{Entries: ldapEntries, Restrict: []string{"extended"}})
	noBind := testserver.StartSlapd(t, testserver.SlapdOptions{Entries: ldapEntries, Restrict: []string{"bind"}})
	tests := []struct {
		name        string
		first       string // refuses
		second      string // serves
		bind        bool
		startTLS    bool
		caFile      string
		why         string // in the error of a lookup through first alone
		fatalAtBoot bool
	}{
		{"unwilling to answer the probe (53)", noProbe.URL(), plain.URL(), false, false, "", "Unwilling To Perform", false},
		{"unwilling to bind (53)", noBind.URL(), plain.URL(), true, false, "", "Unwilling To Perform", false},
		{"certificate from another CA", untrusted.TLSURL(), served.TLSURL(), false, false, served.CAFile(), "certificate", false},
		{"StartTLS refused", plain.URL(), served.URL(), false, true, served.CAFile(), "StartTLS", true},
	}
	alice := ldapRcpt("alice@example.com")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := ldapOptions(tc.first, tc.second)
			opts.StartTLS, opts.TLSCAFile = tc.startTLS, tc.caFile
			if tc.bind {
				opts.BindDN, opts.BindPassword = testserver.SlapdRootDN, "secret"
			}
			var logs bytes.Buffer
			l := newTestLDAP(t, opts, slog.New(slog.NewTextHandler(&logs, nil)))
			for range 3 {
				if a := mustLookup(t, l, alice); !a.Found {
					t.Fatal("alice not found through the second URL")
				}
			}
			if !strings.Contains(logs.String(), tc.first) {
				t.Errorf("no warning naming %s in the log:\n%s", tc.first, logs.String())
			}

			opts.URLs = opts.URLs[:1]
			logs.Reset()
			alone, err := NewLDAP(opts, slog.New(slog.NewTextHandler(&logs, nil)))
			if tc.fatalAtBoot {
				if err == nil || !strings.Contains(err.Error(), tc.why) {
					t.Errorf("NewLDAP with %s alone: %v, want an error about %q", tc.first, err, tc.why)
				}
				if alone != nil {
					alone.Close()
				}
				return
			}
			if err != nil {
				t.Fatalf("NewLDAP with %s alone: %v, want it to start and log", tc.first, err)
			}
			defer alone.Close()
			if !strings.Contains(logs.String(), "no ldap server usable at start") {
				t.Errorf("no start-up warning in the log:\n%s", logs.String())
			}
			a, err := alone.Lookup(context.Background(), alice)
			if err == nil || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("Lookup through %s alone = %+v, %v; want an error about %q", tc.first, a, err, tc.why)
			}
		})
	}
}

// Invalid credentials are a configuration error: the next URL is not
// tried (another replica would refuse them too) and NewLDAP fails.
func TestLDAPWrongPasswordStopsFailover(t *testing.T) {
	first := startLDAPDirectory(t, false)
	second := startLDAPDirectory(t, false)
	opts := ldapOptions(first.URL(), second.URL())
	opts.BindDN, opts.BindPassword = testserver.SlapdRootDN, "wrong-password"
	l, err := NewLDAP(opts, nil)
	if err == nil {
		l.Close()
		t.Fatal("NewLDAP with a wrong password: nil error")
	}
	if !strings.Contains(err.Error(), "Invalid Credentials") {
		t.Errorf("NewLDAP: %v, want Invalid Credentials", err)
	}
	if strings.Contains(second.Log(), "BIND dn=") {
		t.Error("the second URL was tried after invalid credentials")
	}
}

// A search answered only with a referral (the entry may live on the
// server referred to) is an error, not a miss.
func TestLDAPReferralIsNotAMiss(t *testing.T) {
	const ref = "ldap://ldap.other.example/ou=elsewhere,dc=example,dc=com"
	s := testserver.StartSlapd(t, testserver.SlapdOptions{Entries: append(append([]testserver.Entry(nil), ldapEntries...), testserver.Referral("elsewhere", ref))})
	l := newTestLDAP(t, ldapOptions(s.URL()), nil)
	if !mustLookup(t, l, ldapRcpt("alice@example.com")).Found {
		t.Error("alice not found beside a referral")
	}
	a, err := l.Lookup(context.Background(), ldapRcpt("nobody@example.com"))
	if err == nil || !strings.Contains(err.Error(), "referral") || !strings.Contains(err.Error(), "ldap.other.example") {
		t.Errorf("Lookup of an address not here, with a referral = %+v, %v; want an error naming the referral", a, err)
	}
	if err := l.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// When every usable connection is full, a lookup waits for one of them
// rather than taking a slot in dial backoff, which would fail at once.
func TestLDAPFullSlotsSkipBackoff(t *testing.T) {
	s := startLDAPDirectory(t, false)
	opts := ldapOptions(s.URL())
	opts.Connections, opts.MaxInFlight = 2, 1
	l := newTestLDAP(t, opts, nil)
	healthy, backingOff := l.slots[0], l.slots[1]
	backingOff.mu.Lock()
	backingOff.failures = 5
	backingOff.retryAt = time.Now().Add(time.Hour)
	backingOff.lastErr = errors.New("test: dial failed")
	backingOff.mu.Unlock()
	for i := range 4 {
		healthy.sem <- struct{}{} // a request in flight fills it
		release := time.AfterFunc(50*time.Millisecond, func() { <-healthy.sem })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a, err := l.Lookup(ctx, ldapRcpt("alice@example.com"))
		cancel()
		if release.Stop() {
			<-healthy.sem // not waited for: free it for the next round
		}
		if err != nil || !a.Found {
			t.Fatalf("lookup %d with the healthy connection full = %+v, %v; want it to wait and find alice", i, a, err)
		}
	}
}
