// Package faults_test runs the daemon as a process against a real slapd
// and memcached, drives it with go-milter's client at a steady, bounded
// rate, injects faults (servers killed, frozen, restarted; connections
// dropped; signals) and counts every reply by class: the promises of
// issue 7 ("no false 550 under any fault", process faults, secrets, soak)
// held at the level an MTA sees.
package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// Users in every test directory: user0@example.com ... user(nUsers-1).
const nUsers = 600

func userAddr(i int) string { return fmt.Sprintf("user%d@example.com", i) }

// Reply classes counted by the load client.
const (
	accept   = "accept"   // continue
	reject   = "550"      // 550 5.1.1 user unknown
	tempfail = "451"      // 451 4.3.0 lookup failure
	failed   = "failed"   // no reply: the session broke
	other    = "other"    // anything else
	unknownG = "unknown"  // group of addresses that do not exist
	knownG   = "known"    // group of addresses that exist
	freshG   = "new"      // existing addresses asked for the first time
	freshUnG = "new-unkn" // unknown addresses asked for the first time
)

// env is a slapd (with nUsers users), optionally memcached, and the
// daemon configured on them.
type env struct {
	slapd   *testserver.Slapd
	mc      *testserver.Memcached
	d       *testserver.Daemon
	cfg     string
	metrics string // host:port of /metrics
	opts    envOptions
}

type envOptions struct {
	useMemcache bool
	// ldapURLs replace [slapd.URL()] ("%s" is replaced by it).
	ldapURLs []string
	// bindPasswordFile: bind as the root DN with this file.
	bindPasswordFile string
	// extra is appended to the top level of the config.
	extra string
	// cache, ldap and memcache are extra lines of those sections; ldap
	// holds ldapTimeout unless it sets a timeout.
	cache, ldap, memcache string
	// decisionTimeout is decisionTimeout when 0.
	decisionTimeout time.Duration
	// slapd are the slapd options (the users are added to Entries).
	slapd testserver.SlapdOptions
}

// ldapTimeout is the ldap.timeout line the tests use unless they set
// their own: long enough that a loaded machine (another test package
// under -race beside this one) does not turn a healthy lookup into a
// 451; decisionTimeout (the default of envOptions.decisionTimeout) is
// above it, so the directory's own error answers first.
const (
	ldapTimeout     = "timeout = \"3s\""
	decisionTimeout = 5 * time.Second
)

func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	entries := make([]testserver.Entry, nUsers)
	for i := range entries {
		entries[i] = testserver.Person(fmt.Sprintf("user%d", i), userAddr(i))
	}
	so := o.slapd
	so.Entries = append(entries, so.Entries...)
	e := &env{opts: o, slapd: testserver.StartSlapd(t, so)}
	if o.useMemcache {
		e.mc = testserver.StartMemcached(t)
	}
	if o.decisionTimeout == 0 {
		o.decisionTimeout = decisionTimeout
		e.opts.decisionTimeout = o.decisionTimeout
	}
	if !strings.Contains(o.ldap, "timeout") {
		o.ldap = ldapTimeout + "\n" + o.ldap
	}
	e.metrics = fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t, "127.0.0.1"))
	urls := []string{e.slapd.URL()}
	if o.ldapURLs != nil {
		urls = nil
		for _, u := range o.ldapURLs {
			urls = append(urls, strings.ReplaceAll(u, "%s", e.slapd.URL()))
		}
	}
	quoted := make([]string, len(urls))
	for i, u := range urls {
		quoted[i] = strconv.Quote(u)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen = %q\nmetrics_listen = %q\nsource = \"ldap\"\ndecision_timeout = %q\n%s\n",
		fmt.Sprintf("inet:%d@127.0.0.1", testserver.FreePort(t, "127.0.0.1")), e.metrics, o.decisionTimeout.String(), o.extra)
	b.WriteString("[hosts]\nenabled = false\n[recipients]\ndomains = [\"example.com\"]\n")
	fmt.Fprintf(&b, "[cache]\n%s\n", o.cache)
	if o.useMemcache {
		fmt.Fprintf(&b, "[memcache]\nservers = [%q]\n%s\n", e.mc.Addr(), o.memcache)
	}
	fmt.Fprintf(&b, "[ldap]\nurls = [%s]\nbase_dn = %q\n%s\n", strings.Join(quoted, ", "), testserver.SlapdSuffix, o.ldap)
	if o.bindPasswordFile != "" {
		fmt.Fprintf(&b, "bind_dn = %q\nbind_password_file = %q\n", testserver.SlapdRootDN, o.bindPasswordFile)
	}
	e.cfg = filepath.Join(t.TempDir(), "antespam-milter.toml")
	if err := os.WriteFile(e.cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	e.d = testserver.StartDaemon(t, e.cfg)
	return e
}

