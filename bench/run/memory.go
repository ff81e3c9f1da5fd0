package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const idleSessions = 10000

// idleRun opens idleSessions negotiated sessions to d and returns the
// server's RSS (KiB) before, while they are open (the highest of several
// samples), and after they closed, with the goroutine count while open
// when d has metrics.
func idleRun(d *daemon, dir string) (before, during, after int, goroutines, heapMB, stackMB float64, open uint64, err error) {
	time.Sleep(300 * time.Millisecond)
	before = rssKB(d.p.pid())
	ready := filepath.Join(dir, "ready")
	os.Remove(ready)
	argv := []string{binPath("antespam-bench"), "-json", "-progress=false", "-addr", d.addr, "-idle", strconv.Itoa(idleSessions),
		"-c", "64", "-hold", "4s", "-ready-file", ready, "-clients", "100", "-timeout", "2m"}
	if c := loadCPUs(); c != "" {
		argv = append([]string{"taskset", "-c", c}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err = cmd.Start(); err != nil {
		return
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, e := os.Stat(ready); e == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			err = fmt.Errorf("idle sessions not open after 90 s")
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 6; i++ {
		time.Sleep(400 * time.Millisecond)
		during = max(during, rssKB(d.p.pid()))
	}
	if d.metrics != "" {
		if m, e := scrape(d.metrics); e == nil {
			goroutines = sumMetric(m, "go_goroutines")
			heapMB = sumMetric(m, "go_memstats_heap_inuse_bytes") / (1 << 20)
			stackMB = sumMetric(m, "go_memstats_stack_inuse_bytes") / (1 << 20)
		}
	}
	if err = cmd.Wait(); err != nil {
		err = fmt.Errorf("antespam-bench -idle: %v: %s", err, out.String())
		return
	}
	var s summary
	if err = json.Unmarshal(out.Bytes(), &s); err != nil {
		return
	}
	open = s.IdleOpen
	time.Sleep(2 * time.Second)
	after = rssKB(d.p.pid())
	return
}

func mb(kb int) float64 { return float64(kb) / 1024 }

func benchMemory(dir string) (string, error) {
	s, err := startSlapd(dir, *ldapUsers, false)
	if err != nil {
		return "", err
	}
	cfg := daemonConfig{LDAP: s.url, CacheSize: 100000, MaxSess: 12000, LogLevel: *logLevel}

	// Idle sessions: a fresh no-op and daemon each round.
	type idle struct{ during, perSession, goroutines []float64 }
	res := map[string]*idle{"no-op": {}, "daemon": {}}
	names := []string{"no-op", "daemon"}
	if *baseline != "" {
		res["daemon (baseline)"] = &idle{}
		names = append(names, "daemon (baseline)")
	}
	var rows []string
	for r := 0; r < *rounds; r++ {
		for _, name := range names {
			var d *daemon
			switch name {
			case "no-op":
				d, err = startNoop(dir, fmt.Sprintf("noop-idle%d", r), serverCPUs())
			case "daemon":
				d, err = startDaemon(dir, fmt.Sprintf("daemon-idle%d", r), serverCPUs(), cfg)
			default:
				bc := cfg
				bc.Bin = *baseline
				d, err = startDaemon(dir, fmt.Sprintf("daemon-baseline-idle%d", r), serverCPUs(), bc)
			}
			if err != nil {
				return "", err
			}
			before, during, after, gr, heap, stack, open, err := idleRun(d, dir)
			d.p.stop()
			if err != nil {
				return "", err
			}
			per := float64(during-before) / float64(max(open, 1))
			res[name].during = append(res[name].during, mb(during))
			res[name].perSession = append(res[name].perSession, per)
			res[name].goroutines = append(res[name].goroutines, gr)
			rows = append(rows, fmt.Sprintf("| %d | %s | %d | %.1f | %.1f | %.1f | %.2f | %s | %s | %s |", r+1, name, open, mb(before), mb(during), mb(after), per, grString(gr), grString(heap), grString(stack)))
			logf("  idle round %d %-7s open %d  RSS %.1f → %.1f → %.1f MB (%.2f KB/session)", r+1, name, open, mb(before), mb(during), mb(after), per)
		}
	}

	// Soak: a bounded run of intervals of load on one daemon, RSS and
	// goroutines sampled in the middle of each interval and after it.
	d, err := startDaemon(dir, "daemon-soak", serverCPUs(), cfg)
	if err != nil {
		return "", err
	}
	if err := warm(d, dir); err != nil {
		return "", err
	}
	m0, err := scrape(d.metrics)
	if err != nil {
		return "", err
	}
	g0 := sumMetric(m0, "go_goroutines")
	const intervals = 6
	soakDur := 6 * time.Second
	var soak []string
	var rssAfter, grAfter []float64
	for i := 0; i < intervals; i++ {
		type res struct {
			s   *summary
			err error
		}
		ch := make(chan res, 1)
		go func() {
			s, err := load(loadCPUs(), "-addr", d.addr, "-c", "64", "-d", soakDur.String(), "-rcpts", "3", "-timeout", "1m")
			ch <- res{s, err}
		}()
		time.Sleep(soakDur / 2)
		rssMid := rssKB(d.p.pid())
		mMid, _ := scrape(d.metrics)
		r := <-ch
		if r.err != nil {
			return "", r.err
		}
		time.Sleep(time.Second)
		mEnd, _ := scrape(d.metrics)
		ra := rssKB(d.p.pid())
		ga := sumMetric(mEnd, "go_goroutines")
		rssAfter = append(rssAfter, mb(ra))
		grAfter = append(grAfter, ga)
		soak = append(soak, fmt.Sprintf("| %d | %d | %.0f | %.1f | %.0f | %.1f | %.0f | %d |", i+1, r.s.Sessions, r.s.SessionsPerS, mb(rssMid),
			sumMetric(mMid, "go_goroutines"), mb(ra), ga, r.s.ErrorsTotal))
		logf("  soak %d: %d sessions, RSS %.1f MB mid, %.1f MB after; goroutines %.0f mid, %.0f after", i+1, r.s.Sessions, mb(rssMid), mb(ra), sumMetric(mMid, "go_goroutines"), ga)
	}

	var out strings.Builder
	dm := statsOf(res["daemon"].during)
	fmt.Fprintf(&out, "**Idle sessions**: %d negotiated sessions (Connect and Helo sent, then nothing) held open; RSS of the milter process (VmRSS), a fresh process each round. Target: daemon ≤ 120 MB. Daemon median %.1f MB (%.1f–%.1f): %s.\n\n", idleSessions, dm.med, dm.min, dm.max, verdict(dm.max <= 120))
	out.WriteString("| round | server | sessions open | RSS before MB | RSS with sessions MB | RSS after close MB | KB per session | goroutines | Go heap in use MB | goroutine stacks MB |\n|---|---|---|---|---|---|---|---|---|---|\n")
	out.WriteString(strings.Join(rows, "\n") + "\n\n")
	fmt.Fprintf(&out, "Medians: no-op %.2f KB/session, daemon %.2f KB/session (ratio %.2f).\n\n", statsOf(res["no-op"].perSession).med, statsOf(res["daemon"].perSession).med,
		statsOf(res["daemon"].perSession).med/statsOf(res["no-op"].perSession).med)
	if b := res["daemon (baseline)"]; b != nil {
		fmt.Fprintf(&out, "Baseline daemon (`-baseline-bin`, the build before the change): %.2f KB/session median, RSS %.1f MB median.\n\n", statsOf(b.perSession).med, statsOf(b.during).med)
	}
	fmt.Fprintf(&out, "Command: `antespam-bench -idle %d -c 64 -hold 4s -ready-file F`\n\n", idleSessions)
	grStable := true
	for _, g := range grAfter {
		if g > g0+5 {
			grStable = false
		}
	}
	rssStable := rssAfter[len(rssAfter)-1] <= 1.10*rssAfter[1]
	fmt.Fprintf(&out, "**Soak**: %d intervals of %s of load (antespam-bench -c 64 -rcpts 3, pooled keys, LRU warm) on one daemon; goroutines from its /metrics (go_goroutines, %.0f before the soak). Goroutines back to baseline after every interval: %s; RSS after the last interval within 10%% of after the second (%.1f vs %.1f MB): %s.\n\n",
		intervals, soakDur, g0, verdict(grStable), rssAfter[len(rssAfter)-1], rssAfter[1], verdict(rssStable))
	out.WriteString("| interval | sessions | sessions/s | RSS mid-load MB | goroutines mid-load | RSS after MB | goroutines after | errors |\n|---|---|---|---|---|---|---|---|\n")
	out.WriteString(strings.Join(soak, "\n") + "\n")
	return out.String(), nil
}

func grString(g float64) string {
	if g == 0 {
		return "–"
	}
	return strconv.FormatFloat(g, 'f', 0, 64)
}
