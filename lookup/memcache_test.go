package lookup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/metrics"
)

// memcacheDaemon is one daemon's memcached tier over its own counted,
// switchable view of a shared directory.
type memcacheDaemon struct {
	mc    *Memcache
	sw    *switchSource
	count *countingSource
}

// testMemcacheOptions are generous with time: a loaded CI machine must
// not turn a slow reply into a failure the test did not mean.
func testMemcacheOptions() MemcacheOptions {
	return MemcacheOptions{
		TTL:         time.Hour,
		NegativeTTL: 5 * time.Minute,
		StaleMax:    24 * time.Hour,
		Timeout:     2 * time.Second,
		LockTimeout: 5 * time.Second,
	}
}

func newMemcacheDaemon(t testing.TB, addr string, dir Source, opts MemcacheOptions) *memcacheDaemon {
	t.Helper()
	sw := &switchSource{next: dir}
	count := &countingSource{next: sw}
	mc, err := NewMemcache(count, []string{addr}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &memcacheDaemon{mc: mc, sw: sw, count: count}
}

func directory(clock *fakeClock, found ...string) mapSource {
	m := mapSource{names: map[string]bool{}}
	if clock != nil {
		m.now = clock.Now
	}
	for _, n := range found {
		m.names[n] = true
	}
	return m
}

func TestMemcacheRoundTrip(t *testing.T) {
	server := testserver.StartMemcached(t)
	dir := directory(nil, "a@example.com", "192.0.2.1")
	tests := []struct {
		name string
		key  Key
		want bool
	}{
		{"found recipient", rcptKey("a@example.com"), true},
		{"unknown recipient", rcptKey("nobody@example.com"), false},
		{"listed host", Key{Kind: Host, Name: "192.0.2.1"}, true},
		{"unlisted host", Key{Kind: Host, Name: "192.0.2.2 mx.example.net"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			a := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
			b := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
			first, err := a.mc.Lookup(ctx, tt.key)
			if err != nil || first.Found != tt.want || first.Tier != "map" {
				t.Fatalf("daemon a: %+v, %v; want Found %v from map", first, err, tt.want)
			}
			second, err := b.mc.Lookup(ctx, tt.key)
			if err != nil || second.Found != tt.want || second.Tier != "memcache" || second.At.UnixMilli() != first.At.UnixMilli() {
				t.Fatalf("daemon b: %+v, %v; want Found %v from memcache, At %v", second, err, tt.want, first.At)
			}
			if n := b.count.calls(); n != 0 {
				t.Errorf("daemon b asked its directory %d times, want 0", n)
			}
		})
	}
}

func TestMemcacheTTLs(t *testing.T) {
	server := testserver.StartMemcached(t)
	opts := testMemcacheOptions()
	tests := []struct {
		name    string
		key     string
		advance time.Duration
		asks    int
	}{
		{"found within ttl", "a@example.com", opts.TTL - time.Second, 1},
		{"found past negative ttl", "a@example.com", opts.NegativeTTL + time.Second, 1},
		{"found at ttl", "a@example.com", opts.TTL, 2},
		{"not found within negative ttl", "nobody@example.com", opts.NegativeTTL - time.Second, 1},
		{"not found at negative ttl", "nobody@example.com", opts.NegativeTTL, 2},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			o := opts
			o.Now = clock.Now
			o.KeyPrefix = fmt.Sprintf("ttl%d:", i)
			d := newMemcacheDaemon(t, server.Addr(), directory(clock, "a@example.com"), o)
			ctx := context.Background()
			if _, err := d.mc.Lookup(ctx, rcptKey(tt.key)); err != nil {
				t.Fatal(err)
			}
			clock.Advance(tt.advance)
			if _, err := d.mc.Lookup(ctx, rcptKey(tt.key)); err != nil {
				t.Fatal(err)
			}
			if n := d.count.calls(); n != tt.asks {
				t.Errorf("directory asked %d times, want %d", n, tt.asks)
			}
		})
	}
}

