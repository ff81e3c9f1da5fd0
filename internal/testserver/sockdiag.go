package testserver

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
)

// The kernel's socket tables are asked through netlink (sock_diag), not
// read from /proc/net/tcp: a machine that has run load tests holds tens of
// thousands of TIME_WAIT sockets, and generating and parsing that file
// then takes a good part of a second, longer than some of the windows a
// test has to see a socket in (a connection waits one second in the
// daemon's queue).

const (
	sockDiagByFamily = 20         // SOCK_DIAG_BY_FAMILY
	tcpEstablished   = 1          // TCP_ESTABLISHED
	tcpListen        = 10         // TCP_LISTEN
	inetDiagNoCookie = 0xffffffff // INET_DIAG_NOCOOKIE, each half
	inetDiagReqLen   = 56         // struct inet_diag_req_v2
	inetDiagMsgLen   = 72         // struct inet_diag_msg
)

// tcpSocket is one TCP socket the kernel reported.
type tcpSocket struct {
	local, remote netip.AddrPort
	// inode is 0 while a connection waits in its listener's backlog
	// (not accepted yet).
	inode uint32
}

// tcpSockets returns the TCP sockets (IPv4 and IPv6) in the states of
// the bit mask (1<<tcpListen, 1<<tcpEstablished).
func tcpSockets(states uint32) ([]tcpSocket, error) {
	var out []tcpSocket
	for _, family := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
		socks, err := sockDiagDump(family, states)
		if err != nil {
			return nil, err
		}
		out = append(out, socks...)
	}
	return out, nil
}

// sockDiagDump asks the kernel for the TCP sockets of family in states.
func sockDiagDump(family uint8, states uint32) ([]tcpSocket, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer syscall.Close(fd)
	// struct nlmsghdr, then struct inet_diag_req_v2 (id left zero: a
	// dump matches every socket, without a cookie).
	msg := make([]byte, syscall.NLMSG_HDRLEN+inetDiagReqLen)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(msg[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence
	req := msg[syscall.NLMSG_HDRLEN:]
	req[0] = family
	req[1] = syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], states)
	binary.NativeEndian.PutUint32(req[48:], inetDiagNoCookie)
	binary.NativeEndian.PutUint32(req[52:], inetDiagNoCookie)
	if err := syscall.Sendto(fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag send: %w", err)
	}
	var out []tcpSocket
	buf := make([]byte, 64*1024)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return out, nil
			case syscall.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return nil, fmt.Errorf("sock_diag: %w", syscall.Errno(errno))
					}
				}
				return out, nil
			case sockDiagByFamily:
				// struct inet_diag_msg: family, state, timer, retrans,
				// then the id (ports and addresses in network order),
				// ..., the inode at 68.
				d := m.Data
				if len(d) < inetDiagMsgLen {
					continue
				}
				out = append(out, tcpSocket{
					local:  netip.AddrPortFrom(diagAddr(family, d[8:24]), binary.BigEndian.Uint16(d[4:])),
					remote: netip.AddrPortFrom(diagAddr(family, d[24:40]), binary.BigEndian.Uint16(d[6:])),
					inode:  binary.NativeEndian.Uint32(d[68:]),
				})
			}
		}
	}
}

// diagAddr is the address in a sock_diag id field (16 bytes, the first 4
// for IPv4).
func diagAddr(family uint8, b []byte) netip.Addr {
	if family == syscall.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16])).Unmap()
}
