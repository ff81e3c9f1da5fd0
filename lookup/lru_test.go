package lookup

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/antespam/antespam-milter/metrics"
)

const (
	testTTL      = time.Minute
	testNegTTL   = 10 * time.Second
	testStaleMax = time.Hour
)

// lruStack is an LRU over a switchable, counted map directory on a fake
// clock.
type lruStack struct {
	lru   *LRU
	sw    *switchSource
	count *countingSource
	clock *fakeClock
}

func newLRUStack(t *testing.T, size int, names ...string) *lruStack {
	t.Helper()
	clock := newFakeClock()
	m := mapSource{names: map[string]bool{}, now: clock.Now}
	for _, n := range names {
		m.names[n] = true
	}
	sw := &switchSource{next: m}
	count := &countingSource{next: sw}
	l, err := NewLRU(count, LRUOptions{Size: size, TTL: testTTL, NegativeTTL: testNegTTL, StaleMax: testStaleMax, Now: clock.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &lruStack{lru: l, sw: sw, count: count, clock: clock}
}

func TestLRUFreshHitDoesNotAskNext(t *testing.T) {
	s := newLRUStack(t, 10, "a@example.com")
	ctx := context.Background()
	first, err := s.lru.Lookup(ctx, rcptKey("a@example.com"))
	if err != nil || !first.Found || first.Tier != "map" {
		t.Fatalf("first lookup = %+v, %v; want found from map", first, err)
	}
	s.clock.Advance(time.Second)
	second, err := s.lru.Lookup(ctx, rcptKey("a@example.com"))
	if err != nil || !second.Found || second.Tier != "lru" || !second.At.Equal(first.At) {
		t.Fatalf("second lookup = %+v, %v; want found from lru with At %v", second, err, first.At)
	}
	if n := s.count.calls(); n != 1 {
		t.Errorf("next asked %d times, want 1", n)
	}
}

func TestLRUTTLs(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		advance time.Duration
		asks    int // lookups reaching next after the second lookup
	}{
		{"found within ttl", "a@example.com", testTTL - time.Second, 1},
		{"found past negative ttl still fresh", "a@example.com", testNegTTL + time.Second, 1},
		{"found at ttl", "a@example.com", testTTL, 2},
		{"not found within negative ttl", "nobody@example.com", testNegTTL - time.Second, 1},
		{"not found at negative ttl", "nobody@example.com", testNegTTL, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newLRUStack(t, 10, "a@example.com")
			ctx := context.Background()
			if _, err := s.lru.Lookup(ctx, rcptKey(tt.key)); err != nil {
				t.Fatal(err)
			}
			s.clock.Advance(tt.advance)
			if _, err := s.lru.Lookup(ctx, rcptKey(tt.key)); err != nil {
				t.Fatal(err)
			}
			if n := s.count.calls(); n != tt.asks {
				t.Errorf("next asked %d times, want %d", n, tt.asks)
			}
		})
	}
}

func TestLRUNeverCachesErrors(t *testing.T) {
	s := newLRUStack(t, 10, "a@example.com")
	ctx := context.Background()
	s.sw.down.Store(true)
	if _, err := s.lru.Lookup(ctx, rcptKey("a@example.com")); !errors.Is(err, errDirectory) {
		t.Fatalf("lookup while down: err = %v, want %v", err, errDirectory)
	}
	s.sw.down.Store(false)
	ans, err := s.lru.Lookup(ctx, rcptKey("a@example.com"))
	if err != nil || !ans.Found || ans.Tier != "map" {
		t.Fatalf("lookup after recovery = %+v, %v; want found from map", ans, err)
	}
	if n := s.count.calls(); n != 2 {
		t.Errorf("next asked %d times, want 2", n)
	}
}

