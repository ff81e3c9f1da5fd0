package lookup

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/metrics"
)

// candidateSource is a fake directory: a key is found when any candidate is in
// the set. It counts and records lookups.
type candidateSource struct {
	mu     sync.Mutex
	listed map[string]bool
	keys   []Key
	err    error
}

func newCandidateSource(listed ...string) *candidateSource {
	m := &candidateSource{listed: map[string]bool{}}
	for _, l := range listed {
		m.listed[l] = true
	}
	return m
}

func (m *candidateSource) Lookup(ctx context.Context, key Key) (Answer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys = append(m.keys, key)
	if m.err != nil {
		return Answer{}, m.err
	}
	for _, c := range key.Expand() {
		if m.listed[c] {
			return Answer{Found: true, At: time.Now(), Tier: "map"}, nil
		}
	}
	return Answer{At: time.Now(), Tier: "map"}, nil
}

func (m *candidateSource) calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

func newCheckerT(t *testing.T, src Source, opts CheckerOptions) *Checker {
	t.Helper()
	c, err := NewChecker(src, opts)
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	return c
}

func TestCheckerRecipient(t *testing.T) {
	src := newCandidateSource(
		"alice@example.com", "bob@example.com", "Carol@example.com", "@catchall.example",
		"josé@example.com", `"john doe"@example.com`, "john.smith@example.com",
		"user@xn--bcher-kva.example", "ü@xn--tda.example", "info@münchen.example",
	)
	base := CheckerOptions{
		Domains:            []string{"example.com", "catchall.example", "Bücher.example", "xn--tda.example", "xn--mnchen-3ya.example"},
		RecipientDelimiter: "+-",
		CaseFoldLocalPart:  true,
		CatchAll:           true,
		AlwaysAccept:       []string{"abuse", "Hostmaster"},
	}
	noFold := base
	noFold.CaseFoldLocalPart = false
	noCatchAll := base
	noCatchAll.CatchAll = false
	allDomains := base
	allDomains.Domains = nil

	tests := []struct {
		name      string
		opts      CheckerOptions
		addr      string
		found     bool
		tier      string
		item      string
		noLookup  bool
		wantCands []string // checked when set
	}{
		{name: "found", opts: base, addr: "<alice@example.com>", found: true, tier: "map", item: "alice@example.com"},
		{name: "not found", opts: base, addr: "<nobody@example.com>", tier: "map", item: "nobody@example.com",
			wantCands: []string{"nobody@example.com", "@example.com"}},
		{name: "extension", opts: base, addr: "alice+news@example.com", found: true, tier: "map",
			wantCands: []string{"alice+news@example.com", "alice@example.com", "@example.com"}},
		{name: "second delimiter", opts: base, addr: "bob-lists@example.com", found: true, tier: "map"},
		{name: "first delimiter wins", opts: base, addr: "bob-x+y@example.com", found: true, tier: "map"},
		{name: "catch-all", opts: base, addr: "anyone@catchall.example", found: true, tier: "map"},
		{name: "catch-all off", opts: noCatchAll, addr: "anyone@catchall.example", tier: "map",
			wantCands: []string{"anyone@catchall.example"}},
		{name: "case folded", opts: base, addr: "ALICE@EXAMPLE.COM", found: true, tier: "map", item: "alice@example.com"},
		{name: "case folded misses mixed-case entry", opts: base, addr: "Carol@example.com", tier: "map"},
		{name: "case kept", opts: noFold, addr: "Carol@Example.com", found: true, tier: "map", item: "Carol@example.com"},
		{name: "case kept misses", opts: noFold, addr: "ALICE@example.com", tier: "map"},
		{name: "quoted needing no quotes", opts: base, addr: `"John.Smith"@example.com`, found: true, tier: "map", item: "john.smith@example.com"},
		{name: "quoted with space", opts: base, addr: `"John Doe"@example.com`, found: true, tier: "map", item: `"john doe"@example.com`},
		{name: "utf8 local part", opts: base, addr: "JOSÉ@example.com", found: true, tier: "map", item: "josé@example.com"},
		{name: "idn configured as u-label, address a-label", opts: base, addr: "user@xn--bcher-kva.example", found: true, tier: "map"},
		{name: "idn configured as u-label, address u-label", opts: base, addr: "user@bücher.example", found: true, tier: "map",
			item: "user@xn--bcher-kva.example"},
		{name: "idn configured as a-label, address u-label", opts: base, addr: "Ü@ü.example", found: true, tier: "map", item: "ü@xn--tda.example"},
		{name: "idn listed in u-label form", opts: base, addr: "info@xn--mnchen-3ya.example", found: true, tier: "map",
			wantCands: []string{"info@xn--mnchen-3ya.example", "@xn--mnchen-3ya.example", "info@münchen.example", "@münchen.example"}},
		{name: "not ours", opts: base, addr: "alice@elsewhere.example", found: true, tier: TierNotOurs, noLookup: true},
		{name: "every domain when none configured", opts: allDomains, addr: "alice@elsewhere.example", tier: "map"},
		{name: "postmaster", opts: base, addr: "PostMaster@example.com", found: true, tier: TierAlways, noLookup: true},
		{name: "postmaster case kept", opts: noFold, addr: "POSTMASTER@example.com", found: true, tier: TierAlways, noLookup: true},
		{name: "postmaster with extension", opts: base, addr: "postmaster+x@example.com", found: true, tier: TierAlways, noLookup: true},
		{name: "always_accept", opts: base, addr: "abuse@catchall.example", found: true, tier: TierAlways, noLookup: true},
		{name: "always_accept case", opts: noFold, addr: "HOSTMASTER@example.com", found: true, tier: TierAlways, noLookup: true},
		{name: "always_accept not a prefix", opts: base, addr: "abusers@example.com", tier: "map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src.mu.Lock()
			src.keys = nil
			src.mu.Unlock()
			c := newCheckerT(t, src, tt.opts)
			d, err := c.Recipient(context.Background(), tt.addr)
			if err != nil {
				t.Fatalf("Recipient(%q): %v", tt.addr, err)
			}
			if d.Found != tt.found || d.Tier != tt.tier {
				t.Errorf("Recipient(%q) = found %v tier %q; want %v %q", tt.addr, d.Found, d.Tier, tt.found, tt.tier)
			}
			if tt.item != "" && d.Item != tt.item {
				t.Errorf("Item = %q, want %q", d.Item, tt.item)
			}
			if n := src.calls(); tt.noLookup && n != 0 {
				t.Errorf("%d lookups, want none", n)
			} else if !tt.noLookup && n != 1 {
				t.Errorf("%d lookups, want 1", n)
			}
			key, needs, err := c.RecipientKey(tt.addr)
			if err != nil || needs == tt.noLookup || key.Name != d.Item {
				t.Errorf("RecipientKey = %+v, %v, %v; disagrees with Recipient (%q)", key, needs, err, d.Item)
			}
			if !tt.noLookup {
				if got := src.keys[0]; got.Kind != Recipient || got.Name != key.Name || !slices.Equal(got.Expand(), key.Expand()) {
					t.Errorf("looked up %+v, RecipientKey gives %+v", got, key)
				}
			}
			if tt.wantCands != nil && !slices.Equal(key.Expand(), tt.wantCands) {
				t.Errorf("candidates %q, want %q", key.Expand(), tt.wantCands)
			}
		})
	}
}

