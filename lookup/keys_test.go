package lookup

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		fold        bool
		local, dom  string
		wantErrText string // "" means no error
	}{
		{name: "plain", in: "alice@example.com", fold: true, local: "alice", dom: "example.com"},
		{name: "brackets and spaces", in: "  <Alice@Example.COM>  ", fold: true, local: "alice", dom: "example.com"},
		{name: "no fold keeps case", in: "<Alice@Example.COM>", fold: false, local: "Alice", dom: "example.com"},
		{name: "extension kept", in: "bob+news@example.com", fold: true, local: "bob+news", dom: "example.com"},
		{name: "trailing dot", in: "a@example.com.", fold: true, local: "a", dom: "example.com"},
		{name: "quoted needing no quotes", in: `"john.doe"@example.com`, fold: true, local: "john.doe", dom: "example.com"},
		{name: "quoted with space", in: `"John Doe"@example.com`, fold: true, local: `"john doe"`, dom: "example.com"},
		{name: "quoted with at", in: `"a@b"@example.com`, fold: true, local: `"a@b"`, dom: "example.com"},
		{name: "quoted pair", in: `"a\"b"@example.com`, fold: true, local: `"a\"b"`, dom: "example.com"},
		{name: "quoted pair needing nothing", in: `"a\b"@example.com`, fold: true, local: "ab", dom: "example.com"},
		{name: "unquoted at splits at last", in: "a@b@example.com", fold: true, local: `"a@b"`, dom: "example.com"},
		{name: "double dot kept", in: "john..doe@example.com", fold: true, local: "john..doe", dom: "example.com"},
		{name: "utf8 local folded", in: "ÉLODIE@example.com", fold: true, local: "élodie", dom: "example.com"},
		{name: "utf8 local kept", in: "ÉLODIE@example.com", fold: false, local: "ÉLODIE", dom: "example.com"},
		{name: "idn u-label", in: "user@Bücher.example", fold: true, local: "user", dom: "xn--bcher-kva.example"},
		{name: "idn a-label", in: "user@XN--BCHER-KVA.example", fold: true, local: "user", dom: "xn--bcher-kva.example"},
		{name: "source route", in: "<@relay.example,@b.example:user@example.com>", fold: true, local: "user", dom: "example.com"},
		{name: "ipv4 literal", in: "u@[192.0.2.1]", fold: true, local: "u", dom: "[192.0.2.1]"},
		{name: "ipv6 literal", in: "u@[IPv6:2001:DB8::1]", fold: true, local: "u", dom: "[ipv6:2001:db8::1]"},
		{name: "underscore domain", in: "u@my_host.example", fold: true, local: "u", dom: "my_host.example"},

		{name: "null sender", in: "<>", wantErrText: "empty"},
		{name: "empty", in: "   ", wantErrText: "empty"},
		{name: "no at", in: "alice", wantErrText: "no @domain"},
		{name: "empty local", in: "@example.com", wantErrText: "no local part"},
		{name: "empty quoted local", in: `""@example.com`, wantErrText: "empty local part"},
		{name: "empty domain", in: "alice@", wantErrText: "empty domain"},
		{name: "unbalanced bracket", in: "<alice@example.com", wantErrText: "angle brackets"},
		{name: "unbalanced bracket end", in: "alice@example.com>", wantErrText: "angle brackets"},
		{name: "CR LF", in: "alice@example.com\r\nRSET", wantErrText: "control character"},
		{name: "LF in local", in: "ali\nce@example.com", wantErrText: "control character"},
		{name: "NUL", in: "alice\x00@example.com", wantErrText: "control character"},
		{name: "NUL after UTF-8", in: "é\x00@example.com", wantErrText: "control character"},
		{name: "CR LF after UTF-8 domain", in: "a@bücher.example\r\nRSET", wantErrText: "control character"},
		{name: "C1 control", in: "alice\u0085x@example.com", wantErrText: "control character"},
		{name: "line separator", in: "alice\u2028@example.com", wantErrText: "control character"},
		{name: "invalid utf8", in: "al\xffice@example.com", wantErrText: "invalid UTF-8"},
		{name: "unquoted space", in: "john doe@example.com", wantErrText: "outside quotes"},
		{name: "unterminated quote", in: `"john@example.com`, wantErrText: "unterminated"},
		{name: "junk after quote", in: `"john"x@example.com`, wantErrText: "no @ after"},
		{name: "300-byte local", in: strings.Repeat("a", 300) + "@example.com", wantErrText: "local part longer"},
		{name: "folding makes it too long", in: strings.Repeat("Ⱥ", 100) + "@example.com", fold: true, wantErrText: "local part longer"},
		{name: "600 bytes", in: strings.Repeat("a", 590) + "@example.com", wantErrText: "longer than 512"},
		{name: "long label", in: "a@" + strings.Repeat("b", 64) + ".com", wantErrText: "label longer"},
		{name: "bad domain char", in: "a@exa mple.com", wantErrText: "domain holds"},
		{name: "empty label", in: "a@example..com", wantErrText: "empty label"},
		{name: "bad literal", in: "a@[300.1.1.1]", wantErrText: "literal"},
		{name: "bad punycode", in: "a@xn--zz-.example", wantErrText: "domain"},
		{name: "route without colon", in: "@a.example", wantErrText: "no local part"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, dom, err := NormalizeAddress(tt.in, tt.fold)
			if tt.wantErrText != "" {
				if err == nil {
					t.Fatalf("NormalizeAddress(%q) = %q, %q; want an error", tt.in, local, dom)
				}
				if !errors.Is(err, ErrBadAddress) {
					t.Errorf("error %v does not wrap ErrBadAddress", err)
				}
				if !strings.Contains(err.Error(), tt.wantErrText) {
					t.Errorf("error %q does not mention %q", err, tt.wantErrText)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeAddress(%q): %v", tt.in, err)
			}
			if local != tt.local || dom != tt.dom {
				t.Errorf("NormalizeAddress(%q) = %q, %q; want %q, %q", tt.in, local, dom, tt.local, tt.dom)
			}
			// Normalising the result again changes nothing.
			l2, d2, err := NormalizeAddress(local+"@"+dom, tt.fold)
			if err != nil || l2 != local || d2 != dom {
				t.Errorf("again: %q, %q, %v", l2, d2, err)
			}
		})
	}
}