func classify(a *gomilter.Action) string {
	switch {
	case a.Code == gomilter.ActContinue:
		return accept
	case a.Code == gomilter.ActReplyCode && a.SMTPCode == 550:
		return reject
	case a.Code == gomilter.ActReplyCode && a.SMTPCode == 451:
		return tempfail
	}
	return other
}

// item is one RCPT the load asks: its address and its group.
type item struct{ group, addr string }

// tally counts replies by group and class, and RCPT latencies.
type tally struct {
	mu       sync.Mutex
	sent     int
	answered int
	counts   map[string]map[string]int
	maxLat   time.Duration
	slow     int // answers slower than limit
	limit    time.Duration
	examples []string // a few unexpected replies, for messages
	// at records when each class of each group happened (unix ns), for
	// windows of faults.
	at map[string][]int64
	// tempfails are the 451s counted, with their addresses, for matching
	// them with the daemon's decision lines.
	tempfails []tempfailAt
	// retried are the 451s retried (loadSpec.retry451) and not counted.
	retried []tempfailAt
}

// tempfailAt is one 451: when and for which address.
type tempfailAt struct {
	at   time.Time
	addr string
}

func newTally(limit time.Duration) *tally {
	return &tally{counts: map[string]map[string]int{}, limit: limit, at: map[string][]int64{}}
}

func (t *tally) record(it item, class string, lat time.Duration, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts[it.group] == nil {
		t.counts[it.group] = map[string]int{}
	}
	t.counts[it.group][class]++
	if class != failed {
		t.answered++
	}
	if lat > t.maxLat {
		t.maxLat = lat
	}
	if t.limit > 0 && lat > t.limit {
		t.slow++
	}
	now := time.Now()
	k := it.group + "/" + class
	t.at[k] = append(t.at[k], now.UnixNano())
	if class == tempfail {
		t.tempfails = append(t.tempfails, tempfailAt{now, it.addr})
	}
	if detail != "" && len(t.examples) < 10 {
		t.examples = append(t.examples, fmt.Sprintf("%s %s: %s", it.group, it.addr, detail))
	}
}

func (t *tally) get(group, class string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts[group][class]
}

// total counts class over every group.
func (t *tally) total(class string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, m := range t.counts {
		n += m[class]
	}
	return n
}

func (t *tally) groupTotal(group string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.counts[group] {
		n += c
	}
	return n
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	groups := make([]string, 0, len(t.counts))
	for g := range t.counts {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	var b strings.Builder
	fmt.Fprintf(&b, "sent %d answered %d max latency %s", t.sent, t.answered, t.maxLat.Round(time.Millisecond))
	if len(t.retried) > 0 {
		fmt.Fprintf(&b, " 451s retried %d (first %s)", len(t.retried), t.retried[0].addr)
	}
	for _, g := range groups {
		fmt.Fprintf(&b, "; %s:", g)
		classes := make([]string, 0)
		for c := range t.counts[g] {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		for _, c := range classes {
			fmt.Fprintf(&b, " %s=%d", c, t.counts[g][c])
		}
	}
	if len(t.examples) > 0 {
		fmt.Fprintf(&b, "; examples: %q", t.examples)
	}
	return b.String()
}

// loadSpec is a steady load: workers sessions at a time, rate RCPTs per
// second in all, at most max RCPTs (and never past ctx), rcptsPerSession
// RCPTs in each session, next choosing each RCPT.
type loadSpec struct {
	workers         int
	rate            int
	max             int
	rcptsPerSession int
	next            func(n int) item
	// readTimeout of the client; decision_timeout plus a margin.
	readTimeout time.Duration
	// retry451, when set, is the pause after a 451 before the RCPT is
	// sent once more in the same session; only the second reply is
	// counted (the first is in tally.retried). A 451 is the MTA's signal
	// to try again: phases that check recovery use this so that one
	// lookup slowed past ldap.timeout by a loaded machine does not fail
	// them, while a lasting failure still does. A 550 is never retried.
	retry451 time.Duration
}

// runLoad runs spec until ctx ends or max RCPTs were sent, counting into
// t, and returns when every worker is done.
// mixedLoad is a loadSpec.next: of every period items, one a user no
// cache holds yet (fresh, in order through the directory), one of pool
// unknown addresses and the rest users among the first pool (known,
// cached after their first time).
func mixedLoad(period, pool int) func(int) item {
	return func(n int) item {
		switch n % period {
		case 0:
			return item{freshG, userAddr(n / period % nUsers)}
		case 1:
			return item{unknownG, fmt.Sprintf("nobody%d@example.com", n%pool)}
		}
		return item{knownG, userAddr(n % pool)}
	}
}

// startLoad runs runLoad in the background; the channel closes when it
// has ended.
func startLoad(ctx context.Context, d *testserver.Daemon, spec loadSpec, t *tally) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLoad(ctx, d, spec, t)
	}()
	return done
}

