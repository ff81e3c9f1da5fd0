package lookup

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrBadAddress is wrapped by every error about a malformed address or
// client IP: the input itself is wrong, so asking again will not help and
// no lookup was made. Any other error from a Checker comes from its Source
// and means "don't know" (451). Callers tell them apart with errors.Is;
// what to answer a malformed address is the milter's choice.
var ErrBadAddress = errors.New("malformed address")

// Bounds on what NormalizeAddress accepts. RFC 5321 section 4.5.3.1 limits
// a local part to 64 octets and a domain to 255; long VERP and SRS local
// parts exceed 64 in practice, so the local part is allowed more, but every
// input stays bounded before anything is derived from it.
const (
	maxAddressLen = 512
	maxLocalLen   = 255
	maxDomainLen  = 255
)

func badAddress(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadAddress}, args...)...)
}

// NormalizeAddress splits a recipient address (as given to RCPT TO, with or
// without angle brackets) into its canonical local part and domain.
//
// The domain is lower-cased, and an internationalised domain is returned as
// its A-label (xn--) form, whichever form was given; DomainUnicode gives the
// U-label form back. A domain literal is kept as "[192.0.2.1]" or
// "[ipv6:2001:db8::1]". The local part keeps its case unless caseFoldLocal
// (Unicode lower-casing). A quoted local part is unquoted and quoted again
// only when its content needs it, so "john.doe"@x and john.doe@x are the
// same address. A source route (@a,@b:user@d) is dropped, as RFC 5321
// section 4.1.1.3 allows.
//
// Errors wrap ErrBadAddress: the null sender <>, an empty local part,
// control characters (CR, LF, NUL...), invalid UTF-8, unquoted spaces,
// unbalanced brackets or quotes, and addresses over 512 bytes.
func NormalizeAddress(addr string, caseFoldLocal bool) (local, domain string, err error) {
	if len(addr) > 2*maxAddressLen {
		// Refused before trimming, so that no work scales with the input.
		return "", "", badAddress("longer than %d bytes", maxAddressLen)
	}
	s := strings.TrimSpace(addr)
	if len(s) > maxAddressLen {
		return "", "", badAddress("longer than %d bytes", maxAddressLen)
	}
	if strings.HasPrefix(s, "<") {
		if !strings.HasSuffix(s, ">") {
			return "", "", badAddress("unbalanced angle brackets")
		}
		s = s[1 : len(s)-1]
	} else if strings.HasSuffix(s, ">") {
		return "", "", badAddress("unbalanced angle brackets")
	}
	if s == "" {
		return "", "", badAddress("empty (null sender)")
	}
	if err := checkText(s); err != nil {
		return "", "", err
	}
	if s[0] == '@' {
		// A source route: everything up to the first colon. Route domains
		// hold no quotes or colons, so the first colon ends the route.
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return "", "", badAddress("no local part")
		}
		s = s[i+1:]
	}

	var content string // the local part, unquoted
	var rest string
	if s != "" && s[0] == '"' {
		end, unq, ok := scanQuoted(s)
		if !ok {
			return "", "", badAddress("unterminated quoted local part")
		}
		if end >= len(s) || s[end] != '@' {
			return "", "", badAddress("no @ after the quoted local part")
		}
		content, rest = unq, s[end+1:]
	} else {
		at := strings.LastIndexByte(s, '@')
		if at < 0 {
			return "", "", badAddress("no @domain")
		}
		content, rest = s[:at], s[at+1:]
		if strings.ContainsAny(content, " \t\"\\") {
			return "", "", badAddress("space, quote or backslash outside quotes in the local part")
		}
	}
	if content == "" {
		return "", "", badAddress("empty local part")
	}
	if caseFoldLocal {
		content = strings.ToLower(content)
	}
	// Checked after folding, which can change the length (U+023A is two
	// bytes, its lower case three), so the result passes again.
	if len(content) > maxLocalLen {
		return "", "", badAddress("local part longer than %d bytes", maxLocalLen)
	}
	// Quotes are kept only where needed, so that "john.doe"@x and
	// john.doe@x are one key.
	local = content
	if needsQuoting(content) {
		local = quoteLocal(content)
	}
	domain, err = normalizeDomain(rest)
	if err != nil {
		return "", "", err
	}
	// Quoting and A-labels can make the result longer than the input; the
	// bound holds for the result too, so normalising it again succeeds.
	if len(local)+1+len(domain) > maxAddressLen {
		return "", "", badAddress("longer than %d bytes", maxAddressLen)
	}
	return local, domain, nil
}

