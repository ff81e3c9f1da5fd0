package lookup

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/metrics"
)

// TestMemcacheBatchAnswersEachCaller: 200 lookups released together, of
// keys found, not found, absent and garbage in memcached, each get exactly
// their own answer while their gets are batched. Every cached answer has
// its own time, so a swapped or lost result shows: a wrong At or Found, or
// an answer from the directory where memcached held one.
func TestMemcacheBatchAnswersEachCaller(t *testing.T) {
	const lookups = 200
	server := testserver.StartMemcached(t)
	raw := memcache.New(server.Addr())
	dir := directory(nil)
	d := newMemcacheDaemon(t, server.Addr(), dir, testMemcacheOptions())
	ctx := context.Background()
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for round := 0; ; round++ {
		type want struct {
			key   Key
			found bool
			tier  string
			at    time.Time // zero: not checked
		}
		wants := make([]want, lookups)
		for i := range wants {
			name := fmt.Sprintf("r%d-u%d@example.com", round, i)
			if i%10 == 9 {
				// A long name, kept as is in the key: long request lines.
				name = fmt.Sprintf("r%d-u%d-%s@example.com", round, i, strings.Repeat("x", 200))
			}
			k := rcptKey(name)
			at := base.Add(-time.Duration(i) * time.Second)
			switch i % 4 {
			case 0, 1: // cached found / not found
				wants[i] = want{k, i%4 == 0, "memcache", at}
				if err := raw.Set(&memcache.Item{Key: d.mc.ItemKey(k), Value: encodeMemcacheValue(i%4 == 0, at), Expiration: 600}); err != nil {
					t.Fatal(err)
				}
			case 2: // absent: the directory answers
				wants[i] = want{k, i%8 == 2, "map", time.Time{}}
				dir.names[name] = i%8 == 2
			case 3: // garbage: a miss, the directory answers
				wants[i] = want{k, true, "map", time.Time{}}
				dir.names[name] = true
				if err := raw.Set(&memcache.Item{Key: d.mc.ItemKey(k), Value: []byte("garbage"), Expiration: 600}); err != nil {
					t.Fatal(err)
				}
			}
		}
		asksBefore := d.count.calls()
		batchesBefore, keysBefore := d.mc.batch.batches.Load(), d.mc.batch.keys.Load()
		start := make(chan struct{})
		errs := make(chan error, lookups)
		var wg sync.WaitGroup
		for _, w := range wants {
			wg.Go(func() {
				<-start
				ans, err := d.mc.Lookup(ctx, w.key)
				if err != nil || ans.Found != w.found || ans.Tier != w.tier || !w.at.IsZero() && !ans.At.Equal(w.at) {
					errs <- fmt.Errorf("round %d: lookup %s = %+v, %v; want Found %v from %s at %v", round, w.key, ans, err, w.found, w.tier, w.at)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
		if n, want := d.count.calls()-asksBefore, lookups/2; n != want {
			t.Fatalf("round %d: directory asked %d times, want %d (one per absent or garbage key)", round, n, want)
		}
		// Every lookup reads its item once and the half that miss read
		// it again under the lock: 300 keys. Fewer requests than keys
		// means some were batched, which is what this test is about.
		batches, keys := d.mc.batch.batches.Load()-batchesBefore, d.mc.batch.keys.Load()-keysBefore
		t.Logf("round %d: %d keys in %d requests", round, keys, batches)
		if keys != lookups*3/2 {
			t.Fatalf("round %d: %d keys read, want %d", round, keys, lookups*3/2)
		}
		if batches < keys {
			return
		}
		if round == 20 {
			t.Fatal("20 rounds of 200 concurrent lookups and no get was ever batched")
		}
	}
}

// TestMemcacheBatchServerDown: gets batched against a stopped or frozen
// memcached are misses, the lookups answered by the directory, with one
// error counted per request (not per key); the gets queued behind a
// failed request are answered at once, unsent; none hangs.
func TestMemcacheBatchServerDown(t *testing.T) {
	const lookups = 200
	stop := func(_ *testing.T, s *testserver.Memcached) { s.Stop() }
	freeze := func(t *testing.T, s *testserver.Memcached) { s.Freeze(); t.Cleanup(s.Thaw) }
	for _, tt := range []struct {
		name    string
		down    func(*testing.T, *testserver.Memcached)
		backoff time.Duration
	}{
		{"stopped", stop, 0},
		{"frozen", freeze, 0},
		// Without a backoff, the queue behind a failed request is
		// answered at once all the same.
		{"stopped, no backoff", stop, -1},
		{"frozen, no backoff", freeze, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			server := testserver.StartMemcached(t)
			opts := testMemcacheOptions()
			opts.Timeout = 100 * time.Millisecond
			opts.Backoff = tt.backoff
			dir := directory(nil)
			d := newMemcacheDaemon(t, server.Addr(), dir, opts)
			ctx := context.Background()
			// Warm the connection pool, so that a frozen server is
			// met on open connections as well as on new ones.
			if _, err := d.mc.Lookup(ctx, rcptKey("warm@example.com")); err != nil {
				t.Fatal(err)
			}
			tt.down(t, server)
			errsBefore := counterValue(t, metrics.MemcacheErrors.WithLabelValues("get"))
			batchesBefore, keysBefore := d.mc.batch.batches.Load(), d.mc.batch.keys.Load()
			start := make(chan struct{})
			errs := make(chan error, lookups)
			var wg sync.WaitGroup
			for i := range lookups {
				name := fmt.Sprintf("u%d@example.com", i)
				dir.names[name] = i%2 == 0
				wg.Go(func() {
					<-start
					ans, err := d.mc.Lookup(ctx, rcptKey(name))
					if err != nil || ans.Found != (i%2 == 0) || ans.Tier != "map" {
						errs <- fmt.Errorf("lookup %s = %+v, %v; want Found %v from map", name, ans, err, i%2 == 0)
					}
				})
			}
			close(start)
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				// A hang guard, far above any bound (a few Timeouts).
				t.Fatal("lookups still waiting 30s after memcached went down")
			}
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			batches, keys := d.mc.batch.batches.Load()-batchesBefore, d.mc.batch.keys.Load()-keysBefore
			failed := counterValue(t, metrics.MemcacheErrors.WithLabelValues("get")) - errsBefore
			t.Logf("%d keys in %d requests, %v get errors counted", keys, batches, failed)
			// The gets queued behind the first failed requests are
			// answered without one: sending them would make every key
			// a request's worth of waiting, up to a Timeout each.
			if keys == 0 || keys >= lookups/2 {
				t.Errorf("%d of %d keys sent to a memcached that is down, want a few (the queue answered at once)", keys, lookups)
			}
			// Without a backoff the lookups' own lock polls fail and
			// count as gets too: count only with one.
			if tt.backoff >= 0 && failed != float64(batches) {
				t.Errorf("%v get errors counted for %d requests, want one per request", failed, batches)
			}
		})
	}
}

// BenchmarkMemcacheHitParallel is a memcached hit with as many concurrent
// lookups as the load benchmark's sessions (-c): the gets are batched.
// c=1 is one lookup at a time, which a batch must not slow down.
func BenchmarkMemcacheHitParallel(b *testing.B) {
	for _, c := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			d, all := memcacheHitSetup(b)
			ctx := context.Background()
			lookup := func(i int) {
				ans, err := d.mc.Lookup(ctx, all[i%len(all)])
				if err != nil || ans.Tier != "memcache" {
					b.Fatalf("lookup = %+v, %v", ans, err)
				}
			}
			b.ReportAllocs()
			cpu0 := testserver.ProcessCPU(b)
			b.ResetTimer()
			if c == 1 {
				for i := 0; b.Loop(); i++ {
					lookup(i)
				}
			} else {
				b.SetParallelism(max(1, c/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						lookup(i)
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(testserver.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			reportBatching(b, d.mc)
		})
	}
}

// reportBatching reports the average keys per memcached get request.
func reportBatching(b *testing.B, mc *Memcache) {
	if n := mc.batch.batches.Load(); n > 0 {
		b.ReportMetric(float64(mc.batch.keys.Load())/float64(n), "keys/req")
	}
}
