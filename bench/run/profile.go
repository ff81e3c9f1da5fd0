package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// benchProfile builds the daemon with bench/pprof/zz_bench_pprof.go.in
// overlaid (net/http/pprof on a loopback port; the daemon's own files are
// untouched), then takes a CPU profile under each of the ratio benchmarks'
// loads (every lookup an LRU hit, a memcached hit, a slapd search), with
// the CPU that the daemon, slapd and memcached used meanwhile, and a heap
// profile with 10,000 idle sessions.
func benchProfile(dir string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	ov, _ := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(wd, "cmd/antespam-milter/zz_bench_pprof.go"): filepath.Join(wd, "bench/pprof/zz_bench_pprof.go.in"),
	}})
	ovFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovFile, ov, 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "antespam-milter-pprof")
	build := exec.Command("go", "build", "-trimpath", "-overlay", ovFile, "-o", bin, "./cmd/antespam-milter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the profiling daemon: %v\n%s", err, out)
	}
	s, err := startSlapd(dir, *ldapUsers, false)
	if err != nil {
		return "", err
	}
	mc, mcProc, err := startMemcached(dir)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	var d *daemon
	var dpp string // d's pprof address
	for i, ps := range []struct {
		name, title string
		cfg         daemonConfig
		warm        bool
		args        []string
	}{
		{"lru", "every lookup an LRU hit", daemonConfig{LDAP: s.url, CacheSize: 100000, MaxSess: 12000}, true, ceilingArgs},
		{"memcache", "LRU off, every lookup a memcached hit", daemonConfig{LDAP: s.url, CacheSize: 0, Memcached: []string{mc}}, true, ceilingArgs},
		{"ldap", "LRU and memcached off, every lookup a slapd search", daemonConfig{LDAP: s.url, CacheSize: 0}, false, ldapArgs},
	} {
		pp := fmt.Sprintf("127.0.0.1:%d", freePort())
		cfg := ps.cfg
		cfg.LogLevel, cfg.Bin, cfg.Env = *logLevel, bin, []string{"ANTESPAM_BENCH_PPROF=" + pp}
		pd, err := startDaemon(dir, "daemon-pprof-"+ps.name, serverCPUs(), cfg)
		if err != nil {
			return "", err
		}
		if ps.warm {
			if err := warm(pd, dir); err != nil {
				return "", err
			}
		}
		cpuFile := filepath.Join(dir, "cpu-"+ps.name+".pprof")
		done := make(chan error, 1)
		var sum *summary
		go func() {
			var err error
			sum, err = load(loadCPUs(), append([]string{"-addr", pd.addr, "-c", "16", "-d", "12s", "-timeout", "1m"}, ps.args...)...)
			done <- err
		}()
		time.Sleep(time.Second)
		pids := map[string]int{"daemon": pd.p.pid(), "slapd": s.p.pid(), "memcached": mcProc.pid()}
		t0 := map[string]int64{}
		for k, pid := range pids {
			t0[k] = cpuTicks(pid)
		}
		start := time.Now()
		if err := fetch("http://"+pp+"/debug/pprof/profile?seconds=8", cpuFile); err != nil {
			return "", err
		}
		wall := time.Since(start).Seconds()
		var shares []string
		for _, k := range []string{"daemon", "slapd", "memcached"} {
			shares = append(shares, fmt.Sprintf("%s %.0f%%", k, float64(cpuTicks(pids[k])-t0[k])/clockTicks/wall*100))
		}
		if err := <-done; err != nil {
			return "", err
		}
		top, err := pprofTop(bin, cpuFile)
		if err != nil {
			return "", err
		}
		cum, err := pprofTop(bin, cpuFile, "-cum")
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "### 7.%d CPU profile: %s\n\n", i+1, ps.title)
		fmt.Fprintf(&b, "8 s under `antespam-bench -c 16 -d 12s %s`, log_level %s, %.0f sessions/s over the whole run. CPU used during the profile, in %% of one core: %s.\n\nFlat:\n\n```\n%s```\n\nCumulative:\n\n```\n%s```\n\n",
			strings.Join(ps.args, " "), *logLevel, sum.SessionsPerS, strings.Join(shares, ", "), top, cum)
		if i == 0 {
			d, dpp = pd, pp
		}
	}

	heapFile := filepath.Join(dir, "heap.pprof")
	ready := filepath.Join(dir, "ready")
	idle := make(chan error, 1)
	go func() {
		_, err := load(loadCPUs(), "-addr", d.addr, "-idle", "10000", "-c", "64", "-hold", "4s", "-ready-file", ready, "-timeout", "2m")
		idle <- err
	}()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("idle sessions not open after 90 s")
		}
	}
	m, _ := scrape(d.metrics)
	if err := fetch("http://"+dpp+"/debug/pprof/heap", heapFile); err != nil {
		return "", err
	}
	if err := <-idle; err != nil {
		return "", err
	}
	heapTop, err := pprofTop(bin, heapFile, "-sample_index=inuse_space")
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "### 7.4 Heap with 10,000 idle sessions (the LRU daemon of 7.1)\n\nWith 10,000 idle sessions: go_goroutines %.0f, goroutine stacks %.1f MB (go_memstats_stack_inuse_bytes), Go heap in use %.1f MB; heap profile (inuse_space):\n\n```\n%s```\n",
		sumMetric(m, "go_goroutines"), sumMetric(m, "go_memstats_stack_inuse_bytes")/(1<<20), sumMetric(m, "go_memstats_heap_inuse_bytes")/(1<<20), heapTop)
	return b.String(), nil
}

func fetch(url, file string) error {
	c := http.Client{Timeout: time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

// pprofTop is `go tool pprof -top` of a profile, its first lines.
func pprofTop(bin, file string, extra ...string) (string, error) {
	args := append([]string{"tool", "pprof", "-top", "-nodecount=22"}, extra...)
	args = append(args, bin, file)
	var out, stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	lines := strings.Split(out.String(), "\n")
	var keep []string
	for _, l := range lines {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n"), nil
}