func runLoad(ctx context.Context, d *testserver.Daemon, spec loadSpec, t *tally) {
	if spec.rcptsPerSession == 0 {
		spec.rcptsPerSession = 3
	}
	if spec.readTimeout == 0 {
		spec.readTimeout = 15 * time.Second
	}
	tokens := make(chan int)
	go func() {
		defer close(tokens)
		tick := time.NewTicker(time.Second / time.Duration(spec.rate))
		defer tick.Stop()
		for n := 0; n < spec.max; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case <-ctx.Done():
				return
			case tokens <- n:
			}
		}
	}()
	c := d.MilterClient(spec.readTimeout, nil)
	var wg sync.WaitGroup
	for range spec.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, ok := <-tokens
				if !ok {
					return
				}
				session(c, spec, n, tokens, t)
			}
		}()
	}
	wg.Wait()
}

// session runs one milter session: connect, MAIL, up to rcptsPerSession
// RCPTs (the first with token n, the rest taking tokens), then QUIT.
func session(c *gomilter.Client, spec loadSpec, n int, tokens <-chan int, t *tally) {
	it := spec.next(n)
	t.mu.Lock()
	t.sent++
	t.mu.Unlock()
	s, err := c.Session()
	if err == nil {
		_, err = s.Conn("mx.client.test", gomilter.FamilyInet, 25, "192.0.2.1")
		if err == nil {
			_, err = s.Mail("<sender@example.org>", nil)
		}
	}
	if err != nil {
		t.record(it, failed, 0, "session: "+err.Error())
		if s != nil {
			s.Close()
		}
		return
	}
	defer s.Close()
	for k := 0; ; k++ {
		start := time.Now()
		a, err := s.Rcpt("<"+it.addr+">", nil)
		lat := time.Since(start)
		if err == nil && spec.retry451 > 0 && classify(a) == tempfail {
			t.mu.Lock()
			t.retried = append(t.retried, tempfailAt{time.Now(), it.addr})
			t.mu.Unlock()
			time.Sleep(spec.retry451)
			start = time.Now()
			a, err = s.Rcpt("<"+it.addr+">", nil)
			lat = time.Since(start)
		}
		if err != nil {
			t.record(it, failed, lat, "rcpt: "+err.Error())
			return
		}
		class := classify(a)
		detail := ""
		if class == other {
			detail = fmt.Sprintf("action %c %d %s", a.Code, a.SMTPCode, a.SMTPText)
		}
		t.record(it, class, lat, detail)
		if k+1 >= spec.rcptsPerSession {
			return
		}
		n2, ok := <-tokens
		if !ok {
			return
		}
		it = spec.next(n2)
		t.mu.Lock()
		t.sent++
		t.mu.Unlock()
	}
}

// ask sends one RCPT per address, one session each, sequentially, and
// returns the classes.
func ask(t *testing.T, d *testserver.Daemon, addrs ...string) []string {
	t.Helper()
	out := make([]string, len(addrs))
	c := d.MilterClient(20*time.Second, nil)
	for i, addr := range addrs {
		s, err := c.Session()
		if err != nil {
			t.Fatalf("session: %v", err)
		}
		out[i] = classify(testserver.AskRcpt(t, s, "192.0.2.1", addr))
		s.Close()
	}
	return out
}

// askRecovered is ask for a check that the daemon has recovered: a 451
// is asked once more after retryPause (the MTA would retry too) and
// logged; only the second reply is returned. A 550 is returned as is.
func askRecovered(t *testing.T, d *testserver.Daemon, addrs ...string) []string {
	t.Helper()
	out := ask(t, d, addrs...)
	for i, c := range out {
		if c == tempfail {
			time.Sleep(retryPause)
			out[i] = ask(t, d, addrs[i])[0]
			t.Logf("RCPT <%s>: 451, then %s when asked again %s later", addrs[i], out[i], retryPause)
		}
	}
	return out
}

// retryPause is how long a recovery check waits before asking again
// after a 451.
const retryPause = 500 * time.Millisecond

// metric reads one sample of /metrics ("name" or `name{label="v"}`); -1
// when absent.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	m := metricsAll(t, addr)
	if v, ok := m[name]; ok {
		return v
	}
	return -1
}

func metricsAll(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// rssKB is the daemon's resident set size from /proc/PID/status.
func rssKB(t *testing.T, d *testserver.Daemon) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Cmd.Process.Pid))
	if err != nil {
		t.Fatalf("daemon status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// countingDialer remembers the connections it made, so a test can cut
// them the way a dying MTA would.
type countingDialer struct {
	mu    sync.Mutex
	conns []net.Conn
	n     atomic.Int64
}

func (c *countingDialer) Dial(network, addr string) (net.Conn, error) {
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err == nil {
		c.mu.Lock()
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
		c.n.Add(1)
	}
	return conn, err
}

func (c *countingDialer) last() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[len(c.conns)-1]
}
