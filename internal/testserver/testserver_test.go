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
