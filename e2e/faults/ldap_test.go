package faults_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// margin is the slack on top of decision_timeout for an answer to reach
// the client on a loaded machine.
const margin = 3 * time.Second

// Short TTLs so that cached answers are past them within a second or two
// of a fault: stale rules then apply.
const shortTTLs = "ttl = \"1s\"\nnegative_ttl = \"1s\"\nstale_max = \"1h\""

// warm asks every address in groups once, under a small load, and fails
// the test unless known ones are accepted and unknown ones rejected.
func warm(t *testing.T, e *env, known, unknown []string) {
	t.Helper()
	all := make([]item, 0, len(known)+len(unknown))
	for _, a := range known {
		all = append(all, item{knownG, a})
	}
	for _, a := range unknown {
		all = append(all, item{unknownG, a})
	}
	tl := newTally(0)
	runLoad(context.Background(), e.d, loadSpec{workers: 8, rate: 400, max: len(all),
		next: func(n int) item { return all[n] }}, tl)
	if tl.get(knownG, accept) != len(known) || tl.get(unknownG, reject) != len(unknown) || tl.sent != len(all) {
		t.Fatalf("warm-up: %s; want %d known accepted, %d unknown rejected", tl, len(known), len(unknown))
	}
}

// warmMix is a loadSpec.next over the warmed-up addresses: of every
// period items, one a user from freshFrom on, in order (never asked: not
// cached), one of unknown (cached not-found) and the rest of known
// (cached found).
func warmMix(period, freshFrom int, unknown, known []string) func(int) item {
	return func(n int) item {
		switch n % period {
		case 0:
			return item{freshG, userAddr(freshFrom + n/period)}
		case 1:
			return item{unknownG, unknown[n%len(unknown)]}
		}
		return item{knownG, known[n%len(known)]}
	}
}

func addrs(format string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf(format, i))
	}
	return out
}

// checkTotals: every RCPT sent was answered, nothing broke, nothing
// else than the classes allowed per group, and at least one of each group.
func checkTotals(t *testing.T, phase string, tl *tally, allowed map[string]string) {
	t.Helper()
	if tl.sent != tl.answered {
		t.Errorf("%s: %d RCPTs sent, %d answered: %s", phase, tl.sent, tl.answered, tl)
	}
	if n := tl.total(failed); n != 0 {
		t.Errorf("%s: %d sessions broke: %s", phase, n, tl)
	}
	for g, class := range allowed {
		if n := tl.groupTotal(g); n == 0 || tl.get(g, class) != n {
			t.Errorf("%s: group %s: want all %d answered %s: %s", phase, g, n, class, tl)
		}
	}
	if tl.slow > 0 {
		t.Errorf("%s: %d answers slower than %s: %s", phase, tl.slow, tl.limit, tl)
	}
}

