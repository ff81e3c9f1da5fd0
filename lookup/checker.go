package lookup

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antespam/antespam-milter/metrics"
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

// Tiers a Checker answers itself, without a lookup.
const (
	TierNotOurs = "not-ours"
	TierAlways  = "always"
)

// CheckerOptions are the recipient rules ([recipients] in the config).
type CheckerOptions struct {
	// Domains checked; empty means every domain. An IDN may be given in
	// either form: both its A-label and its U-label match.
	Domains []string
	// RecipientDelimiter is a set of characters, each a delimiter (Postfix).
	RecipientDelimiter string
	CaseFoldLocalPart  bool
	CatchAll           bool
	// AlwaysAccept lists local parts accepted in every checked domain,
	// besides postmaster, which always is (RFC 5321 section 4.5.1). They
	// compare without regard to case, with or without an extension.
	AlwaysAccept []string
	// RecipientSourceID and HostSourceID name the directory that answers
	// each kind: for the file source the list's path, for LDAP its URLs,
	// base DN and the kind's filter. With the rules above that change what
	// an answer means, they make Key.Scope, so that no cache serves an
	// answer given under other rules or by another directory.
	RecipientSourceID string
	HostSourceID      string
}

// Checker turns a recipient address or a client host into a Key, asks its
// Source and says what it found. It is what the milter and the check
// command call: one code path for both. It is safe for concurrent use.
type Checker struct {
	src  Source
	opts CheckerOptions
	// domains holds every checked domain in both its A-label and U-label
	// forms; nil means every domain is checked.
	domains map[string]bool
	// always holds lower-cased local parts answered without a lookup.
	always map[string]bool
	// rcptScope and hostScope are Key.Scope for each kind, computed once.
	rcptScope, hostScope string
	// rcptExpand is recipientCandidatesOf as a func value, made once so
	// that each Key gets it without an allocation.
	rcptExpand func(name string) []string
}

// NewChecker returns a Checker asking src. It fails when src is nil or a
// domain, delimiter or always-accepted local part is invalid.
func NewChecker(src Source, opts CheckerOptions) (*Checker, error) {
	if src == nil {
		return nil, errors.New("new checker: nil source")
	}
	// The config package runs the same validation for config-test.
	if errs := ValidateCheckerOptions(opts); len(errs) > 0 {
		return nil, fmt.Errorf("new checker: %w", errors.Join(errs...))
	}
	c := &Checker{src: src, opts: opts, always: map[string]bool{"postmaster": true}}
	if len(opts.Domains) > 0 {
		c.domains = make(map[string]bool, 2*len(opts.Domains))
		for _, d := range opts.Domains {
			a, _ := NormalizeDomain(strings.TrimSpace(d)) // validated above
			c.domains[a] = true
			c.domains[DomainUnicode(a)] = true
		}
	}
	for _, l := range opts.AlwaysAccept {
		c.always[strings.ToLower(l)] = true
	}
	c.rcptScope = keyScope("rcpt", opts.RecipientDelimiter, strconv.FormatBool(opts.CatchAll),
		strconv.FormatBool(opts.CaseFoldLocalPart), opts.RecipientSourceID)
	c.hostScope = keyScope("host", opts.HostSourceID)
	c.rcptExpand = c.recipientCandidatesOf
	return c, nil
}

