package testserver

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFreePortReserved: a port FreePort handed out cannot be reserved
// again (by another test binary, which the lock files stand for) until
// the test that got it ends, even while nothing listens on it.
func TestFreePortReserved(t *testing.T) {
	var port int
	t.Run("holder", func(t *testing.T) {
		port = FreePort(t, "127.0.0.1")
		// A second open file, as another process would have: flock locks
		// belong to the open file, so this conflicts in one process too.
		lock, err := reservePort(port)
		if err != nil {
			t.Fatal(err)
		}
		if lock != nil {
			lock.Close()
			t.Fatalf("port %d reserved twice while its test runs", port)
		}
	})
	lock, err := reservePort(port)
	if err != nil {
		t.Fatal(err)
	}
	if lock == nil {
		t.Fatalf("port %d still reserved after its test ended", port)
	}
	lock.Close()
}

// TestWaitListeningOwner: waitListening succeeds for the process that
// listens, and does not take another process's listener on the port for
// the server's.
func TestWaitListeningOwner(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := waitListening(os.Getpid(), l.Addr().String(), 10*time.Second); err != nil {
		t.Errorf("the listening process: %v", err)
	}

	sleep := exec.Command("sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	err = waitListening(sleep.Process.Pid, l.Addr().String(), 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "pids ["+strconv.Itoa(os.Getpid())+"] listen on that port") {
		t.Errorf("a process that does not listen, another one listening on the port: %v", err)
	}

	sleep.Process.Kill()
	sleep.Wait()
	if err := waitListening(sleep.Process.Pid, l.Addr().String(), 10*time.Second); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("a process that exited: %v", err)
	}
}

// TestTCPSocketsBacklog: sock_diag reports a connection's server end
// with inode 0 while it waits in the backlog, and with the inode of the
// accepting process's descriptor once accepted (what Daemon.Accepted
// relies on).
func TestTCPSocketsBacklog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	serverEnd := func() (tcpSocket, bool) {
		t.Helper()
		socks, err := tcpSockets(1 << tcpEstablished)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range socks {
			if s.local == l.Addr().(*net.TCPAddr).AddrPort() && s.remote == c.LocalAddr().(*net.TCPAddr).AddrPort() {
				return s, true
			}
		}
		return tcpSocket{}, false
	}
	if s, ok := serverEnd(); !ok || s.inode != 0 {
		t.Errorf("before Accept: %+v, found %v; want the server end with inode 0", s, ok)
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	s, ok := serverEnd()
	if !ok || s.inode == 0 || !holdsSocket(os.Getpid(), map[uint32]bool{s.inode: true}) {
		t.Errorf("after Accept: %+v, found %v; want an inode this process holds", s, ok)
	}
	if !listensOn(os.Getpid(), l.Addr().(*net.TCPAddr).Port) {
		t.Error("listensOn: this process's listener not found")
	}
}
