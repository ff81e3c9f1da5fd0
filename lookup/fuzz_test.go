package lookup

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// badKeyText reports text that must never reach a key: control
// characters (CR, LF, NUL...) and invalid UTF-8.
func badKeyText(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) })
}

func FuzzNormalizeAddress(f *testing.F) {
	for _, s := range []string{
		"alice@example.com", "<Alice+News@Example.COM>", `"john doe"@example.com`, `"a\"b"@x.example`,
		"ÉLODIE@bücher.example", "u@xn--bcher-kva.example", "<@a.example,@b.example:u@c.example>",
		"u@[192.0.2.1]", "u@[IPv6:2001:db8::1]", "<>", "", "a@b@c.example", "x\r\n@example.com",
		"a\x00@example.com", "\xff@example.com", strings.Repeat("a", 300) + "@example.com",
		"K@example.com", "İ@example.com", strings.Repeat("Ⱥ", 100) + "@example.com", "john..doe@example.com", `"a@b+x"@example.com`,
	} {
		f.Add(s, true, "+-")
		f.Add(s, false, "+")
	}
	f.Fuzz(func(t *testing.T, addr string, fold bool, delims string) {
		local, domain, err := NormalizeAddress(addr, fold)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("error %v does not wrap ErrBadAddress", err)
			}
			if badKeyText(err.Error()) {
				t.Fatalf("error text %q holds control characters", err)
			}
			return
		}
		if local == "" || domain == "" {
			t.Fatalf("empty part: %q, %q", local, domain)
		}
		name := local + "@" + domain
		if badKeyText(name) || len(name) > maxAddressLen {
			t.Fatalf("bad key %q", name)
		}
		if domain != strings.ToLower(domain) {
			t.Fatalf("domain %q is not lower case", domain)
		}
		l2, d2, err := NormalizeAddress(name, fold)
		if err != nil || l2 != local || d2 != domain {
			t.Fatalf("not idempotent: %q -> %q -> %q, %q, %v", addr, name, l2, d2, err)
		}
		if fold {
			// Folding a case-preserved result gives the folded result.
			// (Folding can shorten a local part under the length bound,
			// so the case-preserved form may be refused.)
			if lk, dk, err := NormalizeAddress(addr, false); err == nil {
				l3, d3, err := NormalizeAddress(lk+"@"+dk, true)
				if err != nil || l3 != local || d3 != domain {
					t.Fatalf("fold after = %q, %q, %v; fold at once = %q, %q", l3, d3, err, local, domain)
				}
			}
		}
		if strings.ContainsAny(delims, "@\"\\") || badKeyText(delims) {
			return
		}
		cands := RecipientCandidates(local, domain, delims, true)
		if cands[0] != name || cands[len(cands)-1] != "@"+domain {
			t.Fatalf("candidates %q for %q", cands, name)
		}
		for _, c := range cands[:len(cands)-1] {
			if badKeyText(c) {
				t.Fatalf("bad candidate %q", c)
			}
			// Every candidate but the catch-all is itself an address.
			if _, _, err := NormalizeAddress(c, fold); err != nil {
				t.Fatalf("candidate %q of %q does not parse: %v", c, name, err)
			}
		}
	})
}

func FuzzHostCandidates(f *testing.F) {
	for _, tc := range []struct{ addr, host string }{
		{"192.0.2.10", "mx.bad.example.net"}, {"::ffff:198.51.100.7", "unknown"},
		{"2001:db8:1:2:3:4:5:6", "[2001:db8::1]"}, {"10.0.0.1", "A.B.C.D.E.F.example."},
		{"10.0.0.1", "evil.1.2"}, {"10.0.0.1", "a\r\n.example"}, {"0.0.0.0", ""},
		{"255.255.255.255", "x..y"}, {"::", "\x00"}, {"fe80::1", "a b"},
	} {
		f.Add(netip.MustParseAddr(tc.addr).AsSlice(), tc.host)
	}
	f.Add([]byte{1, 2, 3}, "mx.example.net")
	f.Fuzz(func(t *testing.T, ip []byte, hostname string) {
		addr, _ := netip.AddrFromSlice(ip)
		cands := HostCandidates(addr, hostname)
		name := HostKeyName(addr, hostname)
		for _, c := range cands {
			if c == "" || badKeyText(c) || strings.ContainsAny(c, " \t") {
				t.Fatalf("bad candidate %q", c)
			}
		}
		if badKeyText(name) || strings.Count(name, " ") > 1 {
			t.Fatalf("bad name %q", name)
		}
		if !addr.IsValid() {
			return
		}
		u := addr.Unmap()
		if cands[0] != u.String() {
			t.Fatalf("first candidate %q, want %q", cands[0], u)
		}
		n := 7
		if u.Is6() {
			n = 4
		}
		for _, c := range cands[1:n] {
			if strings.Contains(c, "/") {
				p, err := netip.ParsePrefix(c)
				if err != nil || !p.Contains(u) || p != p.Masked() {
					t.Fatalf("network %q does not hold %s: %v", c, u, err)
				}
			}
		}
		// The key name determines the candidates: what caches key by is
		// enough to ask again.
		ipText, host, _ := strings.Cut(name, " ")
		a2, err := netip.ParseAddr(ipText)
		if err != nil {
			t.Fatalf("name %q: %v", name, err)
		}
		if c2 := HostCandidates(a2, host); !slices.Equal(c2, cands) {
			t.Fatalf("candidates from name %q = %q, want %q", name, c2, cands)
		}
		if HostKeyName(a2, host) != name {
			t.Fatalf("name not idempotent: %q", name)
		}
	})
}

func FuzzListLine(f *testing.F) {
	for _, s := range []string{
		"alice@example.com # Alice", "@example.net", `"john # doe"@example.com`, "foo#bar@example.com",
		"192.0.2.0/24", "10.1", "bad.example", "::ffff:10.0.0.0/104", "# comment", "1.2.3.4.5", "x\x00y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		text := listLine([]byte(line))
		if e, err := parseRecipientLine(text, true); err == nil && badKeyText(e.key) {
			t.Fatalf("recipient key %q", e.key)
		}
		if e, err := parseHostLine(text); err == nil {
			if e.prefix.IsValid() {
				if e.prefix != e.prefix.Masked() {
					t.Fatalf("prefix %s not masked", e.prefix)
				}
			} else if e.key == "" || badKeyText(e.key) || strings.ContainsAny(e.key, " \t") {
				t.Fatalf("host key %q", e.key)
			}
		}
	})
}
