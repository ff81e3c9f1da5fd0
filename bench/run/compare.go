package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// setup is one milter compared with the others.
type setup struct {
	name string
	d    *daemon
}

// result is what one setup did over the rounds at one concurrency.
type result struct {
	runs []*summary
}

func (r *result) sessions() []float64 {
	return r.field(func(s *summary) float64 { return s.SessionsPerS })
}
func (r *result) p99() []float64 { return r.field(func(s *summary) float64 { return s.Rcpt.P99 }) }
func (r *result) cpu() []float64 { return r.field(func(s *summary) float64 { return s.cpuPerSession }) }
func (r *result) field(f func(*summary) float64) []float64 {
	out := make([]float64, len(r.runs))
	for i, s := range r.runs {
		out[i] = f(s)
	}
	return out
}

// compare runs every setup at every concurrency for -rounds rounds, the
// setups' order rotating from round to round, and returns the results
// indexed by concurrency and setup name.
func compare(setups []setup, concs []int, args ...string) (map[int]map[string]*result, error) {
	res := map[int]map[string]*result{}
	for _, c := range concs {
		res[c] = map[string]*result{}
		for _, s := range setups {
			res[c][s.name] = &result{}
		}
	}
	for r := 0; r < *rounds; r++ {
		for _, c := range concs {
			for i := range setups {
				s := setups[(i+r)%len(setups)]
				a := append([]string{"-addr", s.d.addr, "-c", strconv.Itoa(c), "-d", runDur.String(),
					"-timeout", (*runDur + time.Minute).String()}, args...)
				c0 := cpuTicks(s.d.p.pid())
				sum, err := load(loadCPUs(), a...)
				if err != nil {
					return nil, err
				}
				if sum.Sessions > 0 {
					sum.cpuPerSession = float64(cpuTicks(s.d.p.pid())-c0) * 1e6 / clockTicks / float64(sum.Sessions)
				}
				if sum.SessionsOK == 0 {
					return nil, fmt.Errorf("%s at -c %d: no session completed: %v", s.name, c, sum.Errors)
				}
				logf("  round %d  -c %-3d %-18s %7.0f sessions/s  %7.0f rcpt/s  p99 %8.0f µs  server CPU %4.0f µs/session  errors %d",
					r+1, c, s.name, sum.SessionsPerS, sum.RcptsPerS, sum.Rcpt.P99, sum.cpuPerSession, sum.ErrorsTotal)
				res[c][s.name].runs = append(res[c][s.name].runs, sum)
			}
		}
	}
	return res, nil
}

// ratios are b/a round by round.
func ratios(a, b []float64) []float64 {
	out := make([]float64, 0, len(a))
	for i := range a {
		if i < len(b) && a[i] > 0 {
			out = append(out, b[i]/a[i])
		}
	}
	return out
}

func fmtList(v []float64, prec int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', prec, 64)
	}
	return strings.Join(s, ", ")
}

// target is a goal for a setup against the no-op baseline.
type target struct {
	minSessions float64 // sessions/s ratio at least this
	maxP99      float64 // p99 ratio at most this (0: no goal)
}

