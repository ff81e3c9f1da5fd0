package lookup

import (
	"context"
	"net/netip"
	"time"
)

// Decision is the Checker's answer to one question.
type Decision struct {
	// Item is what was asked, normalised: the address, or "IP [hostname]".
	Item string
	// Found: the recipient is accepted (exists, not one of our domains, or
	// always accepted), or the host is listed as malign.
	Found bool
	// Tier names who answered: "lru", "memcache", "ldap", "file",
	// "not-ours" (a domain we do not check) or "always" (postmaster and
	// always_accept).
	Tier string
	// Stale: a found answer past its TTL bridged a directory failure.
	Stale bool
	// Duration is how long the question took.
	Duration time.Duration
}

// CheckerOptions are the recipient rules ([recipients] in the config).
type CheckerOptions struct {
	// Domains checked; empty means every domain.
	Domains []string
	// RecipientDelimiter is a set of characters, each a delimiter (Postfix).
	RecipientDelimiter string
	CaseFoldLocalPart  bool
	CatchAll           bool
	// AlwaysAccept lists local parts accepted in every checked domain,
	// besides postmaster, which always is (RFC 5321 section 4.5.1).
	AlwaysAccept []string
}

// Checker turns a recipient address or a client host into a Key, asks its
// Source and says what it found. It is what the milter and the check
// command call: one code path for both.
type Checker struct {
	src  Source
	opts CheckerOptions
	// filled by NewChecker: normalised domain set (A- and U-labels), etc.
	domains map[string]bool
	always  map[string]bool
}

// Recipient decides whether addr (as given to RCPT TO, with or without
// angle brackets) exists. A malformed address is an error.
func (c *Checker) Recipient(ctx context.Context, addr string) (Decision, error) {
	panic("implemented in keys work")
}

// Host decides whether the client at addr, with the hostname the MTA
// resolved (or "" / "unknown" / "[addr]" when it has none), is listed.
func (c *Checker) Host(ctx context.Context, addr netip.Addr, hostname string) (Decision, error) {
	panic("implemented in keys work")
}