func TestCheckerRecipientErrors(t *testing.T) {
	src := newCandidateSource("alice@example.com")
	c := newCheckerT(t, src, CheckerOptions{Domains: []string{"example.com"}, CaseFoldLocalPart: true})
	for _, addr := range []string{
		"", "<>", "alice", "alice@example.com\r\nDATA", "alice\n@example.com", "al\x00ice@example.com",
		"\xff\xfe@example.com", strings.Repeat("x", 300) + "@example.com", "<alice@example.com",
		"john doe@example.com", "a@exa\x7fmple.com", strings.Repeat("y", 1<<16),
	} {
		d, err := c.Recipient(context.Background(), addr)
		if !errors.Is(err, ErrBadAddress) {
			t.Errorf("Recipient(%.40q) = %+v, %v; want ErrBadAddress", addr, d, err)
		}
		if d.Found {
			t.Errorf("Recipient(%.40q) found", addr)
		}
	}
	if n := src.calls(); n != 0 {
		t.Errorf("%d lookups for malformed addresses", n)
	}

	// A directory error is returned, wrapped, and is not ErrBadAddress.
	boom := errors.New("directory down")
	src.err = boom
	_, err := c.Recipient(context.Background(), "alice@example.com")
	if !errors.Is(err, boom) || errors.Is(err, ErrBadAddress) {
		t.Errorf("directory failure: %v", err)
	}
	if _, err := c.Host(context.Background(), netip.MustParseAddr("192.0.2.1"), ""); !errors.Is(err, boom) {
		t.Errorf("directory failure for host: %v", err)
	}
	if _, err := c.Host(context.Background(), netip.Addr{}, "mx.example.net"); !errors.Is(err, ErrBadAddress) {
		t.Errorf("invalid IP: %v", err)
	}
}

