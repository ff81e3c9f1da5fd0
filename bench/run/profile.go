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
// untouched), then takes a CPU profile under the ceiling's load (every
// lookup an LRU hit) and a heap profile with 10,000 idle sessions.
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
	pp := fmt.Sprintf("127.0.0.1:%d", freePort())
	d, err := startDaemon(dir, "daemon", serverCPUs(), daemonConfig{LDAP: s.url, CacheSize: 100000, MaxSess: 12000,
		LogLevel: *logLevel, Bin: bin, Env: []string{"ANTESPAM_BENCH_PPROF=" + pp}})
	if err != nil {
		return "", err
	}
	if err := warm(d, dir); err != nil {
		return "", err
	}
	cpuFile := filepath.Join(dir, "cpu.pprof")
	done := make(chan error, 1)
	go func() {
		_, err := load(loadCPUs(), "-addr", d.addr, "-c", "16", "-d", "12s", "-rcpts", "3", "-timeout", "1m")
		done <- err
	}()
	time.Sleep(time.Second)
	if err := fetch("http://"+pp+"/debug/pprof/profile?seconds=8", cpuFile); err != nil {
		return "", err
	}
	if err := <-done; err != nil {
		return "", err
	}
	cpuTop, err := pprofTop(bin, cpuFile)
	if err != nil {
		return "", err
	}
	cpuCum, err := pprofTop(bin, cpuFile, "-cum")
	if err != nil {
		return "", err
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
	if err := fetch("http://"+pp+"/debug/pprof/heap", heapFile); err != nil {
		return "", err
	}
	if err := <-idle; err != nil {
		return "", err
	}
	heapTop, err := pprofTop(bin, heapFile, "-sample_index=inuse_space")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CPU profile of the daemon (8 s, `antespam-bench -c 16 -rcpts 3`, every lookup an LRU hit, log_level %s), flat:\n\n```\n%s```\n\nCumulative:\n\n```\n%s```\n\n", *logLevel, cpuTop, cpuCum)
	fmt.Fprintf(&b, "With 10,000 idle sessions: go_goroutines %.0f, goroutine stacks %.1f MB (go_memstats_stack_inuse_bytes), Go heap in use %.1f MB; heap profile (inuse_space):\n\n```\n%s```\n",
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
