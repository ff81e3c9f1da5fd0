package lookup

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/antespam/antespam-milter/metrics"
)

// LRUOptions configure the in-process cache ([cache] in the config).
type LRUOptions struct {
	// Size is the number of keys kept; 0 turns the tier into a pass-through.
	Size int
	// TTL is how long a found answer is served without asking the next tier.
	TTL time.Duration
	// NegativeTTL is the same for a not-found answer.
	NegativeTTL time.Duration
	// StaleMax is how old (since the directory gave it) a found answer may
	// be and still be served when the next tier fails.
	StaleMax time.Duration
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// LRU is the in-process cache tier. It keeps found and not-found answers
// with their own TTLs and never caches errors. Entries are not expired by
// the cache itself (the expirable LRU has a single TTL): they live until
// evicted by size, so a found answer can bridge a failure of the next tier
// for up to StaleMax after the directory gave it.
//
// A found answer is fresh for TTL from when this tier stored it: one that
// memcached has held for 50 minutes is still worth a minute in this
// process, otherwise every older memcached answer would miss here on every
// lookup. A not-found answer is fresh for NegativeTTL from when the
// directory gave it (Answer.At), so that the caches together never say "no
// such user" longer after the directory did than the longer of their
// negative TTLs. Staleness is always measured from Answer.At.
type LRU struct {
	next  Source
	cache *lru.Cache[lruKey, lruEntry] // nil when Size is 0
	opts  LRUOptions
	log   *slog.Logger
	warn  warnLimiter
	// gen is bumped by Invalidate; an entry stored under an older
	// generation is no longer fresh but still bridges an outage.
	gen atomic.Uint32
}

// lruKey is Key without Candidates. A struct key needs no string to be
// built, so a hit allocates nothing.
type lruKey struct {
	kind  Kind
	scope string
	name  string
}

// lruEntry holds no pointers (times are Unix nanoseconds, not time.Time)
// so the garbage collector has less to scan in a big cache.
type lruEntry struct {
	found  bool
	gen    uint32
	at     int64 // when the directory answered
	stored int64 // when this tier stored it
}

var (
	_ Source      = (*LRU)(nil)
	_ Invalidator = (*LRU)(nil)
)

// NewLRU returns the LRU tier in front of next. log may be nil.
func NewLRU(next Source, opts LRUOptions, log *slog.Logger) (*LRU, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &LRU{next: next, opts: opts, log: log}
	if opts.Size > 0 {
		c, err := lru.New[lruKey, lruEntry](opts.Size)
		if err != nil {
			return nil, fmt.Errorf("lru cache of %d: %w", opts.Size, err)
		}
		l.cache = c
	}
	return l, nil
}

// Lookup serves key from the cache when fresh, else asks the next tier.
// When the next tier fails, a found entry younger than StaleMax is served
// with Stale set; a not-found entry past its TTL never is.
func (l *LRU) Lookup(ctx context.Context, key Key) (Answer, error) {
	if l.cache == nil {
		return l.next.Lookup(ctx, key)
	}
	k := lruKey{kind: key.Kind, scope: key.Scope, name: key.Name}
	gen := l.gen.Load()
	now := l.opts.Now().UnixNano()
	e, cached := l.cache.Get(k)
	if cached && e.gen == gen && l.fresh(e, now) {
		return Answer{Found: e.found, At: time.Unix(0, e.at), Tier: "lru"}, nil
	}
	ans, err := l.next.Lookup(ctx, key)
	if err != nil {
		now = l.opts.Now().UnixNano()
		if cached && e.found && now-e.at < int64(l.opts.StaleMax) {
			metrics.StaleServed.Inc()
			l.log.Debug("lru: serving stale answer", "key", key.String(), "age", time.Duration(now-e.at), "err", err)
			if l.warn.allow(now) {
				l.log.Warn("lru: next tier failing, serving stale found answers", "err", err)
			}
			return Answer{Found: true, At: time.Unix(0, e.at), Tier: "lru", Stale: true}, nil
		}
		return Answer{}, err
	}
	if ans.Stale {
		// A stale answer from below is passed on but not kept: stored
		// as fresh it would hide the outage for a whole TTL.
		return ans, nil
	}
	at := ans.At
	if at.IsZero() {
		at = time.Unix(0, now)
	}
	// gen is the generation read before asking: an answer that was in
	// flight across an Invalidate is stored as already invalidated.
	l.cache.Add(k, lruEntry{found: ans.Found, gen: gen, at: at.UnixNano(), stored: now})
	return ans, nil
}

// Invalidate marks every entry stale in O(1): the next lookup of each key
// asks the next tier, yet a found entry still bridges its failure.
func (l *LRU) Invalidate() { l.gen.Add(1) }

// Len is the number of entries held, fresh or not.
func (l *LRU) Len() int {
	if l.cache == nil {
		return 0
	}
	return l.cache.Len()
}

// fresh: a found entry within TTL of being stored, a not-found one within
// NegativeTTL of the directory's answer (or of being stored, when that is
// earlier: a clock ahead of ours does not stretch it).
func (l *LRU) fresh(e lruEntry, now int64) bool {
	if e.found {
		return now-e.stored < int64(l.opts.TTL)
	}
	return now-min(e.at, e.stored) < int64(l.opts.NegativeTTL)
}

// warnLimiter lets through at most one warning per second, so that a
// failing dependency under load logs a line a second, not one a lookup.
type warnLimiter struct {
	last atomic.Int64 // Unix nanoseconds of the last warning let through
}

func (w *warnLimiter) allow(now int64) bool {
	last := w.last.Load()
	if now-last < int64(time.Second) && last != 0 {
		return false
	}
	return w.last.CompareAndSwap(last, now)
}