// checkText rejects what no part of an address may hold: control
// characters (CR and LF above all, which could smuggle lines into logs or
// replies) and invalid UTF-8.
func checkText(s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return badAddress("control character 0x%02x at byte %d", c, i)
		}
		if c >= utf8.RuneSelf {
			if !utf8.ValidString(s[i:]) {
				return badAddress("invalid UTF-8")
			}
			// From here on, rune by rune: control characters in ASCII
			// and above it (C1, U+0080-U+009F), and the Unicode line and
			// paragraph separators.
			for j, r := range s[i:] {
				if r < 0x20 || r >= 0x7f && r <= 0x9f || r == 0x2028 || r == 0x2029 {
					return badAddress("control character U+%04X at byte %d", r, i+j)
				}
			}
			return nil
		}
	}
	return nil
}

// scanQuoted reads the quoted string at the start of s (s[0] == '"') and
// returns the index just past the closing quote and the content with its
// quoted-pairs resolved. The content is a substring of s unless it held a
// backslash.
func scanQuoted(s string) (end int, content string, ok bool) {
	var b []byte
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '"':
			if b == nil {
				return i + 1, s[1:i], true
			}
			return i + 1, string(b), true
		case '\\':
			if b == nil {
				b = append(make([]byte, 0, len(s)), s[1:i]...)
			}
			i++
			if i == len(s) {
				return 0, "", false
			}
			b = append(b, s[i])
		default:
			if b != nil {
				b = append(b, s[i])
			}
		}
	}
	return 0, "", false
}

// needsQuoting reports whether a local part must be quoted to be read back
// as itself: it holds a space, a quote, a backslash or another RFC 5322
// special. Dots are not judged: john..doe is written unquoted, as mail
// systems and directories store it.
func needsQuoting(content string) bool {
	return content == "" || strings.ContainsAny(content, " \t\"\\@(),:;<>[]")
}

// quoteLocal quotes content, escaping quotes and backslashes.
func quoteLocal(content string) string {
	var b strings.Builder
	b.Grow(len(content) + 2)
	b.WriteByte('"')
	for i := 0; i < len(content); i++ {
		if c := content[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(content[i])
	}
	b.WriteByte('"')
	return b.String()
}

// unquoteLocal is the inverse of the quoting NormalizeAddress applies.
func unquoteLocal(local string) string {
	if len(local) < 2 || local[0] != '"' {
		return local
	}
	if _, content, ok := scanQuoted(local); ok {
		return content
	}
	return local
}

// NormalizeDomain returns the canonical form of a domain as in
// NormalizeAddress: lower case, A-label for an IDN, one trailing dot
// dropped, domain literals canonicalised. Errors wrap ErrBadAddress.
func NormalizeDomain(d string) (string, error) {
	if err := checkText(d); err != nil {
		return "", err
	}
	return normalizeDomain(d)
}

// normalizeDomain is NormalizeDomain for text already checked by checkText.
func normalizeDomain(d string) (string, error) {
	if d == "" {
		return "", badAddress("empty domain")
	}
	if len(d) > maxDomainLen {
		return "", badAddress("domain longer than %d bytes", maxDomainLen)
	}
	if d[0] == '[' {
		return normalizeLiteral(d)
	}
	d = strings.TrimSuffix(d, ".")
	ascii := true
	for i := 0; i < len(d); i++ {
		if d[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// The common case needs no IDNA processing (and no allocation when
		// the domain is already lower case), unless a label is an A-label,
		// which is validated by decoding it.
		d = strings.ToLower(d)
		if err := checkHostname(d); err != nil {
			return "", err
		}
		if !strings.Contains(d, "xn--") {
			return d, nil
		}
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", badAddress("domain: %v", err)
	}
	a = strings.ToLower(a)
	if len(a) > maxDomainLen {
		return "", badAddress("domain longer than %d bytes", maxDomainLen)
	}
	if err := checkHostname(a); err != nil {
		return "", err
	}
	return a, nil
}

// normalizeLiteral canonicalises an address literal: [192.0.2.1] or
// [IPv6:2001:db8::1] (written [ipv6:...], as domains are lower case).
func normalizeLiteral(d string) (string, error) {
	if len(d) < 3 || d[len(d)-1] != ']' {
		return "", badAddress("unterminated domain literal")
	}
	in := d[1 : len(d)-1]
	if len(in) > 5 && strings.EqualFold(in[:5], "ipv6:") {
		a, err := netip.ParseAddr(in[5:])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", badAddress("domain literal is not an IPv6 address")
		}
		if a.Is4In6() {
			return "[" + a.Unmap().String() + "]", nil
		}
		return "[ipv6:" + a.String() + "]", nil
	}
	a, err := netip.ParseAddr(in)
	if err != nil || !a.Is4() {
		return "", badAddress("domain literal is not an IPv4 address")
	}
	return "[" + a.String() + "]", nil
}

// checkHostname checks a lower-case ASCII domain: letters, digits, hyphens
// and underscores in labels of 1 to 63 bytes.
func checkHostname(d string) error {
	if d == "" {
		return badAddress("empty domain")
	}
	label := 0
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case c == '.':
			if label == 0 {
				return badAddress("empty label in domain")
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return badAddress("domain holds %q", c)
		}
		label++
		if label > 63 {
			return badAddress("domain label longer than 63 bytes")
		}
	}
	if label == 0 {
		return badAddress("empty label in domain")
	}
	return nil
}