// keyScope is a Key.Scope: 8 hex digits of the FNV-1a hash of the fields,
// each length-prefixed so that no two field lists hash the same text.
// Domains and AlwaysAccept are not part of it: they decide whether a
// lookup is made, not what its answer means.
func keyScope(fields ...string) string {
	h := fnv.New64a()
	for _, f := range fields {
		h.Write(strconv.AppendInt(nil, int64(len(f)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(f))
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h.Sum64())
	return hex.EncodeToString(b[:4])
}

// Recipient decides whether addr (as given to RCPT TO, with or without
// angle brackets) exists. A malformed address is an error wrapping
// ErrBadAddress; any other error comes from the Source and means "don't
// know".
func (c *Checker) Recipient(ctx context.Context, addr string) (Decision, error) {
	start := time.Now()
	key, tier, err := c.recipientKey(addr)
	if err != nil {
		return Decision{Duration: time.Since(start)}, err
	}
	if tier != "" {
		countLookup(tier, resultFound)
		return Decision{Item: key.Name, Found: true, Tier: tier, Duration: time.Since(start)}, nil
	}
	return c.ask(ctx, key, start)
}

// RecipientKey returns the Key that Recipient looks up for addr and
// whether it needs a lookup at all (false for a domain that is not ours,
// postmaster and always-accepted local parts; Key.Name is still set). The
// cache purge command uses it to delete exactly what a lookup stores.
func (c *Checker) RecipientKey(addr string) (Key, bool, error) {
	key, tier, err := c.recipientKey(addr)
	return key, err == nil && tier == "", err
}

// recipientKey is the one derivation of a recipient Key. tier is set when
// the Checker answers itself.
func (c *Checker) recipientKey(addr string) (key Key, tier string, err error) {
	local, domain, err := NormalizeAddress(addr, c.opts.CaseFoldLocalPart)
	if err != nil {
		return Key{}, "", err
	}
	key = Key{Kind: Recipient, Scope: c.rcptScope, Name: local + "@" + domain}
	if c.domains != nil && !c.domains[domain] {
		return key, TierNotOurs, nil
	}
	if c.alwaysAccepted(local) {
		return key, TierAlways, nil
	}
	key.expand = c.rcptExpand
	return key, "", nil
}

// recipientCandidatesOf derives a recipient Key's candidates from its Name,
// local@domain (a domain holds no '@'), when a directory needs them.
func (c *Checker) recipientCandidatesOf(name string) []string {
	at := strings.LastIndexByte(name, '@')
	if at < 0 {
		return []string{name}
	}
	cands := recipientCandidates(name, at, c.opts.RecipientDelimiter, c.opts.CatchAll)
	if domain := name[at+1:]; DomainUnicode(domain) != domain {
		// A directory may hold an IDN address in either form; the key
		// stays the A-label, the candidates cover both.
		cands = append(cands, RecipientCandidates(name[:at], DomainUnicode(domain), c.opts.RecipientDelimiter, c.opts.CatchAll)...)
	}
	return cands
}

// alwaysAccepted: postmaster and the AlwaysAccept local parts, in any case
// and with any extension (abuse+report is abuse's mail).
func (c *Checker) alwaysAccepted(local string) bool {
	content := unquoteLocal(local)
	if c.always[content] || c.always[strings.ToLower(content)] {
		return true
	}
	if c.opts.RecipientDelimiter != "" {
		if i := strings.IndexAny(content, c.opts.RecipientDelimiter); i > 0 {
			return c.always[strings.ToLower(content[:i])]
		}
	}
	return false
}

// Host decides whether the client at addr, with the hostname the MTA
// resolved (or "" / "unknown" / "[addr]" when it has none), is listed. An
// invalid addr is an error wrapping ErrBadAddress.
func (c *Checker) Host(ctx context.Context, addr netip.Addr, hostname string) (Decision, error) {
	start := time.Now()
	if !addr.IsValid() {
		return Decision{Duration: time.Since(start)}, badAddress("invalid client IP address")
	}
	return c.ask(ctx, c.HostKey(addr, hostname), start)
}

// HostKey returns the Key that Host looks up for a client: Name is
// HostKeyName, Candidates HostCandidates. addr must be valid, as Host
// requires.
func (c *Checker) HostKey(addr netip.Addr, hostname string) Key {
	addr = addr.Unmap().WithZone("")
	h := NormalizeHostname(hostname)
	cands := hostCandidates(addr, h)
	var name string
	switch {
	case !addr.IsValid():
		name = hostKeyName(addr, h)
	case h == "":
		// The IP text is already the first candidate: reuse it.
		name = cands[0]
	default:
		name = cands[0] + " " + h
	}
	return Key{Kind: Host, Scope: c.hostScope, Name: name, Candidates: cands}
}

// ask looks key up in the Source and counts the answer in
// metrics.Lookups.
func (c *Checker) ask(ctx context.Context, key Key, start time.Time) (Decision, error) {
	ans, err := c.src.Lookup(ctx, key)
	d := Decision{Item: key.Name, Duration: time.Since(start)}
	if err != nil {
		countLookup(tierError, resultError)
		return d, fmt.Errorf("look up %s: %w", key.String(), err)
	}
	d.Found, d.Tier, d.Stale = ans.Found, ans.Tier, ans.Stale
	switch {
	case ans.Stale:
		countLookup(ans.Tier, resultStale)
	case ans.Found:
		countLookup(ans.Tier, resultFound)
	default:
		countLookup(ans.Tier, resultNotFound)
	}
	return d, nil
}

// Results of metrics.Lookups, as indexes into lookupCounters.
const (
	resultFound = iota
	resultNotFound
	resultStale
	resultError
	numResults
)

var resultNames = [numResults]string{"found", "not_found", "stale", "error"}

// tierError is the tier label of a failed lookup: the Checker does not
// know which tier failed (the error says).
const tierError = "error"

// lookupCounters holds the metrics.Lookups series resolved once, so that
// counting a decision is a map read and an atomic add. Only the pairs that
// occur are made (a not-ours answer is always found); any other pair, such
// as a test's fake tier, is resolved when first used and kept in
// otherCounters.
var lookupCounters = func() map[string]*[numResults]prometheus.Counter {
	m := map[string]*[numResults]prometheus.Counter{}
	add := func(tier string, results ...int) {
		var cs [numResults]prometheus.Counter
		for _, r := range results {
			cs[r] = metrics.Lookups.WithLabelValues(tier, resultNames[r])
		}
		m[tier] = &cs
	}
	add("lru", resultFound, resultNotFound, resultStale)
	add("memcache", resultFound, resultNotFound, resultStale)
	add("ldap", resultFound, resultNotFound)
	add("file", resultFound, resultNotFound)
	add(TierNotOurs, resultFound)
	add(TierAlways, resultFound)
	add(tierError, resultError)
	return m
}()

// otherCounters maps a tierResult missing from lookupCounters to its
// prometheus.Counter.
var otherCounters sync.Map

type tierResult struct {
	tier   string
	result int
}

// countLookup counts one decision in metrics.Lookups.
func countLookup(tier string, result int) {
	if cs := lookupCounters[tier]; cs != nil && cs[result] != nil {
		cs[result].Inc()
		return
	}
	k := tierResult{tier, result}
	c, ok := otherCounters.Load(k)
	if !ok {
		c, _ = otherCounters.LoadOrStore(k, metrics.Lookups.WithLabelValues(tier, resultNames[result]))
	}
	c.(prometheus.Counter).Inc()
}
