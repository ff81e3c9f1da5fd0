package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server the driver started; stop ends it by PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// procs is every process started, stopped in reverse order on exit.
var procs []*proc

// start runs argv (pinned to cpus with taskset when cpus != "") in its own
// process group, its output in dir/name.log.
func start(dir, name, cpus string, argv ...string) (*proc, error) {
	return startEnv(dir, name, cpus, nil, argv...)
}

// startEnv is start with more environment variables.
func startEnv(dir, name, cpus string, env []string, argv ...string) (*proc, error) {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	procs = append(procs, p)
	return p, nil
}

// stop sends SIGTERM to the process group, SIGKILL after 5 s.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-pid, syscall.SIGCONT)
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// pid is the server's own PID: taskset execs it, so it is the child's.
func (p *proc) pid() int { return p.cmd.Process.Pid }

func stopAll() {
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
	procs = nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitTCP waits until addr accepts connections, or p exits, or timeout.
func waitTCP(p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before listening on %s:\n%s", p.name, addr, p.output())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s", p.name, addr, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// rssKB is VmRSS of pid in KiB.
func rssKB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

// cpuTicks is utime+stime of pid in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// scrape fetches Prometheus text metrics and returns the sum of the
// samples of each metric name (labels filtered by the want substrings).
func scrape(addr string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// sumMetric adds every sample of name whose labels contain all of labels.
func sumMetric(m map[string]float64, name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
			}
		}
		if ok {
			s += v
		}
	}
	return s
}

// summary is the part of antespam-bench's -json output the driver uses.
type summary struct {
	ElapsedS     float64 `json:"elapsed_s"`
	Sessions     uint64  `json:"sessions"`
	SessionsOK   uint64  `json:"sessions_ok"`
	Messages     uint64  `json:"messages"`
	Rcpts        uint64  `json:"rcpts"`
	SessionsPerS float64 `json:"sessions_per_s"`
	RcptsPerS    float64 `json:"rcpts_per_s"`
	Rcpt         struct {
		P50 float64 `json:"p50_us"`
		P90 float64 `json:"p90_us"`
		P99 float64 `json:"p99_us"`
		Max float64 `json:"max_us"`
	} `json:"rcpt_latency"`
	Replies     map[string]map[string]uint64 `json:"replies"`
	Errors      map[string]uint64            `json:"errors"`
	ErrorsTotal uint64                       `json:"errors_total"`
	IdleOpen    uint64                       `json:"idle_open"`

	// cpuPerSession is the milter server's CPU time per session (µs),
	// measured by the driver from /proc.
	cpuPerSession float64
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100

// load runs antespam-bench with args (and -json), pinned to cpus.
func load(cpus string, args ...string) (*summary, error) {
	argv := append([]string{binPath("antespam-bench"), "-json", "-progress=false"}, args...)
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	var s summary
	if jerr := json.Unmarshal(out, &s); jerr != nil {
		return nil, fmt.Errorf("antespam-bench %s: %v %v\n%s%s", strings.Join(args, " "), err, jerr, out, stderr.String())
	}
	if s.ErrorsTotal > 0 {
		logf("  (antespam-bench %s: %d errors: %v)", strings.Join(args, " "), s.ErrorsTotal, s.Errors)
	}
	return &s, nil
}