// DomainUnicode returns the U-label form of a canonical domain (as returned
// by NormalizeAddress), or the domain itself when it holds no A-label or
// does not decode.
func DomainUnicode(domain string) string {
	if !strings.Contains(domain, "xn--") {
		return domain
	}
	u, err := idna.Lookup.ToUnicode(domain)
	if err != nil {
		return domain
	}
	return u
}

// RecipientCandidates lists the keys a directory is asked for, in Postfix
// virtual(5) order: the address as given (user+ext@domain), the address
// without its extension (user@domain) when the local part holds one of the
// delimiters (a set of characters, as Postfix's recipient_delimiter) after
// its first character, and @domain when catchAll. The extension starts at
// the first delimiter. local and domain are canonical, as returned by
// NormalizeAddress; a quoted local part is split on its unquoted content
// and quoted again when still needed.
func RecipientCandidates(local, domain, delimiters string, catchAll bool) []string {
	return recipientCandidates(local+"@"+domain, len(local), delimiters, catchAll)
}

// recipientCandidates is RecipientCandidates for the address already
// joined, with the local part addr[:at]: the address is the first
// candidate and its tail the catch-all, with no new strings.
func recipientCandidates(addr string, at int, delimiters string, catchAll bool) []string {
	local, atDomain := addr[:at], addr[at:]
	n := 1
	base := ""
	if delimiters != "" {
		content := unquoteLocal(local)
		if i := strings.IndexAny(content, delimiters); i > 0 {
			base = content[:i]
			if needsQuoting(base) {
				base = quoteLocal(base)
			}
			n++
		}
	}
	if catchAll {
		n++
	}
	out := make([]string, 0, n)
	out = append(out, addr)
	if base != "" {
		out = append(out, base+atDomain)
	}
	if catchAll {
		out = append(out, atDomain)
	}
	return out
}

// Hostnames that say "the MTA has none": Postfix's "unknown", Sendmail's
// "[addr]".
func hostnameUsable(h string) bool {
	return h != "" && h != "unknown" && h[0] != '['
}