func TestLRUStale(t *testing.T) {
	tests := []struct {
		name      string
		key       string
		advance   time.Duration
		wantErr   bool
		wantStale bool
	}{
		{"found past ttl within stale_max", "a@example.com", testTTL + time.Second, false, true},
		{"found just under stale_max", "a@example.com", testStaleMax - time.Second, false, true},
		{"found at stale_max", "a@example.com", testStaleMax, true, false},
		{"not found past negative ttl", "nobody@example.com", testNegTTL, true, false},
		{"not found long past negative ttl", "nobody@example.com", testTTL + time.Second, true, false},
		{"not found within negative ttl is a fresh hit", "nobody@example.com", testNegTTL - time.Second, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newLRUStack(t, 10, "a@example.com")
			ctx := context.Background()
			first, err := s.lru.Lookup(ctx, rcptKey(tt.key))
			if err != nil {
				t.Fatal(err)
			}
			s.clock.Advance(tt.advance)
			s.sw.down.Store(true)
			before := counterValue(t, metrics.StaleServed)
			ans, err := s.lru.Lookup(ctx, rcptKey(tt.key))
			if tt.wantErr {
				if !errors.Is(err, errDirectory) {
					t.Fatalf("lookup = %+v, %v; want error %v", ans, err, errDirectory)
				}
				return
			}
			if err != nil {
				t.Fatalf("lookup: %v", err)
			}
			if ans.Stale != tt.wantStale || ans.Tier != "lru" || ans.Found != first.Found || !ans.At.Equal(first.At) {
				t.Errorf("lookup = %+v; want Stale %v, tier lru, Found %v, At %v", ans, tt.wantStale, first.Found, first.At)
			}
			if got := counterValue(t, metrics.StaleServed) - before; tt.wantStale && got != 1 {
				t.Errorf("stale answers counted: %v, want 1", got)
			}
		})
	}
}

func TestLRUInvalidate(t *testing.T) {
	s := newLRUStack(t, 10, "a@example.com")
	ctx := context.Background()
	k := rcptKey("a@example.com")
	if _, err := s.lru.Lookup(ctx, k); err != nil {
		t.Fatal(err)
	}
	s.lru.Invalidate()
	if ans, err := s.lru.Lookup(ctx, k); err != nil || ans.Tier != "map" {
		t.Fatalf("lookup after Invalidate = %+v, %v; want an answer from map", ans, err)
	}
	if ans, err := s.lru.Lookup(ctx, k); err != nil || ans.Tier != "lru" {
		t.Fatalf("second lookup after Invalidate = %+v, %v; want a hit", ans, err)
	}
	s.lru.Invalidate()
	s.sw.down.Store(true)
	ans, err := s.lru.Lookup(ctx, k)
	if err != nil || !ans.Found || !ans.Stale {
		t.Fatalf("lookup after Invalidate with next down = %+v, %v; want a stale found answer", ans, err)
	}
	if n := s.count.calls(); n != 3 {
		t.Errorf("next asked %d times, want 3", n)
	}
}

