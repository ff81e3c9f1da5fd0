package faults_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"
)

// soakDuration is SOAK_DURATION (a Go duration; `make soak` sets 10m),
// 45s by default.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("SOAK_DURATION")
	if v == "" {
		return 45 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 20*time.Second {
		t.Fatalf("SOAK_DURATION=%q: want a duration of at least 20s", v)
	}
	return d
}

type sample struct {
	at         time.Duration
	rssKB      int
	goroutines float64
	fds        float64
}

// TestSoak: a steady load for SOAK_DURATION with a mix of LRU hits
// (a hot set of users), misses that go to memcached or slapd (users
// cycling through a bounded LRU) and misses that are unknown (a fresh
// address each time), with faults in the middle: memcached killed and
// restarted at a third, slapd frozen (SIGSTOP) for 6 s at a half, longer
// than decision_timeout, so that new keys do get 451s. RSS and
// goroutines stay flat (end at most 1.5 times the level after warm-up,
// plus slack), and every reply is explained: hot users always accepted,
// other users accepted, unknown ones rejected, a 451 only for a key not
// in the LRU while slapd is frozen (or just after), never a 550 for a
// user, never a broken session.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	e := startEnv(t, envOptions{useMemcache: true,
		cache:    "size = 1000\nttl = \"2s\"\nnegative_ttl = \"2s\"\nstale_max = \"1h\"",
		memcache: "ttl = \"5s\"\nnegative_ttl = \"5s\"", ldap: "timeout = \"2s\"", decisionTimeout: 4 * time.Second})
	// ldap.timeout is 2s: a shared, loaded machine can stall slapd past
	// a shorter one, and a 451 outside the injected fault would fail the
	// soak (none is allowed).
	const rate = 200
	const hot = 50
	next := func(n int) item {
		switch n % 10 {
		case 0, 1, 2, 3, 4:
			return item{"hot", userAddr(n % hot)}
		case 5, 6, 7:
			return item{"cycle", userAddr(hot + (n*7)%(nUsers-hot))}
		}
		return item{unknownG, fmt.Sprintf("nobody-%d@example.com", n)}
	}
	tl := newTally(e.opts.decisionTimeout + margin)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLoad(ctx, e.d, loadSpec{workers: 16, rate: rate, max: rate * int(dur/time.Second) * 2, next: next}, tl)
	}()

	mcStop, slapdFreeze := dur/3, dur/2
	var (
		samples              []sample
		freezeAt, thawAt     time.Time
		mcStopped, mcStarted bool
		slapdFroze           bool
		tick                 = time.NewTicker(time.Second)
	)
	defer tick.Stop()
	defer func() {
		if slapdFroze && thawAt.IsZero() {
			e.slapd.Thaw()
		}
	}()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
		}
		el := time.Since(start)
		m := metricsAll(t, e.metrics)
		samples = append(samples, sample{el, rssKB(t, e.d), m["go_goroutines"], m["process_open_fds"]})
		switch {
		case !mcStopped && el >= mcStop:
			mcStopped = true
			e.mc.Stop()
		case mcStopped && !mcStarted && el >= mcStop+2*time.Second:
			mcStarted = true
			e.mc.Start()
		case !slapdFroze && el >= slapdFreeze:
			slapdFroze = true
			freezeAt = time.Now()
			e.slapd.Freeze()
		case slapdFroze && thawAt.IsZero() && time.Since(freezeAt) >= 6*time.Second:
			e.slapd.Thaw()
			thawAt = time.Now()
		}
	}
	<-done
	if !slapdFroze || thawAt.IsZero() {
		t.Fatalf("the faults did not happen (froze %v, thawed %v)", slapdFroze, !thawAt.IsZero())
	}
	t.Logf("soak %s at %d RCPT/s: %s", dur, rate, tl)

	// Every reply explained.
	if tl.sent != tl.answered || tl.total(failed) != 0 || tl.total(other) != 0 {
		t.Errorf("sent %d, answered %d, %d broken sessions, %d other replies: %s",
			tl.sent, tl.answered, tl.total(failed), tl.total(other), tl)
	}
	if n := tl.get("hot", accept); n != tl.groupTotal("hot") {
		t.Errorf("hot users: %d of %d accepted: %s", n, tl.groupTotal("hot"), tl)
	}
	if n := tl.get("cycle", reject) + tl.get("hot", reject); n != 0 {
		t.Errorf("%d users got 550", n)
	}
	if n := tl.get(unknownG, accept); n != 0 {
		t.Errorf("%d unknown addresses accepted", n)
	}
	// A 451 only from the freeze to a few seconds after the thaw (the
	// LDAP pool redials with a backoff).
	from, to := freezeAt.UnixNano(), thawAt.Add(5*time.Second).UnixNano()
	for _, g := range []string{"cycle", unknownG} {
		tl.mu.Lock()
		var outside []string
		for _, ts := range tl.at[g+"/"+tempfail] {
			if ts < from || ts > to {
				outside = append(outside, time.Unix(0, ts).Sub(start).Round(time.Millisecond).String())
			}
		}
		tl.mu.Unlock()
		if len(outside) > 0 {
			t.Errorf("%d unexplained 451s for %s (freeze from %s to %s), at %v", len(outside), g,
				freezeAt.Sub(start).Round(time.Millisecond), thawAt.Sub(start).Round(time.Millisecond), outside[:min(len(outside), 10)])
		}
	}
	if tl.slow > 0 {
		t.Errorf("%d answers slower than %s", tl.slow, tl.limit)
	}

	// Flat: the level after warm-up against the end.
	warm := max(dur/5, 10*time.Second)
	var base, end []sample
	for _, s := range samples {
		if s.at >= warm-3*time.Second && s.at <= warm {
			base = append(base, s)
		}
		if s.at >= dur-4*time.Second {
			end = append(end, s)
		}
	}
	if len(base) == 0 || len(end) == 0 {
		t.Fatalf("too few samples (%d)", len(samples))
	}
	b, en := median(base), median(end)
	peak := samples[0]
	for _, s := range samples {
		if s.rssKB > peak.rssKB {
			peak = s
		}
	}
	for i := 0; i < len(samples); i += max(1, len(samples)/10) {
		s := samples[i]
		t.Logf("  at %6s: RSS %6d kB, goroutines %4.0f, open fds %4.0f", s.at.Round(time.Second), s.rssKB, s.goroutines, s.fds)
	}
	t.Logf("after warm-up (%s): RSS %d kB, goroutines %.0f, fds %.0f; end: RSS %d kB, goroutines %.0f, fds %.0f; peak RSS %d kB at %s",
		warm, b.rssKB, b.goroutines, b.fds, en.rssKB, en.goroutines, en.fds, peak.rssKB, peak.at.Round(time.Second))
	if float64(en.rssKB) > float64(b.rssKB)*1.5+8*1024 {
		t.Errorf("RSS grew from %d kB to %d kB", b.rssKB, en.rssKB)
	}
	if en.goroutines > b.goroutines*1.5+20 {
		t.Errorf("goroutines grew from %.0f to %.0f", b.goroutines, en.goroutines)
	}
	if en.fds > b.fds*1.5+20 {
		t.Errorf("open fds grew from %.0f to %.0f", b.fds, en.fds)
	}
}

// median takes each field's median over samples.
func median(ss []sample) sample {
	rss := make([]int, len(ss))
	g := make([]float64, len(ss))
	f := make([]float64, len(ss))
	for i, s := range ss {
		rss[i], g[i], f[i] = s.rssKB, s.goroutines, s.fds
	}
	sort.Ints(rss)
	sort.Float64s(g)
	sort.Float64s(f)
	return sample{rssKB: rss[len(ss)/2], goroutines: g[len(ss)/2], fds: f[len(ss)/2]}
}
