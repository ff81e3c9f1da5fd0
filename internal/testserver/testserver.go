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

// FreePort returns a TCP port free on host and reserved for the test
// until it ends. It is chosen below the kernel's ephemeral range
// (ip_local_port_range), at random, so that the outgoing connections of
// tests running in parallel (which take ephemeral ports) cannot take it
// before the server that is given it binds it.
//
// The reservation is a lock (flock) on a file named after the port in a
// directory every test process on the machine shares: go test runs the
// packages' test binaries in parallel, and a port one of them found free
// and handed to a server must not be found free by another before that
// server binds it, nor while the server is stopped and started again on
// it (Memcached.Stop and Start, a daemon restarted). A port locked by
// another process is skipped; the kernel drops the lock when the process
// ends, however it ends.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	lo, hi := 20000, ephemeralLow()-1
	for range 500 {
		port := lo + rand.IntN(hi-lo+1)
		lock, err := reservePort(port)
		if err != nil {
			t.Fatalf("reserve port %d: %v", port, err)
		}
		if lock == nil {
			continue // reserved by another test
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			lock.Close()
			continue
		}
		l.Close()
		t.Cleanup(func() { lock.Close() })
		return port
	}
	t.Fatalf("no free port on %s between %d and %d", host, lo, hi)
	return 0
}

// portLockDir holds one lock file per port FreePort has handed out.
var portLockDir = filepath.Join(os.TempDir(), "antespam-test-ports")

// reservePort locks port's file in portLockDir and returns it open (the
// lock lasts until it is closed), or nil when another process holds it.
// The files stay: removing one could let two processes lock two files of
// the same name.
func reservePort(port int) (*os.File, error) {
	if err := os.MkdirAll(portLockDir, 0o755); err != nil {
		return nil, err
	}
	// World-writable and sticky like /tmp, for tests run as other users
	// (a read-only descriptor can hold a flock).
	if fi, err := os.Stat(portLockDir); err == nil && fi.Mode()&os.ModeSticky == 0 {
		_ = os.Chmod(portLockDir, 0o777|os.ModeSticky)
	}
	f, err := os.OpenFile(filepath.Join(portLockDir, strconv.Itoa(port)), os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("flock %s: %w", f.Name(), err)
	}
	return f, nil
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