// TestSlapdKilledAndRestarted: under steady load, with slapd killed,
// known recipients keep being accepted from the caches (stale), new ones
// and cached "unknown" ones past their TTL get 451, and not one 550 is
// sent; once slapd is back the daemon (never restarted) answers fresh.
func TestSlapdKilledAndRestarted(t *testing.T) {
	e := startEnv(t, envOptions{useMemcache: true, cache: shortTTLs,
		memcache: "ttl = \"1s\"\nnegative_ttl = \"1s\"", ldap: ldapTimeout, decisionTimeout: decisionTimeout})
	known := addrs("user%d@example.com", 0, 100)
	unknown := addrs("nobody%d@example.com", 0, 20)
	t0 := time.Now()
	warm(t, e, known, unknown)
	pid := e.d.Cmd.Process.Pid

	t.Logf("warm-up took %s", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	e.slapd.Stop()
	t.Logf("slapd stop took %s", time.Since(t0).Round(time.Millisecond))
	time.Sleep(1500 * time.Millisecond) // every cached answer past its TTL
	limit := e.opts.decisionTimeout + margin
	down := newTally(limit)
	runLoad(context.Background(), e.d, loadSpec{workers: 16, rate: 200, max: 600, next: warmMix(4, 300, unknown, known)}, down)
	t.Logf("slapd down: %s", down)
	checkTotals(t, "slapd down", down, map[string]string{knownG: accept, freshG: tempfail, unknownG: tempfail})
	if n := down.total(reject); n != 0 {
		t.Errorf("slapd down: %d replies were 550", n)
	}
	if v := metric(t, e.metrics, "antespam_stale_answers_total"); v < float64(down.get(knownG, accept)) {
		t.Errorf("antespam_stale_answers_total = %v, want at least %d", v, down.get(knownG, accept))
	}

	e.slapd.Start()
	waitFresh(t, e, "slapd came back")
	up := newTally(limit)
	runLoad(context.Background(), e.d, loadSpec{workers: 16, rate: 200, max: 400, retry451: retryPause, next: func(n int) item {
		switch n % 4 {
		case 0:
			return item{freshG, userAddr(450 + n/4)}
		case 1:
			return item{unknownG, unknown[n%len(unknown)]}
		case 2:
			return item{freshUnG, fmt.Sprintf("gone%d@example.com", n)}
		}
		return item{knownG, known[n%len(known)]}
	}}, up)
	t.Logf("slapd back: %s", up)
	checkTotals(t, "slapd back", up, map[string]string{knownG: accept, freshG: accept, unknownG: reject, freshUnG: reject})
	if e.d.Exited() || e.d.Cmd.Process.Pid != pid {
		t.Error("the daemon did not survive")
	}
}

// TestSlapdFrozen: slapd stopped with SIGSTOP (connections hang, nothing
// is refused): every decision is still answered within decision_timeout
// plus a margin, known recipients stale, none 550; SIGCONT brings fresh
// answers back.
func TestSlapdFrozen(t *testing.T) {
	e := startEnv(t, envOptions{cache: shortTTLs, ldap: ldapTimeout, decisionTimeout: decisionTimeout})
	known := addrs("user%d@example.com", 0, 100)
	unknown := addrs("nobody%d@example.com", 0, 20)
	warm(t, e, known, unknown)

	e.slapd.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			e.slapd.Thaw()
		}
	}()
	time.Sleep(1200 * time.Millisecond)
	limit := e.opts.decisionTimeout + margin
	frozen := newTally(limit)
	// Every lookup waits ldap.timeout: 64 sessions at a time, three RCPTs
	// each.
	runLoad(context.Background(), e.d, loadSpec{workers: 64, rate: 150, max: 192, next: warmMix(3, 300, unknown, known)}, frozen)
	t.Logf("slapd frozen: %s", frozen)
	checkTotals(t, "slapd frozen", frozen, map[string]string{knownG: accept, freshG: tempfail, unknownG: tempfail})
	if n := frozen.total(reject); n != 0 {
		t.Errorf("slapd frozen: %d replies were 550", n)
	}

	e.slapd.Thaw()
	thawed = true
	waitFresh(t, e, "SIGCONT")
	after := newTally(limit)
	runLoad(context.Background(), e.d, loadSpec{workers: 16, rate: 200, max: 300, retry451: retryPause, next: warmMix(3, 460, unknown, known)}, after)
	t.Logf("after SIGCONT: %s", after)
	checkTotals(t, "after SIGCONT", after, map[string]string{knownG: accept, freshG: accept, unknownG: reject})
}

// TestFirstURLDead: with the first LDAP URL refusing connections or
// black-holing them, the second serves every lookup.
func TestFirstURLDead(t *testing.T) {
	for _, tt := range []struct {
		name string
		url  func(t *testing.T) string
		// settle: lookups before this are not counted (a black hole costs
		// one ldap.timeout before the URL is known to be down).
		settle bool
	}{
		{"refused", func(t *testing.T) string {
			return fmt.Sprintf("ldap://127.0.0.1:%d", testserver.FreePort(t, "127.0.0.1"))
		}, false},
		{"black hole", func(t *testing.T) string { return "ldap://" + testserver.BlackHole(t) }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A lookup that waits for a dial may spend one ldap.timeout on
			// the dead URL before the live one: decision_timeout covers both.
			e := startEnv(t, envOptions{ldapURLs: []string{tt.url(t), "%s"}, ldap: ldapTimeout, decisionTimeout: 8 * time.Second})
			if tt.settle && !testserver.Eventually(40*time.Second, func() bool { return ask(t, e.d, userAddr(599))[0] == accept }) {
				t.Fatalf("no answer from the second URL within 40s:\n%s", e.d.Output())
			}
			tl := newTally(e.opts.decisionTimeout + margin)
			runLoad(context.Background(), e.d, loadSpec{workers: 16, rate: 200, max: 400, retry451: retryPause, next: func(n int) item {
				if n%2 == 0 {
					return item{freshG, userAddr(n / 2)}
				}
				return item{freshUnG, fmt.Sprintf("nobody%d@example.com", n)}
			}}, tl)
			t.Logf("%s first: %s", tt.name, tl)
			checkTotals(t, tt.name, tl, map[string]string{freshG: accept, freshUnG: reject})
		})
	}
}

