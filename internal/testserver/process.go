package testserver

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Freeze stops the process with SIGSTOP, like a black-holed server:
// connections are accepted by the kernel and nothing is answered. It
// returns once every thread of the process is stopped, or an error after
// 5 s: the signal takes effect a moment after kill returns, and a thread
// still running could answer one more request.
func (p *Process) Freeze() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	pid := p.Cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for !threadsStopped(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("freeze: pid %d not stopped 5s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// Thaw resumes a frozen process with SIGCONT.
func (p *Process) Thaw() error {
	if err := p.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("thaw: %w", err)
	}
	return nil
}

// threadsStopped reports whether every thread of process pid is stopped
// ("T", or "t" under a tracer, in /proc/PID/task/TID/stat).
func threadsStopped(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		s, ok := procState(dir + task.Name() + "/stat")
		if !ok || (s != 'T' && s != 't') {
			return false
		}
	}
	return true
}

// exited reports whether process pid is gone or a zombie.
func exited(pid int) bool {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return true
	}
	s, ok := procState(path)
	return ok && s == 'Z'
}

// procState reads the state letter of a /proc stat file; ok is false when
// the file is gone or unreadable.
func procState(path string) (state byte, ok bool) {
	stat, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	// The state follows the command name, which is in parentheses and may
	// hold anything, parentheses included.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) {
		return 0, false
	}
	return stat[i+2], true
}

// waitListening waits until process pid listens on addr's port and addr
// accepts connections, or timeout passes. It returns early when the
// process exits (a server that could not bind exits), and it is not
// fooled by another process listening on the port: a connection accepted
// there would make a test talk to the wrong server.
func waitListening(pid int, addr string, timeout time.Duration) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("port of %s: %w", addr, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		if exited(pid) {
			return fmt.Errorf("pid %d exited before listening on %s", pid, addr)
		}
		if listensOn(pid, port) {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			if other := listenerPIDs(port); len(other) > 0 {
				return fmt.Errorf("pid %d not listening on %s after %s; pids %v listen on that port", pid, addr, timeout, other)
			}
			return fmt.Errorf("pid %d not listening on %s after %s", pid, addr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listensOn reports whether process pid holds a TCP socket listening on
// port, on any address.
func listensOn(pid, port int) bool {
	inodes := listenInodes(port)
	return len(inodes) > 0 && holdsSocket(pid, inodes)
}

// listenerPIDs lists the processes holding a socket listening on port
// (for error messages).
func listenerPIDs(port int) []int {
	inodes := listenInodes(port)
	if len(inodes) == 0 {
		return nil
	}
	procs, _ := os.ReadDir("/proc")
	var out []int
	for _, p := range procs {
		if pid, err := strconv.Atoi(p.Name()); err == nil && holdsSocket(pid, inodes) {
			out = append(out, pid)
		}
	}
	return out
}

// listenInodes returns the inodes of the TCP sockets listening on port.
func listenInodes(port int) map[uint32]bool {
	socks, _ := tcpSockets(1 << tcpListen)
	inodes := map[uint32]bool{}
	for _, s := range socks {
		if int(s.local.Port()) == port && s.inode != 0 {
			inodes[s.inode] = true
		}
	}
	return inodes
}

// holdsSocket reports whether one of process pid's descriptors is one of
// the socket inodes.
func holdsSocket(pid int, inodes map[uint32]bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	fds, _ := os.ReadDir(dir)
	for _, fd := range fds {
		link, err := os.Readlink(dir + fd.Name())
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 32); err == nil && inodes[uint32(n)] {
			return true
		}
	}
	return false
}