func TestDomainUnicode(t *testing.T) {
	for in, want := range map[string]string{
		"xn--bcher-kva.example": "bücher.example",
		"example.com":           "example.com",
		"xn--zz-.example":       "xn--zz-.example", // undecodable stays
	} {
		if got := DomainUnicode(in); got != want {
			t.Errorf("DomainUnicode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRecipientCandidates(t *testing.T) {
	tests := []struct {
		name       string
		local, dom string
		delims     string
		catchAll   bool
		want       []string
	}{
		{name: "plain", local: "alice", dom: "example.com", delims: "+", want: []string{"alice@example.com"}},
		{name: "catch-all", local: "alice", dom: "example.com", delims: "+", catchAll: true,
			want: []string{"alice@example.com", "@example.com"}},
		{name: "extension", local: "bob+news", dom: "example.com", delims: "+", catchAll: true,
			want: []string{"bob+news@example.com", "bob@example.com", "@example.com"}},
		{name: "first delimiter of several", local: "bob-x+y", dom: "example.com", delims: "+-",
			want: []string{"bob-x+y@example.com", "bob@example.com"}},
		{name: "other delimiter of the set", local: "bob+x-y", dom: "example.com", delims: "-+",
			want: []string{"bob+x-y@example.com", "bob@example.com"}},
		{name: "leading delimiter", local: "+bob", dom: "example.com", delims: "+",
			want: []string{"+bob@example.com"}},
		{name: "trailing delimiter", local: "bob+", dom: "example.com", delims: "+",
			want: []string{"bob+@example.com", "bob@example.com"}},
		{name: "no delimiters configured", local: "bob+news", dom: "example.com",
			want: []string{"bob+news@example.com"}},
		{name: "quoted base requoted", local: `"john doe+x"`, dom: "example.com", delims: "+",
			want: []string{`"john doe+x"@example.com`, `"john doe"@example.com`}},
		{name: "quoted base needing no quotes", local: `"a@b+x"`, dom: "example.com", delims: "+",
			want: []string{`"a@b+x"@example.com`, `"a@b"@example.com`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RecipientCandidates(tt.local, tt.dom, tt.delims, tt.catchAll)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHostCandidates(t *testing.T) {
	tests := []struct {
		name     string
		addr     string
		hostname string
		wantName string
		want     []string
	}{
		{name: "ipv4", addr: "192.0.2.10", wantName: "192.0.2.10",
			want: []string{"192.0.2.10", "192.0.2", "192.0.2.0/24", "192.0", "192.0.0.0/16", "192", "192.0.0.0/8"}},
		{name: "ipv4-mapped", addr: "::ffff:198.51.100.7", hostname: "unknown", wantName: "198.51.100.7",
			want: []string{"198.51.100.7", "198.51.100", "198.51.100.0/24", "198.51", "198.51.0.0/16", "198", "198.0.0.0/8"}},
		{name: "ipv6", addr: "2001:db8:1:2:3:4:5:6", wantName: "2001:db8:1:2:3:4:5:6",
			want: []string{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", "2001:db8:1::/56", "2001:db8:1::/48"}},
		{name: "ipv6 /56 boundary", addr: "2001:db8:1:2ff::1", wantName: "2001:db8:1:2ff::1",
			want: []string{"2001:db8:1:2ff::1", "2001:db8:1:2ff::/64", "2001:db8:1:200::/56", "2001:db8:1::/48"}},
		{name: "ipv6 zone dropped", addr: "fe80::1%eth0", wantName: "fe80::1",
			want: []string{"fe80::1", "fe80::/64", "fe80::/56", "fe80::/48"}},
		{name: "hostname parents", addr: "10.1.2.3", hostname: "MX.Bad.Example.NET.", wantName: "10.1.2.3 mx.bad.example.net",
			want: []string{"10.1.2.3", "10.1.2", "10.1.2.0/24", "10.1", "10.1.0.0/16", "10", "10.0.0.0/8",
				"mx.bad.example.net", "bad.example.net", "example.net"}},
		{name: "two-label hostname", addr: "10.1.2.3", hostname: "example.net", wantName: "10.1.2.3 example.net",
			want: []string{"10.1.2.3", "10.1.2", "10.1.2.0/24", "10.1", "10.1.0.0/16", "10", "10.0.0.0/8", "example.net"}},
		{name: "bracketed hostname ignored", addr: "10.1.2.3", hostname: "[10.1.2.3]", wantName: "10.1.2.3",
			want: []string{"10.1.2.3", "10.1.2", "10.1.2.0/24", "10.1", "10.1.0.0/16", "10", "10.0.0.0/8"}},
		{name: "unknown ignored", addr: "10.1.2.3", hostname: "unknown", wantName: "10.1.2.3"},
		{name: "Unknown. ignored", addr: "10.1.2.3", hostname: " Unknown. ", wantName: "10.1.2.3"},
		{name: "numeric hostname ignored", addr: "10.1.2.3", hostname: "evil.1.2", wantName: "10.1.2.3"},
		{name: "hostname with CRLF ignored", addr: "10.1.2.3", hostname: "a.example\r\nb", wantName: "10.1.2.3"},
		{name: "hostname with space ignored", addr: "10.1.2.3", hostname: "a b.example", wantName: "10.1.2.3"},
		{name: "hostname with NUL ignored", addr: "10.1.2.3", hostname: "a\x00.example", wantName: "10.1.2.3"},
		{name: "hostname invalid utf8 ignored", addr: "10.1.2.3", hostname: "a\xff.example", wantName: "10.1.2.3"},
		{name: "hostname empty label ignored", addr: "10.1.2.3", hostname: "a..example", wantName: "10.1.2.3"},
		{name: "hostname too long ignored", addr: "10.1.2.3", hostname: strings.Repeat("a.", 150) + "example", wantName: "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			got := HostCandidates(a, tt.hostname)
			want := tt.want
			if want == nil {
				want = HostCandidates(a, "")
			}
			if !slices.Equal(got, want) {
				t.Errorf("HostCandidates = %q, want %q", got, want)
			}
			if n := HostKeyName(a, tt.hostname); n != tt.wantName {
				t.Errorf("HostKeyName = %q, want %q", n, tt.wantName)
			}
		})
	}
	if got := HostCandidates(netip.Addr{}, "mx.example.net"); !slices.Equal(got, []string{"mx.example.net", "example.net"}) {
		t.Errorf("invalid addr: got %q", got)
	}
}

func BenchmarkNormalizeAddress(b *testing.B) {
	for _, in := range []string{"<alice@example.com>", "<Alice+News@Example.COM>", "<user@bücher.example>"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := NormalizeAddress(in, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRecipientCandidates(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		RecipientCandidates("alice+news", "example.com", "+", true)
	}
}

func BenchmarkHostCandidates(b *testing.B) {
	for _, tc := range []struct{ addr, host string }{
		{"192.0.2.10", "unknown"},
		{"192.0.2.10", "mx.bad.example.net"},
		{"2001:db8:1:2::10", ""},
	} {
		a := netip.MustParseAddr(tc.addr)
		b.Run(tc.addr+"/"+tc.host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				HostCandidates(a, tc.host)
			}
		})
	}
}