// hostileNames are recipient names that must neither break nor escape
// their memcached key.
var hostileNames = []string{
	"with space@example.com",
	"x\r\nflush_all",
	"x\r\nflush_all\r\n",
	"flush_all",
	"x\nset antespam:1:rcpt:a@example.com 0 0 1\r\n0",
	"tab\there@example.com",
	"nul\x00@example.com",
	"del\x7f@example.com",
	"bad-utf8-\xff\xfe@example.com",
	"ünïcödé@exämple.com",
	strings.Repeat("a", 300) + "@example.com",
	strings.Repeat("b", 250),
	"h:0000000000000000000000000000000000000000000000000000000000000000",
	"",
}

func TestMemcacheKeysAreLegal(t *testing.T) {
	mc, err := NewMemcache(mapSource{}, []string{"127.0.0.1:11211"}, MemcacheOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, scope := range []string{"", "1a2b3c4d", "x\r\nflush_all", strings.Repeat("s", 300)} {
		for _, name := range append(hostileNames, "a@example.com", "A@example.com") {
			for _, kind := range []Kind{Recipient, Host} {
				k := Key{Kind: kind, Scope: scope, Name: name}
				for _, mk := range []string{mc.itemKey(k), mc.lockKey(k)} {
					if len(mk) > 250 {
						t.Errorf("%q: key of %d bytes", name, len(mk))
					}
					if !safeKeyPart(mk) {
						t.Errorf("%q: key %q holds bytes memcached refuses", name, mk)
					}
					if other, dup := seen[mk]; dup {
						t.Errorf("%q and %q share the key %q", k, other, mk)
					}
					seen[mk] = k.String()
				}
			}
		}
	}
	for _, tt := range []struct {
		key  Key
		want string
	}{
		{rcptKey("a@example.com"), "antespam:1:v1:rcpt::a@example.com"},
		{Key{Kind: Recipient, Scope: "1a2b3c4d", Name: "a@example.com"}, "antespam:1:v1:rcpt:1a2b3c4d:a@example.com"},
		{Key{Kind: Host, Scope: "1a2b3c4d", Name: "192.0.2.1 mx.example.net"},
			"antespam:1:v1:host:1a2b3c4d:h:" + fmt.Sprintf("%x", sha256.Sum256([]byte("192.0.2.1 mx.example.net")))},
		// A scope that is no safe word is hashed, never spliced in.
		{Key{Kind: Recipient, Scope: "x y:z\r\n", Name: "a@example.com"},
			"antespam:1:v1:rcpt:" + fmt.Sprintf("%x", sha256.Sum256([]byte("x y:z\r\n")))[:16] + ":a@example.com"},
	} {
		if got := mc.itemKey(tt.key); got != tt.want {
			t.Errorf("itemKey(%+v) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestMemcacheHostileKeys(t *testing.T) {
	server := testserver.StartMemcached(t)
	ctx := context.Background()
	// Every other hostile name is found, so that each answer is checked.
	dir := directory(nil, "sentinel@example.com")
	for i, n := range hostileNames {
		if i%2 == 0 {
			dir.names[n] = true
		}
	}
	a := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
	if _, err := a.mc.Lookup(ctx, rcptKey("sentinel@example.com")); err != nil {
		t.Fatal(err)
	}
	for i, name := range hostileNames {
		if ans, err := a.mc.Lookup(ctx, rcptKey(name)); err != nil || ans.Found != (i%2 == 0) {
			t.Errorf("store %q: %+v, %v; want Found %v", name, ans, err, i%2 == 0)
		}
	}
	b := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
	for i, name := range append(hostileNames, "sentinel@example.com") {
		want := i%2 == 0 || name == "sentinel@example.com"
		ans, err := b.mc.Lookup(ctx, rcptKey(name))
		if err != nil || ans.Found != want || ans.Tier != "memcache" {
			t.Errorf("read back %q: %+v, %v; want Found %v from memcache", name, ans, err, want)
		}
	}
	if n := b.count.calls(); n != 0 {
		t.Errorf("second daemon asked its directory %d times, want 0", n)
	}
	stats, err := server.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := stats["curr_items"], fmt.Sprint(len(hostileNames)+1); got != want {
		t.Errorf("memcached holds %s items, want %s", got, want)
	}
}

func TestMemcacheGarbageValueIsAMiss(t *testing.T) {
	server := testserver.StartMemcached(t)
	raw := memcache.New(server.Addr())
	ctx := context.Background()
	// A not-found answered an hour from now would otherwise stay fresh,
	// and go on rejecting, until memcached dropped it.
	future := fmt.Sprintf("0 %d", time.Now().Add(time.Hour).UnixMilli())
	for i, v := range []string{"garbage", "1", "2 1700000000000", "1 abc", "1 -5", "1  1700000000000", " ", strings.Repeat("1", 1000), future} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			d := newMemcacheDaemon(t, server.Addr(), directory(nil, "a@example.com"), testMemcacheOptions())
			k := rcptKey(fmt.Sprintf("a%d@example.com", i))
			d.sw.next.(mapSource).names[k.Name] = true
			if err := raw.Set(&memcache.Item{Key: d.mc.ItemKey(k), Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
			before := counterValue(t, metrics.MemcacheErrors.WithLabelValues("decode"))
			ans, err := d.mc.Lookup(ctx, k)
			if err != nil || !ans.Found || ans.Tier != "map" {
				t.Fatalf("lookup = %+v, %v; want found from the directory", ans, err)
			}
			// Counted once per read: before the lock and again after it.
			if got := counterValue(t, metrics.MemcacheErrors.WithLabelValues("decode")) - before; got < 1 {
				t.Errorf("value %q: decode errors counted: %v, want at least 1", v, got)
			}
			// The garbage was replaced by the directory's answer.
			if ans, err := d.mc.Lookup(ctx, k); err != nil || ans.Tier != "memcache" {
				t.Errorf("second lookup = %+v, %v; want from memcache", ans, err)
			}
		})
	}
}

func TestMemcacheServerStoppedAndRestarted(t *testing.T) {
	server := testserver.StartMemcached(t)
	ctx := context.Background()
	opts := testMemcacheOptions()
	opts.Timeout = 200 * time.Millisecond
	opts.Backoff = 20 * time.Millisecond
	dir := directory(nil, "a@example.com")
	a := newMemcacheDaemon(t, server.Addr(), dir, opts)
	b := newMemcacheDaemon(t, server.Addr(), dir, opts)
	if _, err := a.mc.Lookup(ctx, rcptKey("a@example.com")); err != nil {
		t.Fatal(err)
	}

	server.Stop()
	for i := range 50 {
		for _, d := range []*memcacheDaemon{a, b} {
			k := rcptKey(fmt.Sprintf("u%d@example.com", i%5))
			if i%2 == 0 {
				k = rcptKey("a@example.com")
			}
			ans, err := d.mc.Lookup(ctx, k)
			if err != nil || ans.Tier != "map" || ans.Found != (k.Name == "a@example.com") {
				t.Fatalf("lookup %d of %s with memcached down: %+v, %v; want an answer from the directory", i, k, ans, err)
			}
		}
	}
	if err := a.mc.Ping(ctx); err == nil {
		t.Error("Ping with memcached down: no error")
	}

	server.Start()
	if err := a.mc.Ping(ctx); err != nil {
		t.Errorf("Ping after restart: %v", err)
	}
	// Used again once the backoff has passed: b sees what a stored.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		k := rcptKey(fmt.Sprintf("after%d@example.com", i))
		if _, err := a.mc.Lookup(ctx, k); err != nil {
			t.Fatal(err)
		}
		ans, err := b.mc.Lookup(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if ans.Tier == "memcache" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("memcached not used again 10s after its restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMemcacheOneServerDown: with two memcached servers and one of them
// stopped under concurrent lookups, the keys that live on the other keep
// being served from it; only the stopped server's keys go to the
// directory, and none fails.
func TestMemcacheOneServerDown(t *testing.T) {
	s1, s2 := testserver.StartMemcached(t), testserver.StartMemcached(t)
	ctx := context.Background()
	opts := testMemcacheOptions()
	opts.Timeout = 500 * time.Millisecond
	opts.Backoff = time.Hour // a failed server stays skipped for the test
	var names []string
	for i := range 40 {
		names = append(names, fmt.Sprintf("user%d@example.com", i))
	}
	dir := &countingSource{next: directory(nil, names...)}
	mc, err := NewMemcache(dir, []string{s1.Addr(), s2.Addr()}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]int{}
	for _, n := range names {
		if _, err := mc.Lookup(ctx, rcptKey(n)); err != nil {
			t.Fatal(err)
		}
		a, err := mc.servers.PickServer(mc.ItemKey(rcptKey(n)))
		if err != nil {
			t.Fatal(err)
		}
		on[a.String()]++
	}
	if on[s1.Addr()] == 0 || on[s2.Addr()] == 0 {
		t.Fatalf("keys by server %v: want some on each", on)
	}

	// s2 stops in the middle of concurrent lookups, so that batches hold
	// keys of both servers when s2's pooled connections fail (with a bare
	// EOF, which names no server): the failure must still be s2's alone.
	var wg sync.WaitGroup
	var done atomic.Int64
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			for i := range 6 * len(names) {
				n := names[(g+i)%len(names)]
				if ans, err := mc.Lookup(ctx, rcptKey(n)); err != nil || !ans.Found {
					errs <- fmt.Errorf("concurrent lookup of %s: %+v, %v; want found", n, ans, err)
					return
				}
				done.Add(1)
			}
		})
	}
	for done.Load() < 500 && len(errs) == 0 {
		time.Sleep(time.Millisecond)
	}
	s2.Stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for pass := 1; pass <= 2; pass++ {
		for _, n := range names {
			k := rcptKey(n)
			ans, err := mc.Lookup(ctx, k)
			if err != nil || !ans.Found {
				t.Fatalf("pass %d, %s: %+v, %v; want found", pass, n, ans, err)
			}
			a, _ := mc.servers.PickServer(mc.ItemKey(k))
			// In the first pass a key of s2 may come before s2 is known
			// down; from then on only s2's keys may miss memcached.
			if a.String() == s1.Addr() && ans.Tier != "memcache" {
				t.Errorf("pass %d, %s lives on the running server but came from %q", pass, n, ans.Tier)
			}
			if a.String() == s2.Addr() && ans.Tier != "map" {
				t.Errorf("pass %d, %s lives on the stopped server but came from %q", pass, n, ans.Tier)
			}
		}
	}
}

func TestMemcacheFrozenServerIsBounded(t *testing.T) {
	server := testserver.StartMemcached(t)
	ctx := context.Background()
	opts := testMemcacheOptions()
	opts.Timeout = 100 * time.Millisecond
	d := newMemcacheDaemon(t, server.Addr(), directory(nil, "a@example.com"), opts)
	if _, err := d.mc.Lookup(ctx, rcptKey("a@example.com")); err != nil {
		t.Fatal(err)
	}
	server.Freeze()
	t.Cleanup(server.Thaw)
	for i := range 20 {
		start := time.Now()
		ans, err := d.mc.Lookup(ctx, rcptKey("a@example.com"))
		took := time.Since(start)
		if err != nil || !ans.Found || ans.Tier != "map" {
			t.Fatalf("lookup %d with memcached frozen: %+v, %v; want found from the directory", i, ans, err)
		}
		// Generous slack: at most a few Timeouts, never a hang.
		if took > 10*time.Second {
			t.Fatalf("lookup %d with memcached frozen took %v (timeout %v)", i, took, opts.Timeout)
		}
	}
}

func TestMemcacheStale(t *testing.T) {
	server := testserver.StartMemcached(t)
	opts := testMemcacheOptions()
	tests := []struct {
		name      string
		key       string
		advance   time.Duration
		wantErr   bool
		wantStale bool
	}{
		{"found past ttl", "a@example.com", opts.TTL + time.Minute, false, true},
		{"found just under stale_max", "a@example.com", opts.StaleMax - time.Minute, false, true},
		{"found at stale_max", "a@example.com", opts.StaleMax, true, false},
		{"not found past negative ttl", "nobody@example.com", opts.NegativeTTL, true, false},
		{"not found within negative ttl", "nobody@example.com", opts.NegativeTTL - time.Second, false, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			o := opts
			o.Now = clock.Now
			o.KeyPrefix = fmt.Sprintf("stale%d:", i)
			dir := directory(clock, "a@example.com")
			a := newMemcacheDaemon(t, server.Addr(), dir, o)
			first, err := a.mc.Lookup(ctx, rcptKey(tt.key))
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(tt.advance)
			// A daemon that never saw the key (empty LRU) bridges the
			// outage from memcached.
			b := newMemcacheDaemon(t, server.Addr(), dir, o)
			b.sw.down.Store(true)
			ans, err := b.mc.Lookup(ctx, rcptKey(tt.key))
			if tt.wantErr {
				if !errors.Is(err, errDirectory) {
					t.Fatalf("lookup = %+v, %v; want error %v", ans, err, errDirectory)
				}
				return
			}
			if err != nil || ans.Stale != tt.wantStale || ans.Found != first.Found || ans.Tier != "memcache" || ans.At.UnixMilli() != first.At.UnixMilli() {
				t.Fatalf("lookup = %+v, %v; want Stale %v Found %v from memcache", ans, err, tt.wantStale, first.Found)
			}
		})
	}
}

func TestMemcachePurge(t *testing.T) {
	server := testserver.StartMemcached(t)
	ctx := context.Background()
	dir := directory(nil)
	d := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
	keys := []Key{rcptKey("new@example.com"), rcptKey("x\r\nflush_all"), {Kind: Host, Name: "192.0.2.9 mx.example.net"}}
	for _, k := range keys {
		if ans, err := d.mc.Lookup(ctx, k); err != nil || ans.Found {
			t.Fatalf("first lookup of %s: %+v, %v; want not found", k, ans, err)
		}
		dir.names[k.Name] = true // the admin adds it to the directory
		if ans, err := d.mc.Lookup(ctx, k); err != nil || ans.Found || ans.Tier != "memcache" {
			t.Fatalf("lookup of %s before purge: %+v, %v; want the cached not-found", k, ans, err)
		}
	}
	if err := d.mc.Purge(ctx, keys...); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	for _, k := range keys {
		if ans, err := d.mc.Lookup(ctx, k); err != nil || !ans.Found || ans.Tier != "map" {
			t.Errorf("lookup of %s after purge: %+v, %v; want found from the directory", k, ans, err)
		}
	}
	if err := d.mc.Purge(ctx, rcptKey("never-cached@example.com")); err != nil {
		t.Errorf("Purge of an absent key: %v", err)
	}
}

// TestMemcacheFleetCoalescing: 16 daemons asked for the same 200 new keys
// at once reach the directory about once per key.
func TestMemcacheFleetCoalescing(t *testing.T) {
	const daemons, keys = 16, 200
	server := testserver.StartMemcached(t)
	ctx := context.Background()
	dir := directory(nil)
	for i := range keys {
		if i%2 == 0 {
			dir.names[fmt.Sprintf("user%d@example.com", i)] = true
		}
	}
	// One counter for the whole fleet; a directory request takes a while,
	// as a real one does, so that lookups overlap.
	shared := &countingSource{next: slowSource{next: dir, delay: 2 * time.Millisecond}}
	opts := testMemcacheOptions()
	opts.MaxIdleConns = 16
	// 3,200 lookups queue for 16 request slots a daemon: on a loaded
	// machine a wait past Timeout (a miss) or LockTimeout (ask yourself)
	// would send lookups to the directory for reasons of CPU, not of
	// coalescing, which is what this test is about.
	opts.Timeout = time.Minute
	opts.LockTimeout = time.Minute
	errs0 := map[string]float64{}
	for _, op := range []string{"get", "add", "set", "delete", "decode"} {
		errs0[op] = counterValue(t, metrics.MemcacheErrors.WithLabelValues(op))
	}
	fleet := make([]*Memcache, daemons)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	for i := range fleet {
		mc, err := NewMemcache(shared, []string{server.Addr()}, opts, log)
		if err != nil {
			t.Fatal(err)
		}
		fleet[i] = mc
	}
	var wg sync.WaitGroup
	errs := make(chan error, daemons*keys)
	for _, mc := range fleet {
		for i := range keys {
			wg.Go(func() {
				name := fmt.Sprintf("user%d@example.com", i)
				ans, err := mc.Lookup(ctx, rcptKey(name))
				if err == nil && ans.Found != (i%2 == 0) {
					err = fmt.Errorf("%s: Found %v, want %v", name, ans.Found, i%2 == 0)
				}
				if err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := shared.calls()
	t.Logf("%d daemons x %d keys: %d directory requests", daemons, keys, n)
	for _, op := range []string{"get", "add", "set", "delete", "decode"} {
		if v := counterValue(t, metrics.MemcacheErrors.WithLabelValues(op)) - errs0[op]; v > 0 {
			t.Logf("memcache %s errors in this run: %v", op, v)
		}
	}
	if n > keys*11/10 {
		t.Errorf("directory asked %d times for %d keys, want at most %d", n, keys, keys*11/10)
	}
}

// TestMemcacheCoalescesInProcess: concurrent lookups of one key that
// memcached lacks reach the directory once per process, also when
// memcached is down (no add lock to share then), as the Coalesce tier in
// front of Memcache did before Memcache coalesced its own misses.
func TestMemcacheCoalescesInProcess(t *testing.T) {
	const callers = 128
	up := testserver.StartMemcached(t)
	down := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t, "127.0.0.1")) // nothing listens
	for _, tc := range []struct{ name, addr string }{{"memcached up", up.Addr()}, {"memcached down", down}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := &countingSource{next: slowSource{next: directory(nil, "new@example.com"), delay: time.Second}}
			mc, err := NewMemcache(dir, []string{tc.addr}, testMemcacheOptions(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make(chan error, callers)
			for range callers {
				wg.Go(func() {
					<-start
					ans, err := mc.Lookup(context.Background(), rcptKey("new@example.com"))
					if err == nil && !ans.Found {
						err = errors.New("new@example.com: not found")
					}
					if err != nil {
						errs <- err
					}
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			// The callers all start well within the directory's one-second
			// answer, so they share its flight.
			if n := dir.calls(); n != 1 {
				t.Errorf("directory asked %d times by %d concurrent lookups of one key, want 1", n, callers)
			}
		})
	}
}

func TestNewMemcacheRejects(t *testing.T) {
	tests := []struct {
		name    string
		servers []string
		prefix  string
	}{
		{"no servers", nil, ""},
		{"bad port", []string{"127.0.0.1:notaport"}, ""},
		{"prefix with space", []string{"127.0.0.1:11211"}, "anti spam:"},
		{"prefix with newline", []string{"127.0.0.1:11211"}, "x\r\nflush_all"},
		{"long prefix", []string{"127.0.0.1:11211"}, strings.Repeat("p", 101)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewMemcache(mapSource{}, tt.servers, MemcacheOptions{KeyPrefix: tt.prefix}, nil); err == nil {
				t.Error("NewMemcache: no error")
			}
		})
	}
}

// BenchmarkMemcacheHit is a lookup answered by a real local memcached.
func BenchmarkMemcacheHit(b *testing.B) {
	d, all := memcacheHitSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ans, err := d.mc.Lookup(ctx, all[i%len(all)])
			if err != nil || ans.Tier != "memcache" {
				b.Fatalf("lookup = %+v, %v", ans, err)
			}
			i++
		}
	})
}

// memcacheHitSetup starts a memcached holding the answers to 1000 keys
// (half found) and a daemon in front of it.
func memcacheHitSetup(b *testing.B) (*memcacheDaemon, []Key) {
	b.Helper()
	server := testserver.StartMemcached(b)
	const keys = 1000
	dir := directory(nil)
	all := make([]Key, keys)
	for i := range all {
		all[i] = rcptKey(fmt.Sprintf("user%d@example.com", i))
		dir.names[all[i].Name] = i%2 == 0
	}
	opts := testMemcacheOptions()
	opts.MaxIdleConns = 512 // as bench-run's daemon
	d := newMemcacheDaemon(b, server.Addr(), dir, opts)
	ctx := context.Background()
	for _, k := range all {
		if _, err := d.mc.Lookup(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	return d, all
}

// TestMemcacheStuckLock: a daemon that died holding a key's lock delays
// the others by at most LockTimeout, or half their own deadline.
func TestMemcacheStuckLock(t *testing.T) {
	server := testserver.StartMemcached(t)
	raw := memcache.New(server.Addr())
	tests := []struct {
		name        string
		lockTimeout time.Duration
		ctxTimeout  time.Duration
	}{
		{"lock timeout", 100 * time.Millisecond, 0},
		{"caller deadline", time.Minute, 500 * time.Millisecond},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testMemcacheOptions()
			opts.LockTimeout = tt.lockTimeout
			// As the daemon sets it (decision_timeout): the shared fill
			// gets the caller's time, of which it leaves half for asking.
			opts.FillTimeout = tt.ctxTimeout
			d := newMemcacheDaemon(t, server.Addr(), directory(nil, "a@example.com"), opts)
			k := rcptKey(fmt.Sprintf("a%d@example.com", i))
			d.sw.next.(mapSource).names[k.Name] = true
			if err := raw.Add(&memcache.Item{Key: d.mc.lockKey(k), Value: []byte("1"), Expiration: 60}); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tt.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
				defer cancel()
			}
			ans, err := d.mc.Lookup(ctx, k)
			if err != nil || !ans.Found || ans.Tier != "map" {
				t.Fatalf("lookup = %+v, %v; want found from the directory", ans, err)
			}
		})
	}
}

// TestMemcacheLockWaiter: a lookup that finds another daemon holding the
// key's lock waits for it: when the holder publishes, the waiter takes the
// answer without asking the directory; when the holder fails (lock gone,
// no answer), the waiter takes over at once, not after LockTimeout. The
// holder acts only once memcached has served the waiter a poll that found
// the lock, so the waiting path always runs (an Add after the release
// would take the lock and pass without waiting).
func TestMemcacheLockWaiter(t *testing.T) {
	server := testserver.StartMemcached(t)
	raw := memcache.New(server.Addr())
	tests := []struct {
		name      string
		publish   bool // the holder publishes an answer before releasing
		wantTier  string
		wantCalls int
	}{
		{"holder publishes", true, "memcache", 0},
		{"holder fails", false, "map", 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testMemcacheOptions()
			opts.LockTimeout = time.Hour // a waiter that waits for it fails below
			d := newMemcacheDaemon(t, server.Addr(), directory(nil), opts)
			k := rcptKey(fmt.Sprintf("waiter%d@example.com", i))
			d.sw.next.(mapSource).names[k.Name] = true
			if err := raw.Add(&memcache.Item{Key: d.mc.lockKey(k), Value: []byte("1"), Expiration: 60}); err != nil {
				t.Fatal(err)
			}
			// Only the waiter's polls (get of item and lock) can hit: the
			// item is not there and nothing else reads the lock.
			hits := func() int {
				st, err := server.Stats()
				if err != nil {
					t.Fatal(err)
				}
				n, err := strconv.Atoi(st["get_hits"])
				if err != nil {
					t.Fatalf("memcached get_hits %q: %v", st["get_hits"], err)
				}
				return n
			}
			before := hits()
			type result struct {
				ans Answer
				err error
			}
			done := make(chan result, 1)
			go func() {
				ans, err := d.mc.Lookup(context.Background(), k)
				done <- result{ans, err}
			}()
			if !testserver.Eventually(30*time.Second, func() bool { return hits() > before }) {
				t.Fatal("the lookup never polled the held lock")
			}
			select {
			case r := <-done:
				t.Fatalf("the lookup returned %+v, %v while the lock was held", r.ans, r.err)
			default:
			}
			if tt.publish {
				at := time.Now()
				if err := raw.Set(&memcache.Item{Key: d.mc.ItemKey(k), Value: encodeMemcacheValue(true, at), Expiration: 60}); err != nil {
					t.Fatal(err)
				}
			}
			if err := raw.Delete(d.mc.lockKey(k)); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				if r.err != nil || !r.ans.Found || r.ans.Tier != tt.wantTier {
					t.Errorf("lookup = %+v, %v; want found from %s", r.ans, r.err, tt.wantTier)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the lookup still waits 30s after the lock was released")
			}
			if n := d.count.calls(); n != tt.wantCalls {
				t.Errorf("directory asked %d times, want %d", n, tt.wantCalls)
			}
		})
	}
}

// TestTierStack composes the tiers as main does: LRU, coalescing,
// memcached, directory.
func TestTierStack(t *testing.T) {
	server := testserver.StartMemcached(t)
	clock := newFakeClock()
	dir := directory(clock, "a@example.com")
	sw := &switchSource{next: slowSource{next: dir, delay: 5 * time.Millisecond}}
	count := &countingSource{next: sw}
	stack := func() *LRU {
		o := testMemcacheOptions()
		o.Now = clock.Now
		o.Backoff = -1 // every lookup tries memcached, so a stop is seen at once
		mc, err := NewMemcache(count, []string{server.Addr()}, o, nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewLRU(NewCoalesce(mc, nil), LRUOptions{Size: 100, TTL: time.Minute, NegativeTTL: 10 * time.Second, StaleMax: 24 * time.Hour, Now: clock.Now}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ctx := context.Background()
	k := rcptKey("a@example.com")

	first := stack()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			if ans, err := first.Lookup(ctx, k); err != nil || !ans.Found {
				errs <- fmt.Errorf("lookup: %+v, %v", ans, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Callers that came after the shared call ended hit the LRU; none
	// but the first reached the directory.
	if n := count.calls(); n != 1 {
		t.Errorf("directory asked %d times for 200 concurrent lookups, want 1", n)
	}
	if ans, err := stack().Lookup(ctx, k); err != nil || ans.Tier != "memcache" {
		t.Errorf("second daemon: %+v, %v; want from memcache", ans, err)
	}

	// Everything below the LRU fails: a fresh entry is a hit, an expired
	// found one is served stale, a key never seen is an error.
	server.Stop()
	sw.down.Store(true)
	if ans, err := first.Lookup(ctx, k); err != nil || ans.Tier != "lru" || ans.Stale {
		t.Errorf("fresh entry with everything down: %+v, %v; want an lru hit", ans, err)
	}
	clock.Advance(2 * time.Hour)
	if ans, err := first.Lookup(ctx, k); err != nil || !ans.Found || !ans.Stale || ans.Tier != "lru" {
		t.Errorf("expired entry with everything down: %+v, %v; want a stale found answer from lru", ans, err)
	}
	if ans, err := first.Lookup(ctx, rcptKey("new@example.com")); !errors.Is(err, errDirectory) {
		t.Errorf("new key with everything down: %+v, %v; want %v", ans, err, errDirectory)
	}
}

// TestMemcacheSkewedClockAccepted: an answer a little ahead of this
// daemon's clock (another daemon's clock runs fast) is not garbage.
func TestMemcacheSkewedClockAccepted(t *testing.T) {
	server := testserver.StartMemcached(t)
	raw := memcache.New(server.Addr())
	d := newMemcacheDaemon(t, server.Addr(), directory(nil), testMemcacheOptions())
	k := rcptKey("skew@example.com")
	at := time.Now().Add(30 * time.Second)
	if err := raw.Set(&memcache.Item{Key: d.mc.ItemKey(k), Value: encodeMemcacheValue(true, at)}); err != nil {
		t.Fatal(err)
	}
	ans, err := d.mc.Lookup(context.Background(), k)
	if err != nil || !ans.Found || ans.Tier != "memcache" || ans.At.UnixMilli() != at.UnixMilli() {
		t.Errorf("lookup = %+v, %v; want found from memcache at %v", ans, err, at)
	}
}