// table renders the comparison: one row per concurrency and setup, the
// baseline first, with per-round ratios against it.
func table(res map[int]map[string]*result, concs []int, base string, others []string, goals map[string]target) (string, bool, bool) {
	var b strings.Builder
	allMet, allMetCPU := true, true
	b.WriteString("| -c | setup | sessions/s median (min–max) | RcptTo/s median | RcptTo p50 µs | RcptTo p99 µs median (min–max) | server CPU µs/session | sessions/s ratio per round | ratio median | p99 ratio median | CPU capacity ratio median | target | met (sessions/s, p99)? | met (CPU capacity)? |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range concs {
		br := res[c][base]
		fmt.Fprintf(&b, "| %d | %s | %s | %.0f | %.0f | %s | %.0f | | | | | | | |\n", c, base,
			statsOf(br.sessions()).f(0), statsOf(br.field(func(s *summary) float64 { return s.RcptsPerS })).med,
			statsOf(br.field(func(s *summary) float64 { return s.Rcpt.P50 })).med, statsOf(br.p99()).f(0), statsOf(br.cpu()).med)
		for _, o := range others {
			r := res[c][o]
			sr := ratios(br.sessions(), r.sessions())
			pr := ratios(br.p99(), r.p99())
			g := goals[o]
			ms, mp := statsOf(sr).med, statsOf(pr).med
			ok := ms >= g.minSessions && (g.maxP99 == 0 || mp <= g.maxP99)
			allMet = allMet && ok
			goal := fmt.Sprintf("≥ %.2f×", g.minSessions)
			if g.maxP99 > 0 {
				goal += fmt.Sprintf(", p99 ≤ %.1f×", g.maxP99)
			}
			// CPU capacity: sessions per second of server CPU, daemon
			// over no-op; what sessions/s would be with the server's
			// core saturated and nothing else on it.
			cr := ratios(r.cpu(), br.cpu())
			allMetCPU = allMetCPU && statsOf(cr).med >= g.minSessions
			fmt.Fprintf(&b, "| %d | %s | %s | %.0f | %.0f | %s | %.0f | %s | **%.2f** | %.2f | **%.2f** | %s | %s | %s |\n", c, o,
				statsOf(r.sessions()).f(0), statsOf(r.field(func(s *summary) float64 { return s.RcptsPerS })).med,
				statsOf(r.field(func(s *summary) float64 { return s.Rcpt.P50 })).med, statsOf(r.p99()).f(0), statsOf(r.cpu()).med,
				fmtList(sr, 2), ms, mp, statsOf(cr).med, goal, verdict(ok), verdict(statsOf(cr).med >= g.minSessions))
		}
	}
	return b.String(), allMet, allMetCPU
}

// warmFile writes every recipient of the repeated pools (known and
// unknown, -pool 1000) for a warm-up pass.
func warmFile(dir string) (string, error) {
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "user%d@%s\nnobody%d@%s\n", i, domain, i, domain)
	}
	p := filepath.Join(dir, "warm.txt")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// warm asks d every pooled recipient once, from the 100 pooled clients.
func warm(d *daemon, dir string) error {
	f, err := warmFile(dir)
	if err != nil {
		return err
	}
	s, err := load(loadCPUs(), "-addr", d.addr, "-c", "16", "-n", "800", "-rcpts", "3", "-rcpt-file", f, "-seq", "-clients", "100", "-timeout", "2m")
	if err != nil {
		return err
	}
	if s.ErrorsTotal > 0 {
		return fmt.Errorf("warm-up: %d errors: %v", s.ErrorsTotal, s.Errors)
	}
	return nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTiers counts the tier= of the daemon's decision log lines after off.
func logTiers(path string, off int64) map[string]float64 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(off, 0); err != nil {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "msg=decision") {
			continue
		}
		if i := strings.Index(line, " tier="); i >= 0 {
			t, _, _ := strings.Cut(line[i+6:], " ")
			out[t]++
		}
	}
	return out
}

// tiers reports which tier answered the lookups between two scrapes (or,
// when the daemon does not count them, in its decision log lines).
func tiers(before, after map[string]float64, logPath string, logOff int64) string {
	names := []string{"lru", "memcache", "ldap", "file"}
	var total float64
	src := "antespam_lookups_total"
	vals := map[string]float64{}
	for _, n := range names {
		v := sumMetric(after, "antespam_lookups_total", `tier="`+n+`"`) - sumMetric(before, "antespam_lookups_total", `tier="`+n+`"`)
		vals[n] = v
		total += v
	}
	if total == 0 {
		vals = logTiers(logPath, logOff)
		names = names[:0]
		for n, v := range vals {
			names = append(names, n)
			total += v
		}
		sort.Strings(names)
		if total == 0 {
			return "not counted (antespam_lookups_total is zero and decisions are not logged at this log_level)"
		}
		src = "decision log lines"
	}
	var parts []string
	for _, n := range names {
		if vals[n] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f%%", n, 100*vals[n]/total))
		}
	}
	return fmt.Sprintf("%.0f answers by tier (from %s): %s", total, src, strings.Join(parts, ", "))
}

