package milter

import (
	"net"
	"syscall"
	"testing"
)

// TestListenKeepAlive: accepted TCP milter connections carry keepAlive,
// not Go's 15 s default.
func TestListenKeepAlive(t *testing.T) {
	ln, err := Listen("inet:0@127.0.0.1", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	raw, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int{
		"SO_KEEPALIVE":  {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
		"TCP_KEEPIDLE":  {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
		"TCP_KEEPINTVL": {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
		"TCP_KEEPCNT":   {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
	}
	wantVal := map[string]int{
		"SO_KEEPALIVE":  1,
		"TCP_KEEPIDLE":  int(keepAlive.Idle.Seconds()),
		"TCP_KEEPINTVL": int(keepAlive.Interval.Seconds()),
		"TCP_KEEPCNT":   keepAlive.Count,
	}
	for name, opt := range want {
		var v int
		var gerr error
		if err := raw.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), opt[0], opt[1]) }); err != nil {
			t.Fatal(err)
		}
		if gerr != nil {
			t.Fatalf("%s: %v", name, gerr)
		}
		if v != wantVal[name] {
			t.Errorf("%s = %d, want %d", name, v, wantVal[name])
		}
	}
}
