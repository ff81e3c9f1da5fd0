// Command run drives antespam-milter's benchmarks (make bench, make
// bench-*): it starts slapd, memcached, the daemon, the no-op milter and
// Postfix on loopback ports in a temp dir, loads them with antespam-bench
// or smtp-source, alternating the setups compared round by round, stops
// everything it started by PID, and writes each benchmark's table between
// its markers in BENCHMARKS.md (and prints it).
//
//	go run ./bench/run [flags] ceiling|memcache|ldap|coalesce|memory|postfix|micro|all
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

var (
	binDir    = flag.String("bin", "bin", "directory holding antespam-milter, antespam-bench and antespam-noop")
	outFile   = flag.String("out", "BENCHMARKS.md", "file whose marked sections are rewritten; empty: print only")
	rounds    = flag.Int("rounds", 3, "rounds of each comparison")
	runDur    = flag.Duration("d", 4*time.Second, "duration of each load run")
	pin       = flag.Bool("pin", true, "pin servers to CPU 0 and the load generator to CPU 1 (with 2+ CPUs)")
	logLevel  = flag.String("log-level", "info", "the daemon's log_level (its log goes to a file)")
	keepTmp   = flag.Bool("keep", false, "keep the temp dir (logs, configs)")
	ldapUsers = flag.Int("users", 10000, "users in the benchmark directory")
	baseline  = flag.String("baseline-bin", "", "also run this daemon binary (e.g. a build of an earlier commit) beside bin/antespam-milter in ceiling, memcache, ldap and memory, as the setup \"(baseline)\"")
)

func binPath(name string) string {
	p, err := filepath.Abs(filepath.Join(*binDir, name))
	if err != nil {
		fatalf("%v", err)
	}
	return p
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf("FATAL: "+format, args...)
	stopAll()
	os.Exit(1)
}

// cpus to pin servers and the load generator to ("" = no pinning).
func serverCPUs() string {
	if *pin && runtime.NumCPU() >= 2 {
		return "0"
	}
	return ""
}

func loadCPUs() string {
	if *pin && runtime.NumCPU() >= 2 {
		return "1"
	}
	return ""
}

var benches = map[string]func(dir string) (string, error){
	"ceiling":  benchCeiling,
	"memcache": benchMemcache,
	"ldap":     benchLDAP,
	"coalesce": benchCoalesce,
	"memory":   benchMemory,
	"postfix":  benchPostfix,
	"micro":    benchMicro,
	"profile":  benchProfile,
}

var order = []string{"machine", "micro", "ceiling", "memcache", "ldap", "coalesce", "memory", "postfix", "profile"}

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: run [flags] %s|all ...\n", strings.Join(order[1:], "|"))
		flag.PrintDefaults()
	}
	flag.Parse()
	names := flag.Args()
	if len(names) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if len(names) == 1 && names[0] == "all" {
		names = order[1:]
	}
	for _, n := range names {
		if benches[n] == nil {
			fmt.Fprintf(os.Stderr, "run: unknown benchmark %q\n", n)
			os.Exit(2)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		logf("%v: stopping everything", s)
		stopAll()
		os.Exit(1)
	}()
	failed := false
	if err := writeSection("machine", machine()); err != nil {
		logf("machine: %v", err)
	}
	for _, n := range names {
		dir, err := os.MkdirTemp("", "antespam-bench-"+n+"-")
		if err != nil {
			fatalf("%v", err)
		}
		logf("== %s (temp dir %s)", n, dir)
		t0 := time.Now()
		md, err := benches[n](dir)
		stopAll()
		if err != nil {
			logf("%s FAILED: %v", n, err)
			failed = true
			md = fmt.Sprintf("_Last run (%s) failed: %s_\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), firstLine(err.Error()))
		} else {
			logf("%s done in %s", n, time.Since(t0).Round(time.Second))
		}
		fmt.Println(md)
		if err := writeSection(n, md); err != nil {
			logf("%s: %v", n, err)
		}
		if !*keepTmp && err == nil {
			os.RemoveAll(dir)
		} else {
			logf("kept %s", dir)
		}
	}
	if failed {
		os.Exit(1)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// writeSection replaces the text between "<!-- bench:NAME -->" and
// "<!-- /bench:NAME -->" in -out.
func writeSection(name, md string) error {
	if *outFile == "" {
		return nil
	}
	b, err := os.ReadFile(*outFile)
	if err != nil {
		return err
	}
	begin, end := "<!-- bench:"+name+" -->", "<!-- /bench:"+name+" -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s markers", *outFile, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + strings.TrimRight(md, "\n") + "\n" + s[j:]
	return os.WriteFile(*outFile, []byte(s), 0o644)
}

func machine() string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	osName := ""
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		osName = "Debian " + strings.TrimSpace(string(b))
	}
	pinning := "none"
	if serverCPUs() != "" {
		pinning = "milter servers (daemon, no-op) on CPU 0, antespam-bench on CPU 1, slapd/memcached/Postfix unpinned"
	}
	return fmt.Sprintf(`| | |
|---|---|
| CPUs (nproc) | %d |
| CPU model | %s |
| kernel | %s |
| OS | %s |
| Go | %s |
| pinning | %s |
| daemon log_level | %s (to a file) |
| last run | %s |
`, runtime.NumCPU(), cpu, kernel, osName, runtime.Version(), pinning, *logLevel, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}

// stats of one measure over rounds.
type stats struct{ med, min, max float64 }

func statsOf(v []float64) stats {
	if len(v) == 0 {
		return stats{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stats{m, s[0], s[len(s)-1]}
}

// f formats the median and the spread: "1234 (1100–1300)".
func (s stats) f(prec int) string {
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, s.med, prec, s.min, prec, s.max)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}
