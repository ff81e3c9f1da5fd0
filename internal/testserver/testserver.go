package testserver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI, where missing servers fail.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false"
}

// Unavailable skips the test, or fails it in CI, because what it needs is
// missing. Every skip of an integration test goes through here.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("CI=true and %s (run `make test-deps`)", msg)
	}
	t.Skipf("%s (run `make test-deps`, or set CI=true to make this fail)", msg)
}

// Require returns the path of program, looked up in PATH and then in the
// given directories (relative to the repository root when not absolute),
// or calls Unavailable.
func Require(t testing.TB, program string, dirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	for _, d := range append(dirs, "/usr/sbin", "/usr/bin", "/usr/lib/sm.bin") {
		if !filepath.IsAbs(d) {
			d = filepath.Join(RepoRoot(t), d)
		}
		p := filepath.Join(d, program)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	Unavailable(t, "%s is not installed", program)
	return ""
}

// RepoRoot is the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testserver: cannot locate the repository root")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FreePort returns a TCP port that was free on host a moment ago. It is
// chosen below the kernel's ephemeral range (ip_local_port_range), at
// random, so that the outgoing connections of tests running in parallel
// (which take ephemeral ports) cannot take it before the server that is
// given it binds it.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	lo, hi := 20000, ephemeralLow()-1
	for range 200 {
		port := lo + rand.IntN(hi-lo+1)
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatalf("no free port on %s between %d and %d", host, lo, hi)
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 21000 {
				return n
			}
		}
	}
	return 32768
}

// WaitTCP waits until addr accepts TCP connections or timeout passes.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Process is a server started by a test.
type Process struct {
	Cmd *exec.Cmd
	// Log collects the process's stdout and stderr.
	Log *os.File
}

// Start runs cmd in its own process group, its output in logPath, and
// stops it (SIGTERM, then SIGKILL after 5s) by PID in t.Cleanup.
func Start(t testing.TB, cmd *exec.Cmd, logPath string) *Process {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create %s: %v", logPath, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p := &Process{Cmd: cmd, Log: f}
	t.Cleanup(func() { p.Stop(); f.Close() })
	return p
}

// Signal sends sig to the process (SIGSTOP/SIGCONT to freeze a server).
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Cmd.Process == nil {
		return errors.New("not started")
	}
	return p.Cmd.Process.Signal(sig)
}

// Stop ends the process and its group: SIGCONT (in case it was frozen),
// SIGTERM, then SIGKILL after 5 s. It is safe to call more than once.
func (p *Process) Stop() {
	if p.Cmd.Process == nil || p.Cmd.ProcessState != nil {
		return
	}
	pid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGCONT)
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
}

// Output returns what the process has written so far.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log.Name())
	return string(b)
}