func TestNewCheckerErrors(t *testing.T) {
	src := newCandidateSource()
	for _, tt := range []struct {
		name string
		src  Source
		opts CheckerOptions
	}{
		{"nil source", nil, CheckerOptions{}},
		{"bad domain", src, CheckerOptions{Domains: []string{"exa mple.com"}}},
		{"domain with at", src, CheckerOptions{Domains: []string{"user@example.com"}}},
		{"empty domain", src, CheckerOptions{Domains: []string{""}}},
		{"at delimiter", src, CheckerOptions{RecipientDelimiter: "+@"}},
		{"bad always_accept", src, CheckerOptions{AlwaysAccept: []string{"a@b"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewChecker(tt.src, tt.opts); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestCheckerHost(t *testing.T) {
	src := newCandidateSource("192.0.2", "198.51.100.7", "203.0.113.0/24", "2001:db8:1::/48", "2001:db8:2:3::/64",
		"2001:db8:4:100::/56", "bad.example", "10")
	c := newCheckerT(t, src, CheckerOptions{})
	tests := []struct {
		name, addr, host string
		found            bool
		item             string
	}{
		{"ipv4 prefix", "192.0.2.77", "", true, "192.0.2.77"},
		{"ipv4 exact", "198.51.100.7", "unknown", true, "198.51.100.7"},
		{"ipv4 exact miss", "198.51.100.8", "unknown", false, "198.51.100.8"},
		{"ipv4 cidr", "203.0.113.9", "", true, "203.0.113.9"},
		{"ipv4 /8 prefix", "10.200.1.1", "", true, "10.200.1.1"},
		{"ipv4-mapped", "::ffff:198.51.100.7", "", true, "198.51.100.7"},
		{"ipv6 /48", "2001:db8:1:ffff::1", "", true, "2001:db8:1:ffff::1"},
		{"ipv6 /64", "2001:db8:2:3::99", "", true, "2001:db8:2:3::99"},
		{"ipv6 /64 miss", "2001:db8:2:4::99", "", false, "2001:db8:2:4::99"},
		{"ipv6 /56", "2001:db8:4:1ab::1", "", true, "2001:db8:4:1ab::1"},
		{"ipv6 /56 miss", "2001:db8:4:200::1", "", false, "2001:db8:4:200::1"},
		{"hostname parent", "172.16.0.1", "mx1.mail.Bad.Example.", true, "172.16.0.1 mx1.mail.bad.example"},
		{"hostname itself", "172.16.0.1", "bad.example", true, "172.16.0.1 bad.example"},
		{"hostname other", "172.16.0.1", "good.example", false, "172.16.0.1 good.example"},
		{"bracketed hostname ignored", "172.16.0.1", "[172.16.0.1]", false, "172.16.0.1"},
		{"unknown ignored", "172.16.0.1", "unknown", false, "172.16.0.1"},
		{"hostname with trailing CRLF trimmed", "172.16.0.1", "x.bad.example\r\n", true, "172.16.0.1 x.bad.example"},
		{"hostname with NUL ignored", "172.16.0.1", "x.bad.example\x00", false, "172.16.0.1"},
		{"hostname with inner CRLF ignored", "172.16.0.1", "x.bad\r\n.example", false, "172.16.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			d, err := c.Host(context.Background(), a, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if d.Found != tt.found || d.Item != tt.item || d.Tier != "map" {
				t.Errorf("Host(%s, %q) = %+v; want found %v item %q", tt.addr, tt.host, d, tt.found, tt.item)
			}
			key := c.HostKey(a, tt.host)
			if key.Kind != Host || key.Name != d.Item || !slices.Equal(key.Candidates, HostCandidates(a, tt.host)) {
				t.Errorf("HostKey = %+v", key)
			}
		})
	}
}

// BenchmarkChecker measures the Checker's own work per question (key
// derivation and the Decision) over a Source that answers at once.
func BenchmarkChecker(b *testing.B) {
	src := SourceFunc(func(ctx context.Context, key Key) (Answer, error) {
		return Answer{Found: true, Tier: "nop"}, nil
	})
	c, err := NewChecker(src, CheckerOptions{Domains: []string{"example.com"}, RecipientDelimiter: "+", CaseFoldLocalPart: true, CatchAll: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("rcpt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Recipient(ctx, "<alice+news@example.com>"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rcpt-not-ours", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Recipient(ctx, "<alice@example.org>"); err != nil {
				b.Fatal(err)
			}
		}
	})
	a := netip.MustParseAddr("192.0.2.10")
	b.Run("host", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Host(ctx, a, "mx.example.net"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestCheckerScope: every rule that changes what an answer means, and the
// directory's identity, changes Key.Scope; rules that only decide whether
// to look up do not.
func TestCheckerScope(t *testing.T) {
	base := CheckerOptions{Domains: []string{"example.com"}, RecipientDelimiter: "+", CaseFoldLocalPart: true,
		CatchAll: true, RecipientSourceID: "file:/etc/r", HostSourceID: "file:/etc/h"}
	c := newCheckerT(t, newCandidateSource(), base)
	rk, _, err := c.RecipientKey("alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	hk := c.HostKey(netip.MustParseAddr("192.0.2.1"), "")
	if len(rk.Scope) != 8 || len(hk.Scope) != 8 || rk.Scope == hk.Scope {
		t.Fatalf("scopes %q (rcpt) and %q (host); want 8 hex digits each, different", rk.Scope, hk.Scope)
	}
	for _, tt := range []struct {
		name               string
		change             func(*CheckerOptions)
		rcptSame, hostSame bool
	}{
		{"same rules", func(*CheckerOptions) {}, true, true},
		{"domains", func(o *CheckerOptions) { o.Domains = append(o.Domains, "example.org") }, true, true},
		{"always_accept", func(o *CheckerOptions) { o.AlwaysAccept = []string{"abuse"} }, true, true},
		{"catch_all", func(o *CheckerOptions) { o.CatchAll = false }, false, true},
		{"delimiter", func(o *CheckerOptions) { o.RecipientDelimiter = "+-" }, false, true},
		{"no delimiter", func(o *CheckerOptions) { o.RecipientDelimiter = "" }, false, true},
		{"case folding", func(o *CheckerOptions) { o.CaseFoldLocalPart = false }, false, true},
		{"recipient directory", func(o *CheckerOptions) { o.RecipientSourceID = "file:/etc/r2" }, false, true},
		{"host directory", func(o *CheckerOptions) { o.HostSourceID = "file:/etc/h2" }, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.change(&o)
			c2 := newCheckerT(t, newCandidateSource(), o)
			rk2, _, _ := c2.RecipientKey("alice@example.com")
			hk2 := c2.HostKey(netip.MustParseAddr("192.0.2.1"), "")
			if (rk2.Scope == rk.Scope) != tt.rcptSame || (hk2.Scope == hk.Scope) != tt.hostSame {
				t.Errorf("rcpt scope %q -> %q, host scope %q -> %q; want same: rcpt %v, host %v",
					rk.Scope, rk2.Scope, hk.Scope, hk2.Scope, tt.rcptSame, tt.hostSame)
			}
		})
	}
}

// TestCheckerScopeSeparatesCaches: a not-found given under catch_all =
// false, cached in a shared LRU (kept across a reload) or in memcached
// (shared by a fleet), never answers for catch_all = true.
func TestCheckerScopeSeparatesCaches(t *testing.T) {
	server := testserver.StartMemcached(t)
	dir := newCandidateSource("@example.com")
	strict := CheckerOptions{Domains: []string{"example.com"}, CatchAll: false, RecipientSourceID: "file:/r"}
	loose := strict
	loose.CatchAll = true
	ctx := context.Background()

	t.Run("memcached", func(t *testing.T) {
		a := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
		b := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
		ca, cb := newCheckerT(t, a.mc, strict), newCheckerT(t, b.mc, loose)
		if d, err := ca.Recipient(ctx, "nobody@example.com"); err != nil || d.Found {
			t.Fatalf("catch_all off: %+v, %v; want not found", d, err)
		}
		if d, err := ca.Recipient(ctx, "nobody@example.com"); err != nil || d.Found || d.Tier != "memcache" {
			t.Fatalf("catch_all off, again: %+v, %v; want the cached not-found", d, err)
		}
		d, err := cb.Recipient(ctx, "nobody@example.com")
		if err != nil || !d.Found || d.Tier != "map" {
			t.Errorf("catch_all on, same memcached: %+v, %v; want found by the directory", d, err)
		}
		ka, _, _ := ca.RecipientKey("nobody@example.com")
		kb, _, _ := cb.RecipientKey("nobody@example.com")
		if a.mc.ItemKey(ka) == b.mc.ItemKey(kb) {
			t.Errorf("both rule sets use the memcached key %q", a.mc.ItemKey(ka))
		}
	})

	t.Run("lru", func(t *testing.T) {
		count := &countingSource{next: dir}
		l, err := NewLRU(count, LRUOptions{Size: 100, TTL: time.Hour, NegativeTTL: time.Hour, StaleMax: time.Hour}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ca, cb := newCheckerT(t, l, strict), newCheckerT(t, l, loose)
		if d, err := ca.Recipient(ctx, "nobody@example.com"); err != nil || d.Found {
			t.Fatalf("catch_all off: %+v, %v; want not found", d, err)
		}
		if d, err := cb.Recipient(ctx, "nobody@example.com"); err != nil || !d.Found || d.Tier != "map" {
			t.Errorf("catch_all on, same LRU: %+v, %v; want found by the directory", d, err)
		}
		if d, err := ca.Recipient(ctx, "nobody@example.com"); err != nil || d.Found || d.Tier != "lru" {
			t.Errorf("catch_all off, again: %+v, %v; want its own cached not-found", d, err)
		}
	})
}

// TestCheckerCountsLookups: one antespam_lookups_total count per decision,
// by the tier that answered and the result.
func TestCheckerCountsLookups(t *testing.T) {
	src := &switchSource{next: newCandidateSource("alice@example.com")}
	l, err := NewLRU(src, LRUOptions{Size: 10, TTL: time.Nanosecond, NegativeTTL: time.Hour, StaleMax: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newCheckerT(t, l, CheckerOptions{Domains: []string{"example.com"}})
	ctx := context.Background()
	count := func(tier, result string) float64 {
		return counterValue(t, metrics.Lookups.WithLabelValues(tier, result))
	}
	for _, tt := range []struct {
		name, addr   string
		down         bool
		tier, result string
	}{
		{"directory found", "alice@example.com", false, "map", "found"},
		{"directory not found", "bob@example.com", false, "map", "not_found"},
		{"lru not found", "bob@example.com", false, "lru", "not_found"},
		{"stale", "alice@example.com", true, "lru", "stale"},
		{"error", "carol@example.com", true, "error", "error"},
		{"not ours", "alice@example.org", false, TierNotOurs, "found"},
		{"always", "postmaster@example.com", false, TierAlways, "found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src.down.Store(tt.down)
			before := count(tt.tier, tt.result)
			_, err := c.Recipient(ctx, tt.addr)
			if (err != nil) != (tt.result == "error") {
				t.Fatalf("Recipient(%q): %v", tt.addr, err)
			}
			if got := count(tt.tier, tt.result) - before; got != 1 {
				t.Errorf("lookups{tier=%q,result=%q} went up by %v, want 1", tt.tier, tt.result, got)
			}
		})
	}
	before := count(tierError, "error")
	if _, err := c.Recipient(ctx, "bad address"); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("bad address: %v", err)
	}
	if got := count(tierError, "error") - before; got != 0 {
		t.Errorf("a malformed address counted as a lookup error")
	}
}

// TestCheckerNamesKeyOnce: the error of a failed lookup names the key
// once, whether or not a tier below already did.
func TestCheckerNamesKeyOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range []struct {
		name string
		src  Source
	}{
		{"plain error", &switchSource{next: newCandidateSource()}},
		{"coalesced, cancelled", NewCoalesce(newCandidateSource(), nil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if s, ok := tt.src.(*switchSource); ok {
				s.down.Store(true)
			}
			c := newCheckerT(t, tt.src, CheckerOptions{})
			_, err := c.Recipient(ctx, "alice@example.com")
			if err == nil {
				t.Fatal("no error")
			}
			if n := strings.Count(err.Error(), "alice@example.com"); n != 1 {
				t.Errorf("error %q names the key %d times, want once", err, n)
			}
		})
	}
}