// TestLRUInvalidateDuringLookup: an answer asked before Invalidate and
// stored after it must not count as fresh.
func TestLRUInvalidateDuringLookup(t *testing.T) {
	var l *LRU
	inner := SourceFunc(func(ctx context.Context, key Key) (Answer, error) {
		l.Invalidate() // the reload happens while the directory answers
		return Answer{Found: true, At: time.Now(), Tier: "map"}, nil
	})
	count := &countingSource{next: inner}
	l, err := NewLRU(count, LRUOptions{Size: 10, TTL: time.Hour, NegativeTTL: time.Hour, StaleMax: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := l.Lookup(context.Background(), rcptKey("a@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	if n := count.calls(); n != 2 {
		t.Errorf("next asked %d times, want 2", n)
	}
}

func TestLRUStaleFromBelowIsNotStored(t *testing.T) {
	at := time.Now().Add(-2 * time.Hour)
	count := &countingSource{next: SourceFunc(func(ctx context.Context, key Key) (Answer, error) {
		return Answer{Found: true, At: at, Tier: "memcache", Stale: true}, nil
	})}
	l, err := NewLRU(count, LRUOptions{Size: 10, TTL: time.Hour, NegativeTTL: time.Hour, StaleMax: 24 * time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		ans, err := l.Lookup(context.Background(), rcptKey("a@example.com"))
		if err != nil || !ans.Stale || ans.Tier != "memcache" || !ans.At.Equal(at) {
			t.Fatalf("lookup %d = %+v, %v; want the stale answer from memcache", i, ans, err)
		}
	}
	if n := count.calls(); n != 2 {
		t.Errorf("next asked %d times, want 2 (stale answers are not cached)", n)
	}
}

func TestLRUSizeZeroPassesThrough(t *testing.T) {
	s := newLRUStack(t, 0, "a@example.com")
	for range 3 {
		ans, err := s.lru.Lookup(context.Background(), rcptKey("a@example.com"))
		if err != nil || ans.Tier != "map" {
			t.Fatalf("lookup = %+v, %v; want from map", ans, err)
		}
	}
	if n := s.count.calls(); n != 3 {
		t.Errorf("next asked %d times, want 3", n)
	}
}

func TestLRUEvictsBySize(t *testing.T) {
	s := newLRUStack(t, 2)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "a"} {
		if _, err := s.lru.Lookup(ctx, rcptKey(n)); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.count.calls(); n != 4 {
		t.Errorf("next asked %d times, want 4 (a evicted by c)", n)
	}
	if n := s.lru.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
}

// BenchmarkLRUHit is the hot path of a decision whose answer is cached.
func BenchmarkLRUHit(b *testing.B) {
	const keys = 100_000
	m := mapSource{names: map[string]bool{}}
	all := make([]Key, keys)
	for i := range all {
		all[i] = rcptKey(fmt.Sprintf("user%d@example.com", i))
		m.names[all[i].Name] = i%2 == 0
	}
	l, err := NewLRU(m, LRUOptions{Size: keys, TTL: time.Hour, NegativeTTL: time.Hour, StaleMax: time.Hour}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range all {
		if _, err := l.Lookup(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ans, err := l.Lookup(ctx, all[i%keys])
			if err != nil || ans.Tier != "lru" {
				b.Fatalf("lookup = %+v, %v", ans, err)
			}
			i += 7
		}
	})
}

// counterValue reads a counter (prometheus/testutil needs a module that
// go.sum lacks).
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestLRUFreshnessOfOlderAnswers: an answer the next tier already held
// (memcached's) keeps a found one fresh for TTL from when the LRU stored
// it, but a not-found one only for NegativeTTL from when the directory
// gave it, so that a cached "no such user" does not outlive both negative
// TTLs added up.
func TestLRUFreshnessOfOlderAnswers(t *testing.T) {
	tests := []struct {
		name    string
		found   bool
		age     time.Duration // of the answer when the LRU stores it
		advance time.Duration
		asks    int
	}{
		{"found, old answer, within ttl of storing", true, time.Hour, testTTL - time.Second, 1},
		{"found, old answer, at ttl of storing", true, time.Hour, testTTL, 2},
		{"not found, young answer, within negative ttl", false, 2 * time.Second, testNegTTL - 3*time.Second, 1},
		{"not found, young answer, negative ttl after the directory", false, 2 * time.Second, testNegTTL - 2*time.Second, 2},
		{"not found, answer older than negative ttl", false, testNegTTL, time.Second, 2},
		// An answer from a clock ahead of ours does not stretch it.
		{"not found, answer from the future", false, -time.Minute, testNegTTL, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			count := &countingSource{next: SourceFunc(func(ctx context.Context, key Key) (Answer, error) {
				return Answer{Found: tt.found, At: clock.Now().Add(-tt.age), Tier: "memcache"}, nil
			})}
			l, err := NewLRU(count, LRUOptions{Size: 10, TTL: testTTL, NegativeTTL: testNegTTL, StaleMax: testStaleMax, Now: clock.Now}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := l.Lookup(ctx, rcptKey("a@example.com")); err != nil {
				t.Fatal(err)
			}
			clock.Advance(tt.advance)
			if _, err := l.Lookup(ctx, rcptKey("a@example.com")); err != nil {
				t.Fatal(err)
			}
			if n := count.calls(); n != tt.asks {
				t.Errorf("next asked %d times, want %d", n, tt.asks)
			}
		})
	}
}

// TestLRUKeyedByScope: the same name under two scopes is two entries.
func TestLRUKeyedByScope(t *testing.T) {
	s := newLRUStack(t, 10)
	ctx := context.Background()
	for _, scope := range []string{"aaaaaaaa", "bbbbbbbb", "aaaaaaaa"} {
		if _, err := s.lru.Lookup(ctx, Key{Kind: Recipient, Scope: scope, Name: "a@example.com"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.count.calls(); n != 2 {
		t.Errorf("next asked %d times, want 2 (once per scope)", n)
	}
}