// ratioBench is ceiling, memcache and ldap: the no-op milter against one
// daemon setup, alternated.
// With quiet, a second daemon of the same setup but log_level "warn" (no
// line per accepted decision) is compared too, to show what logging costs.
func ratioBench(dir, name string, cfg func(s *slapd, dir string) (daemonConfig, error), warmUp, quiet bool, goal target, args []string) (string, error) {
	s, err := startSlapd(dir, *ldapUsers, false)
	if err != nil {
		return "", err
	}
	dc, err := cfg(s, dir)
	if err != nil {
		return "", err
	}
	if dc.LogLevel == "" {
		dc.LogLevel = *logLevel
	}
	d, err := startDaemon(dir, "daemon", serverCPUs(), dc)
	if err != nil {
		return "", err
	}
	noop, err := startNoop(dir, "noop", serverCPUs())
	if err != nil {
		return "", err
	}
	setups := []setup{{"no-op", noop}, {name, d}}
	others := []string{name}
	goals := map[string]target{name: goal}
	if quiet && dc.LogLevel != "warn" {
		qc := dc
		qc.LogLevel = "warn"
		q, err := startDaemon(dir, "daemon-warn", serverCPUs(), qc)
		if err != nil {
			return "", err
		}
		qn := name + ", log_level warn"
		setups = append(setups, setup{qn, q})
		others = append(others, qn)
		goals[qn] = goal
	}
	if *baseline != "" {
		bc := dc
		bc.Bin = *baseline
		b, err := startDaemon(dir, "daemon-baseline", serverCPUs(), bc)
		if err != nil {
			return "", err
		}
		bn := name + " (baseline)"
		setups = append(setups, setup{bn, b})
		others = append(others, bn)
		goals[bn] = goal
	}
	if warmUp {
		for _, st := range setups[1:] {
			if err := warm(st.d, dir); err != nil {
				return "", err
			}
		}
	}
	before, err := scrape(d.metrics)
	if err != nil {
		return "", err
	}
	logOff := fileSize(d.p.log)
	concs := []int{16, 256}
	res, err := compare(setups, concs, args...)
	if err != nil {
		return "", err
	}
	after, err := scrape(d.metrics)
	if err != nil {
		return "", err
	}
	t, met, metCPU := table(res, concs, "no-op", others, goals)
	cmd := fmt.Sprintf("antespam-bench -c {16,256} -d %s %s", *runDur, strings.Join(args, " "))
	return fmt.Sprintf("%s\nLoad: `%s`, %d rounds, setups alternated within each round. Lookups of the daemon (%s) during the measured runs: %s. Targets by sessions/s (and p99): %s; by CPU capacity: %s.\n",
		t, cmd, *rounds, name, tiers(before, after, d.p.log, logOff), allOrNot(met), allOrNot(metCPU)), nil
}

func allOrNot(ok bool) string {
	if ok {
		return "all met"
	}
	return "**not all met**"
}

// The loads of the ratio benchmarks (bench-profile uses them too).
var (
	ceilingArgs = []string{"-rcpts", "3", "-known-frac", "0.5", "-pool", "1000", "-clients", "100"}
	ldapArgs    = []string{"-rcpts", "3", "-known-frac", "0.5", "-unique-frac", "1", "-clients", "0"}
)

func benchCeiling(dir string) (string, error) {
	return ratioBench(dir, "daemon (LRU)", func(s *slapd, _ string) (daemonConfig, error) {
		return daemonConfig{LDAP: s.url, CacheSize: 100000}, nil
	}, true, true, target{minSessions: 0.9, maxP99: 1.2}, ceilingArgs)
}

func benchMemcache(dir string) (string, error) {
	return ratioBench(dir, "daemon (memcached)", func(s *slapd, dir string) (daemonConfig, error) {
		mc, _, err := startMemcached(dir)
		if err != nil {
			return daemonConfig{}, err
		}
		return daemonConfig{LDAP: s.url, CacheSize: 0, Memcached: []string{mc}}, nil
	}, true, false, target{minSessions: 0.75}, ceilingArgs)
}

func benchLDAP(dir string) (string, error) {
	return ratioBench(dir, "daemon (LDAP)", func(s *slapd, _ string) (daemonConfig, error) {
		return daemonConfig{LDAP: s.url, CacheSize: 0}, nil
	}, false, false, target{minSessions: 0.45}, ldapArgs)
}
