package milter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/antespam/antespam-milter/config"
)

// Listen opens the milter socket named in the syntax Sendmail, Postfix and
// OpenDKIM share (parsed by config.ParseListen):
//
//	inet:PORT@HOST     TCP on HOST (a name or an address; [brackets] allowed)
//	inet:PORT          TCP on every interface, as OpenDKIM does
//	inet6:PORT@[HOST]  TCP over IPv6 on HOST
//	inet6:PORT         TCP over IPv6 on every interface
//	unix:/path         a unix socket; local:/path is the same
//
// For a unix socket, a stale socket file (nobody accepts on it) is replaced
// and a live one is an error; a path that is not a socket is never
// removed. The socket gets the file mode (when not 0) and the group (a name
// or a number, when not ""). Closing the listener removes the socket file.
func Listen(spec string, mode os.FileMode, group string) (net.Listener, error) {
	network, addr, err := config.ParseListen(spec)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if network != "unix" {
		lc := net.ListenConfig{KeepAliveConfig: keepAlive}
		ln, err := lc.Listen(context.Background(), network, addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", spec, err)
		}
		return ln, nil
	}
	return listenUnix(addr, mode, group)
}

// keepAlive is the TCP keepalive of accepted milter connections. Go's
// default (probes after 15 s idle, every 15 s) ended idle sessions at
// 150 s when bursts of probes from thousands of idle connections were
// dropped on loopback (bench-memory); an idle milter connection is
// normal (session_idle_timeout is the real bound on idleness), so the
// first probe waits 2 minutes and an MTA that vanished is still noticed,
// after 9 unanswered probes 30 s apart.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 2 * time.Minute, Interval: 30 * time.Second, Count: 9}

// ParseSpec splits a milter socket spec (see Listen) into a network for
// net.Listen and an address. It is config.ParseListen, the one parser of
// the spec.
func ParseSpec(spec string) (network, addr string, err error) {
	return config.ParseListen(spec)
}

func listenUnix(path string, mode os.FileMode, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("listen unix:%s: socket_group: %w", path, err)
		}
		gid = g
	}
	if err := removeStale(path); err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	if mode != 0 {
		if err := os.Chmod(path, mode.Perm()); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen unix:%s: socket_mode: %w", path, err)
		}
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen unix:%s: socket_group %s: %w", path, group, err)
		}
	}
	return ln, nil
}

func lookupGroup(group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// removeStale removes a unix socket file nobody accepts on. A live socket
// or a file that is not a socket is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another process is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe existing socket: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
