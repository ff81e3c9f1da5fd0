package testserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// DaemonVersion is the version stamped into the binary BuildDaemon makes.
const DaemonVersion = "0.0.0-test"

var daemonBuild struct {
	once sync.Once
	path string
	err  error
}

// BuildDaemon builds cmd/antespam-milter once per test binary (go build,
// version DaemonVersion) into a temp dir and returns the binary's path.
// Dirs left by earlier test binaries that are no longer running are
// removed first.
func BuildDaemon(t testing.TB) string {
	t.Helper()
	daemonBuild.once.Do(func() {
		removeStaleBuilds()
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		dir, err := os.MkdirTemp("", fmt.Sprintf("antespam-milter-daemon-%d-", os.Getpid()))
		if err != nil {
			daemonBuild.err = err
			return
		}
		bin := filepath.Join(dir, "antespam-milter")
		cmd := exec.Command(goBin, "build", "-trimpath",
			"-ldflags", "-X main.version="+DaemonVersion, "-o", bin, "./cmd/antespam-milter")
		cmd.Dir = RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			daemonBuild.err = fmt.Errorf("go build ./cmd/antespam-milter: %w\n%s", err, out)
			return
		}
		daemonBuild.path = bin
	})
	if daemonBuild.err != nil {
		t.Fatal(daemonBuild.err)
	}
	return daemonBuild.path
}

