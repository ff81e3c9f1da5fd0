package lookup

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Tiny fakes for the tier tests. Each wraps the next so they compose like
// the real tiers: &countingSource{next: &switchSource{next: mapSource{...}}}.

// errDirectory is what a failing fake returns.
var errDirectory = errors.New("directory down")

// mapSource is a directory: a key is found when its Name is in the map.
// At is its clock (nil: time.Now).
type mapSource struct {
	names map[string]bool
	now   func() time.Time
}

func (s mapSource) Lookup(ctx context.Context, key Key) (Answer, error) {
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	return Answer{Found: s.names[key.Name], At: now(), Tier: "map"}, nil
}

// countingSource counts the lookups that reach next.
type countingSource struct {
	next  Source
	total atomic.Int64
}

func (s *countingSource) Lookup(ctx context.Context, key Key) (Answer, error) {
	s.total.Add(1)
	return s.next.Lookup(ctx, key)
}

func (s *countingSource) calls() int { return int(s.total.Load()) }

// switchSource fails with errDirectory while down, else asks next.
type switchSource struct {
	next Source
	down atomic.Bool
}

func (s *switchSource) Lookup(ctx context.Context, key Key) (Answer, error) {
	if s.down.Load() {
		return Answer{}, errDirectory
	}
	return s.next.Lookup(ctx, key)
}

// slowSource waits for delay (or ctx) before asking next, so that
// concurrent lookups overlap.
type slowSource struct {
	next  Source
	delay time.Duration
}

func (s slowSource) Lookup(ctx context.Context, key Key) (Answer, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return Answer{}, ctx.Err()
	}
	return s.next.Lookup(ctx, key)
}

// panicSource panics on every lookup.
type panicSource struct{}

func (panicSource) Lookup(context.Context, Key) (Answer, error) { panic("directory exploded") }

// fakeClock is a settable clock for TTL tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func rcptKey(name string) Key { return Key{Kind: Recipient, Name: name} }
