package testserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Memcached is a memcached started by a test on a free loopback port.
type Memcached struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	runs int
	proc *Process
}

// StartMemcached starts memcached (64 MB, TCP only) on 127.0.0.1 and
// stops it in t.Cleanup; a missing binary goes through Unavailable.
func StartMemcached(t testing.TB) *Memcached {
	t.Helper()
	m := &Memcached{
		t:    t,
		bin:  Require(t, "memcached"),
		dir:  t.TempDir(),
		port: FreePort(t, "127.0.0.1"),
	}
	m.Start()
	return m
}

// Addr is "127.0.0.1:PORT"; it stays the same across Stop and Start.
func (m *Memcached) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Start starts memcached again on the same port after Stop (empty: it
// keeps nothing across restarts).
func (m *Memcached) Start() {
	m.t.Helper()
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(m.port), "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		// memcached refuses to run as root without -u.
		args = append(args, "-u", "root")
	}
	m.runs++
	m.proc = Start(m.t, exec.Command(m.bin, args...), filepath.Join(m.dir, fmt.Sprintf("memcached-%d.log", m.runs)))
	// Registered after Start's own cleanup, so it runs first.
	m.t.Cleanup(m.Stop)
	if err := waitListening(m.proc.Cmd.Process.Pid, m.Addr(), 30*time.Second); err != nil {
		m.t.Fatalf("memcached: %v\n%s", err, m.proc.Output())
	}
}

// Stop kills memcached (by PID); Start brings it back. SIGKILL because
// memcached only notices SIGTERM at its next one-second clock tick, and a
// test cache has nothing to save.
func (m *Memcached) Stop() {
	if m.proc.Cmd.ProcessState == nil {
		_ = m.proc.Signal(syscall.SIGKILL)
	}
	m.proc.Stop()
}

// Freeze stops memcached with SIGSTOP: connections hang, nothing is
// refused. It returns once every thread is stopped (see Process.Freeze).
func (m *Memcached) Freeze() {
	m.t.Helper()
	if err := m.proc.Freeze(); err != nil {
		m.t.Fatalf("memcached: %v", err)
	}
}

// Thaw resumes a frozen memcached with SIGCONT.
func (m *Memcached) Thaw() {
	m.t.Helper()
	if err := m.proc.Thaw(); err != nil {
		m.t.Fatalf("memcached: %v", err)
	}
}

// Stats returns memcached's "stats" (cmd_get, get_hits, curr_items...).
func (m *Memcached) Stats() (map[string]string, error) {
	c, err := net.DialTimeout("tcp", m.Addr(), 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("memcached stats: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("stats\r\n")); err != nil {
		return nil, fmt.Errorf("memcached stats: %w", err)
	}
	stats := map[string]string{}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "END" {
			return stats, nil
		}
		if f := strings.Fields(line); len(f) == 3 && f[0] == "STAT" {
			stats[f[1]] = f[2]
		}
	}
	return nil, fmt.Errorf("memcached stats: no END: %v", sc.Err())
}
