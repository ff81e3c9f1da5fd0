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
	for _, c := range key.Candidates {
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
				if got := src.keys[0]; got.Kind != Recipient || got.Name != key.Name || !slices.Equal(got.Candidates, key.Candidates) {
					t.Errorf("looked up %+v, RecipientKey gives %+v", got, key)
				}
			}
			if tt.wantCands != nil && !slices.Equal(key.Candidates, tt.wantCands) {
				t.Errorf("candidates %q, want %q", key.Candidates, tt.wantCands)
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