// TestMemcachedKilledAndRestarted: memcached killed in the middle of a
// steady load and started again: not one decision fails or changes.
func TestMemcachedKilledAndRestarted(t *testing.T) {
	e := startEnv(t, envOptions{useMemcache: true, cache: "ttl = \"1s\"\nnegative_ttl = \"1s\"",
		memcache: "ttl = \"2s\"\nnegative_ttl = \"2s\"\ntimeout = \"100ms\""})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tl := newTally(e.opts.decisionTimeout + margin)
	done := startLoad(ctx, e.d, loadSpec{workers: 16, rate: 200, max: 1000, next: mixedLoad(4, 50)}, tl)
	time.Sleep(1500 * time.Millisecond)
	e.mc.Stop()
	time.Sleep(1500 * time.Millisecond)
	e.mc.Start()
	<-done
	t.Logf("memcached killed and restarted: %s", tl)
	checkTotals(t, "memcached restart", tl, map[string]string{knownG: accept, freshG: accept, unknownG: reject})
	if tl.sent != 1000 {
		t.Errorf("sent %d, want 1000", tl.sent)
	}
	m := metricsAll(t, e.metrics)
	errs := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "antespam_memcache_errors_total") {
			errs += v
		}
	}
	if errs == 0 {
		t.Error("antespam_memcache_errors_total is 0: the fault was not seen")
	}
}

// TestSlapdPendingLimit: slapd drops an anonymous connection with more
// than 100 pending requests. 300 unique lookups at once on one pooled
// connection, twice: every one answered, none tempfailed.
func TestSlapdPendingLimit(t *testing.T) {
	e := startEnv(t, envOptions{ldap: "connections = 1\ntimeout = \"5s\"", decisionTimeout: 10 * time.Second})
	for round := range 2 {
		const n = 300
		var (
			wg    sync.WaitGroup
			ready sync.WaitGroup // sessions at RCPT (or failed before)
			start = make(chan struct{})
			tl    = newTally(0)
		)
		c := e.d.MilterClient(30*time.Second, nil)
		for i := range n {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				it := item{freshG, userAddr(round*n + i)}
				tl.mu.Lock()
				tl.sent++
				tl.mu.Unlock()
				s, err := c.Session()
				if err == nil {
					defer s.Close()
					if _, err = s.Conn("mx.client.test", 2, 25, "192.0.2.1"); err == nil {
						_, err = s.Mail("<s@example.org>", nil)
					}
				}
				ready.Done()
				<-start
				if err != nil {
					tl.record(it, failed, 0, err.Error())
					return
				}
				t0 := time.Now()
				a, err := s.Rcpt("<"+it.addr+">", nil)
				if err != nil {
					tl.record(it, failed, time.Since(t0), err.Error())
					return
				}
				tl.record(it, classify(a), time.Since(t0), "")
			}()
		}
		ready.Wait() // every session open, past MAIL, waiting to send RCPT
		close(start)
		wg.Wait()
		t.Logf("round %d: %s", round, tl)
		checkTotals(t, fmt.Sprintf("round %d", round), tl, map[string]string{freshG: accept})
	}
	if strings.Contains(e.d.Output(), "connection closed by the server") {
		t.Errorf("slapd dropped the pooled connection:\n%s", e.d.Output())
	}
}

// TestHostileRecipients: recipients built to widen the LDAP filter
// (wildcards, a closing parenthesis and an OR, backslash escapes) match
// nobody and get 550 from the daemon, never a continue; real users next
// to them are unaffected.
func TestHostileRecipients(t *testing.T) {
	e := startEnv(t, envOptions{})
	hostile := []string{
		"*@example.com",
		"us*r0@example.com",
		"user0*@example.com",
		`"*)(mail=*"@example.com`,
		`"user0@example.com)(|(mail=*"@example.com`,
		`"*)(objectClass=*"@example.com`,
		`"\\2a"@example.com`,
	}
	got := ask(t, e.d, hostile...)
	for i, a := range hostile {
		if got[i] != reject {
			t.Errorf("RCPT <%s>: %s, want 550", a, got[i])
		}
	}
	if got := ask(t, e.d, userAddr(0), userAddr(1)); got[0] != accept || got[1] != accept {
		t.Errorf("real users: %q", got)
	}
}

// waitFresh waits up to 40 s for the directory's answer to a user no cache
// holds (user599) after the directory came back, what says how.
func waitFresh(t *testing.T, e *env, what string) {
	t.Helper()
	back := time.Now()
	if !testserver.Eventually(40*time.Second, func() bool { return ask(t, e.d, userAddr(599))[0] == accept }) {
		t.Fatalf("no fresh answer 40s after %s:\n%s", what, e.d.Output())
	}
	t.Logf("fresh answers %s after %s", time.Since(back).Round(time.Millisecond), what)
}