// removeStaleBuilds deletes the build dirs of test binaries that have
// exited (the dir name carries the builder's PID).
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "antespam-milter-daemon-*"))
	for _, d := range dirs {
		f := strings.SplitN(strings.TrimPrefix(filepath.Base(d), "antespam-milter-daemon-"), "-", 2)
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// DaemonOptions start the daemon with more than a config file.
type DaemonOptions struct {
	// Args replace the default "serve -config CONFIG".
	Args []string
	// Env is added to the test's environment (NOTIFY_SOCKET=..., say).
	Env []string
	// NoWait returns as soon as the process started, without waiting for
	// its milter socket to answer.
	NoWait bool
}

// Daemon is a running antespam-milter started by StartDaemon.
type Daemon struct {
	Cmd *exec.Cmd
	// Config is the config file it was started with.
	Config string
	// Network and Address are where its milter socket listens, for
	// net.Dial and go-milter's client ("tcp" or "unix").
	Network, Address string
	// SocketPath is the unix socket's path, "" for inet.
	SocketPath string

	logPath string
	done    chan struct{}
	state   *os.ProcessState
}

// StartDaemon runs "antespam-milter serve -config configPath" and waits
// until its listen socket accepts connections (failing the test with the
// daemon's output when it exits or does not listen within 30 s). The
// daemon is stopped by PID in t.Cleanup.
func StartDaemon(t testing.TB, configPath string) *Daemon {
	t.Helper()
	return StartDaemonWith(t, configPath, DaemonOptions{})
}

// StartDaemonWith is StartDaemon with options.
func StartDaemonWith(t testing.TB, configPath string, o DaemonOptions) *Daemon {
	t.Helper()
	bin := BuildDaemon(t)
	listen, err := configListen(configPath)
	if err != nil && !o.NoWait {
		t.Fatalf("daemon config %s: %v", configPath, err)
	}
	d := &Daemon{Config: configPath, done: make(chan struct{})}
	if err == nil {
		d.Network, d.Address, d.SocketPath = DialSpec(listen)
	}
	args := o.Args
	if args == nil {
		args = []string{"serve", "-config", configPath}
	}
	d.logPath = filepath.Join(t.TempDir(), "daemon.log")
	f, err := os.Create(d.logPath)
	if err != nil {
		t.Fatalf("create %s: %v", d.logPath, err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	d.Cmd = cmd
	go func() {
		_ = cmd.Wait()
		d.state = cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.Output())
		}
	})
	if o.NoWait || d.Network == "" {
		return d
	}
	if d.Network == "tcp" {
		// The port was free when the test chose it: make sure the daemon
		// is the one listening there, not another test's server.
		if err := waitListening(cmd.Process.Pid, d.Address, 30*time.Second); err != nil {
			t.Fatalf("daemon: %v\n%s", err, d.Output())
		}
		return d
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout(d.Network, d.Address, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return d
		}
		select {
		case <-d.done:
			t.Fatalf("daemon exited (status %d) before listening on %s:\n%s", d.ExitCode(), d.Address, d.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not listening on %s after 30s: %v\n%s", d.Address, err, d.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configListen reads the listen key of the config at path, or its
// default. The config package is not imported: it imports lookup, whose
// own tests use this package.
func configListen(path string) (string, error) {
	var c struct {
		Listen string `toml:"listen"`
	}
	if _, err := toml.DecodeFile(path, &c); err != nil {
		return "", err
	}
	if c.Listen == "" {
		return "inet:8890@127.0.0.1", nil
	}
	return c.Listen, nil
}

// DialSpec turns a milter socket spec (inet:PORT@HOST, inet6:PORT@[HOST],
// unix:/path, local:/path) into a network and address for net.Dial, plus
// the socket path for unix sockets; a TCP socket on every interface is
// dialled on 127.0.0.1. The spec is one the daemon's config validation
// (config.ParseListen) has accepted, so this only splits it. It cannot
// call config.ParseListen itself: config imports lookup, whose in-package
// tests import this package. milter's TestDialSpec holds the two to each
// other.
func DialSpec(spec string) (network, address, path string) {
	kind, rest, _ := strings.Cut(spec, ":")
	switch kind {
	case "unix", "local":
		return "unix", rest, rest
	case "inet", "inet6":
		port, host, _ := strings.Cut(rest, "@")
		host = strings.Trim(host, "[]")
		if host == "" {
			host = "127.0.0.1"
		}
		return "tcp", net.JoinHostPort(host, port), ""
	}
	return "", "", ""
}

// Signal sends sig to the daemon (SIGHUP to reload, SIGTERM to stop).
func (d *Daemon) Signal(sig syscall.Signal) error {
	return d.Cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the daemon to exit and reports whether it
// did.
func (d *Daemon) Wait(timeout time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Exited reports whether the daemon has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// ExitCode is the daemon's exit status: -1 while running or when killed
// by a signal.
func (d *Daemon) ExitCode() int {
	if !d.Exited() {
		return -1
	}
	return d.state.ExitCode()
}

// Stop sends SIGTERM (SIGCONT first, in case it was frozen) and waits
// 10 s, then SIGKILLs the process group. Safe to call more than once.
func (d *Daemon) Stop() {
	if d.Exited() {
		return
	}
	pid := d.Cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGCONT)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !d.Wait(10 * time.Second) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-d.done
	}
}

// Accepted reports whether the daemon has accepted the TCP connection
// whose client end is client (a connection's LocalAddr in the test): the
// kernel reports the daemon's end with a socket inode once it is accepted
// (0 while it waits in the listen backlog), and the inode is one of the
// daemon's file descriptors. It lets a test know that the daemon holds a
// connection it has not served. The kernel is asked through sock_diag,
// which stays fast with many TIME_WAIT sockets about.
func (d *Daemon) Accepted(client net.Addr) bool {
	ta, ok := client.(*net.TCPAddr)
	if !ok {
		return false
	}
	server, err := netip.ParseAddrPort(d.Address)
	if err != nil {
		return false
	}
	remote := ta.AddrPort()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	socks, err := tcpSockets(1 << tcpEstablished)
	if err != nil {
		return false
	}
	for _, s := range socks {
		if s.local.Port() == server.Port() && s.remote == remote && s.inode != 0 {
			return holdsSocket(d.Cmd.Process.Pid, map[uint32]bool{s.inode: true})
		}
	}
	return false
}

// Output is what the daemon has written to stdout and stderr so far.
func (d *Daemon) Output() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// WaitOutput waits up to timeout for substr to appear in the output.
func (d *Daemon) WaitOutput(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(d.Output(), substr) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RunDaemonCommand runs the built binary with args to completion (a
// subcommand such as check or config-test, killed after 60 s) in the
// repository root and returns its stdout, stderr and exit status.
func RunDaemonCommand(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	bin := BuildDaemon(t)
	var out, errb strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Dir = RepoRoot(t)
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run %s %v: %v", bin, args, err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}