// NormalizeHostname returns the canonical form of a client hostname as the
// MTA gave it (lower case, no trailing dot), or "" when there is none to
// use: empty, "unknown", "[addr]", an IP address, or anything that is not
// a plausible DNS name (control characters, spaces, a numeric top-level
// label). Such a hostname is ignored, not an error: it comes from DNS, not
// from the client.
func NormalizeHostname(h string) string {
	h = strings.TrimSuffix(strings.TrimSpace(h), ".")
	if len(h) > maxDomainLen {
		return ""
	}
	h = strings.ToLower(h)
	if !hostnameUsable(h) {
		return ""
	}
	// PTR names are ASCII (A-labels); anything else is not a hostname.
	last := 0
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 {
				return ""
			}
			label = 0
			last = i + 1
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return ""
		}
		label++
		if label > 63 {
			return ""
		}
	}
	if label == 0 {
		return ""
	}
	// A numeric last label means an IP address or part of one: its
	// "parents" would read as IPv4 prefixes (1.2.3 and 2.3) and could
	// match network entries.
	if strings.Trim(h[last:], "0123456789") == "" {
		return ""
	}
	return h
}

// HostKeyName is the canonical Key Name for a client: "IP" or
// "IP hostname", with the IP unmapped and without zone, and the hostname
// as NormalizeHostname gives it (omitted when unusable).
func HostKeyName(addr netip.Addr, hostname string) string {
	return hostKeyName(addr.Unmap().WithZone(""), NormalizeHostname(hostname))
}

// hostKeyName is HostKeyName for an unmapped addr and a normalised
// hostname.
func hostKeyName(addr netip.Addr, h string) string {
	if !addr.IsValid() {
		// Host refuses an invalid address; never print "invalid IP".
		return h
	}
	if h == "" {
		return addr.String()
	}
	return addr.String() + " " + h
}

// HostCandidates lists the keys a directory is asked for about a client,
// most specific first, as Postfix access(5) does: the IP address (an
// IPv4-mapped IPv6 address counts as IPv4), then its networks, for IPv4
// 192.0.2 and 192.0.2.0/24, 192.0 and 192.0.0.0/16, 192 and 192.0.0.0/8,
// for IPv6 the /64, /56 and /48 networks in CIDR form (2001:db8:1:2::/64);
// then the hostname and each parent domain down to two labels. An invalid
// addr contributes nothing; an unusable hostname (see NormalizeHostname)
// neither.
func HostCandidates(addr netip.Addr, hostname string) []string {
	return hostCandidates(addr.Unmap().WithZone(""), NormalizeHostname(hostname))
}

// hostCandidates is HostCandidates for an unmapped addr and a normalised
// hostname.
func hostCandidates(addr netip.Addr, h string) []string {
	n := 0
	switch {
	case addr.Is4():
		n = 7
	case addr.Is6():
		n = 4
	}
	dots := 0
	if h != "" {
		dots = strings.Count(h, ".")
		n += dots
	}
	out := make([]string, 0, n)
	// Every IP candidate is a substring of one string built at once: one
	// allocation instead of one per candidate.
	switch {
	case addr.Is4():
		var buf [64]byte
		b := addr.AppendTo(buf[:0])
		ipLen := len(b)
		d1 := bytes.IndexByte(b, '.')
		d2 := d1 + 1 + bytes.IndexByte(b[d1+1:], '.')
		d3 := bytes.LastIndexByte(b, '.')
		b = append(append(b, b[:d3]...), ".0/24"...)
		b = append(append(b, b[:d2]...), ".0.0/16"...)
		b = append(append(b, b[:d1]...), ".0.0.0/8"...)
		all := string(b)
		c24 := ipLen
		c16 := c24 + d3 + len(".0/24")
		c8 := c16 + d2 + len(".0.0/16")
		out = append(out,
			all[:ipLen],
			all[:d3], all[c24:c16],
			all[:d2], all[c16:c8],
			all[:d1], all[c8:],
		)
	case addr.Is6():
		var buf [192]byte
		b := addr.AppendTo(buf[:0])
		ends := [4]int{len(b)}
		for i, bits := range [...]int{64, 56, 48} {
			b = netip.PrefixFrom(addr, bits).Masked().AppendTo(b)
			ends[i+1] = len(b)
		}
		all := string(b)
		out = append(out, all[:ends[0]], all[ends[0]:ends[1]], all[ends[1]:ends[2]], all[ends[2]:ends[3]])
	}
	if h != "" {
		out = append(out, h)
		// Parents down to two labels: stop when one dot is left.
		for p := h; dots > 1; dots-- {
			p = p[strings.IndexByte(p, '.')+1:]
			out = append(out, p)
		}
	}
	return out
}
