package lookup

import (
	"context"
	"time"
)

// Kind says which question a Key asks.
type Kind uint8

const (
	// Recipient asks whether a recipient address exists.
	Recipient Kind = iota + 1
	// Host asks whether a client host is listed as malign.
	Host
)

func (k Kind) String() string {
	switch k {
	case Recipient:
		return "rcpt"
	case Host:
		return "host"
	}
	return "unknown"
}

// Key is one question for the tiers. Name is the canonical form, the same in
// every tier (LRU key, memcached key, singleflight key): the normalised
// address for a Recipient, "IP" or "IP hostname" for a Host. Candidates are
// what a directory looks for, most specific first (user+ext@d, user@d, @d
// for a recipient; the address, its networks, the hostname and its parents
// for a host): the key is found when any candidate is listed. Candidates are
// derived from Name by the Checker under its rules, so caches key by Kind,
// Scope and Name.
//
// Scope names the rules and the directory that give Name its meaning: the
// Checker sets it to a short hash of the recipient delimiters, catch_all,
// case folding and the directory's identity (for a Recipient) or of the
// directory's identity alone (for a Host). An answer cached under one rule
// set is never served under another, in this process or across a fleet
// sharing memcached.
type Key struct {
	Kind       Kind
	Scope      string
	Name       string
	Candidates []string
	// expand derives the candidates from Name when Candidates is nil: the
	// Checker leaves a recipient's to it, so that an answer from a cache
	// (most answers) costs no candidate list.
	expand func(name string) []string
}

// Expand returns what a directory looks for: Candidates, or their
// derivation from Name when the Checker left them to be derived.
func (k Key) Expand() []string {
	if k.Candidates == nil && k.expand != nil {
		return k.expand(k.Name)
	}
	return k.Candidates
}

// String names the key in coalescing, logs and errors: "rcpt:" or "host:"
// and Name, with the Scope after the kind when set ("rcpt/1a2b3c4d:" and
// Name), so that lookups under different rules are never merged.
func (k Key) String() string {
	if k.Scope == "" {
		return k.Kind.String() + ":" + k.Name
	}
	return k.Kind.String() + "/" + k.Scope + ":" + k.Name
}

// Answer is what a tier knows of a Key. A miss (Found false) is an answer,
// not an error: an error means "don't know".
type Answer struct {
	// Found: the recipient exists, or the host is listed.
	Found bool
	// At is when the directory gave this answer; caches keep it, so the
	// age of an answer is the same whichever tier serves it.
	At time.Time
	// Tier names who answered: "lru", "memcache", "ldap", "file".
	Tier string
	// Stale is true when a cached found answer past its TTL was served
	// because the directory failed.
	Stale bool
}

// Source answers a Key. Every tier is a Source and most wrap another one;
// they are composed once, in main. Implementations are safe for concurrent
// use and honour ctx's deadline.
type Source interface {
	Lookup(ctx context.Context, key Key) (Answer, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, key Key) (Answer, error)

// Lookup calls f.
func (f SourceFunc) Lookup(ctx context.Context, key Key) (Answer, error) { return f(ctx, key) }

// Invalidator is implemented by caching tiers that can mark every entry
// stale (SIGHUP): the next lookup asks the next tier again, yet a found
// answer can still bridge a directory outage.
type Invalidator interface {
	Invalidate()
}
