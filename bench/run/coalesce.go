package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// benchCoalesce: (1) 256 sessions ask one daemon for the same new
// recipient at once; (2) 16 daemons sharing one memcached and one slapd
// are each asked for the same 10,000 new recipients at once. slapd's stats
// log counts the searches that reached the directory.
func benchCoalesce(dir string) (string, error) {
	s, err := startSlapd(dir, *ldapUsers, true)
	if err != nil {
		return "", err
	}
	mc, _, err := startMemcached(dir)
	if err != nil {
		return "", err
	}
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	client := filepath.Join(dir, "client.txt")
	if err := os.WriteFile(client, []byte("198.18.7.7\n"), 0o644); err != nil {
		return "", err
	}

	// (1) one daemon, 256 sessions, one new recipient.
	d, err := startDaemon(dir, "daemon", "", daemonConfig{LDAP: s.url, CacheSize: 100000, Memcached: []string{mc}, LogLevel: *logLevel})
	if err != nil {
		return "", err
	}
	oneFile := filepath.Join(dir, "one.txt")
	var rows1 []string
	var burst []float64
	for r := 0; r < *rounds; r++ {
		rc := fmt.Sprintf("burst%d-%s@%s", r, run, domain)
		if err := os.WriteFile(oneFile, []byte(rc+"\n"), 0o644); err != nil {
			return "", err
		}
		sum, err := load(loadCPUs(), "-addr", d.addr, "-c", "256", "-n", "256", "-barrier", "-rcpts", "1",
			"-rcpt-file", oneFile, "-client-file", client, "-timeout", "1m")
		if err != nil {
			return "", err
		}
		time.Sleep(200 * time.Millisecond) // let slapd's log reach the file
		n := s.searches("burst" + strconv.Itoa(r) + "-" + run)
		burst = append(burst, float64(n))
		rows1 = append(rows1, fmt.Sprintf("| %d | %d | %v | %.0f | %d | %d |", r+1, sum.Rcpts, fmtReplies(sum.Replies["rcpt"]), sum.Rcpt.P99, sum.ErrorsTotal, n))
		logf("  burst round %d: %d RcptTo, %d LDAP searches", r+1, sum.Rcpts, n)
	}
	d.p.stop()

	// (2) a fleet of 16 daemons.
	const fleet, keys = 16, 10000
	var b strings.Builder
	for i := 0; i < keys; i++ {
		fmt.Fprintf(&b, "fleet-%s-%d@%s\n", run, i, domain)
	}
	keyFile := filepath.Join(dir, "fleet.txt")
	if err := os.WriteFile(keyFile, []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	var ds []*daemon
	for i := 0; i < fleet; i++ {
		d, err := startDaemon(dir, fmt.Sprintf("fleet%02d", i), "", daemonConfig{LDAP: s.url, CacheSize: 100000, Memcached: []string{mc}, LogLevel: *logLevel})
		if err != nil {
			return "", err
		}
		ds = append(ds, d)
	}
	// Every daemon gets the 10,000 keys in the same order at the same
	// time: the worst case for a fleet-wide lock.
	t0 := time.Now()
	var wg sync.WaitGroup
	sums := make([]*summary, fleet)
	errs := make([]error, fleet)
	for i, d := range ds {
		wg.Add(1)
		go func(i int, d *daemon) {
			defer wg.Done()
			sums[i], errs[i] = load("", "-addr", d.addr, "-c", "8", "-n", strconv.Itoa(keys/10), "-rcpts", "10",
				"-rcpt-file", keyFile, "-seq", "-client-file", client, "-timeout", "3m")
		}(i, d)
	}
	wg.Wait()
	elapsed := time.Since(t0)
	var rcpts, errors uint64
	replies := map[string]uint64{}
	for i := range sums {
		if errs[i] != nil {
			return "", errs[i]
		}
		rcpts += sums[i].Rcpts
		errors += sums[i].ErrorsTotal
		for k, v := range sums[i].Replies["rcpt"] {
			replies[k] += v
		}
	}
	time.Sleep(300 * time.Millisecond)
	fleetSearches := s.searches("fleet-" + run + "-")
	logf("  fleet: %d RcptTo in %s, %d LDAP searches", rcpts, elapsed.Round(time.Millisecond), fleetSearches)

	var out strings.Builder
	bs := statsOf(burst)
	fmt.Fprintf(&out, "**Burst**: 256 sessions on one daemon (LRU + memcached + LDAP), released together after MAIL, each asking RCPT for the same new recipient (a new one each round). Target: 1 LDAP search. Median %.0f (min–max %.0f–%.0f): %s.\n\n", bs.med, bs.min, bs.max, verdict(bs.max <= 1))
	out.WriteString("| round | RcptTo | replies | RcptTo p99 µs | errors | LDAP searches for the recipient |\n|---|---|---|---|---|---|\n")
	out.WriteString(strings.Join(rows1, "\n") + "\n\n")
	fmt.Fprintf(&out, "Command: `antespam-bench -c 256 -n 256 -barrier -rcpts 1 -rcpt-file one.txt -client-file client.txt`\n\n")
	fmt.Fprintf(&out, "**Fleet**: %d daemons (each LRU + the shared memcached + the shared slapd), each asked the same %d new recipients in the same order at the same time (antespam-bench -c 8 -rcpts 10 -seq per daemon). Target: LDAP searches ≤ %d.\n\n", fleet, keys, keys*11/10)
	out.WriteString("| daemons | RcptTo in all | replies | wall time | errors | LDAP searches | per key | target | met? |\n|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&out, "| %d | %d | %v | %.1f s | %d | %d | %.3f | ≤ %d | %s |\n", fleet, rcpts, fmtReplies(replies), elapsed.Seconds(), errors, fleetSearches, float64(fleetSearches)/keys, keys*11/10, verdict(fleetSearches <= keys*11/10))
	return out.String(), nil
}

// fmtReplies renders reply counts as "550: 256, continue: 10".
func fmtReplies(m map[string]uint64) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
