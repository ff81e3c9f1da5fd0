package e2e_test

import (
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpClient speaks SMTP line by line so that every reply, code and text,
// can be asserted exactly.
type smtpClient struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
	// Greeting is the server's first reply.
	Greeting string
}

// dialSMTP connects to the MTA at addr from the local address src
// (127.0.0.N or ::1), so each case chooses the client IP the milter sees,
// and reads the greeting.
func dialSMTP(t testing.TB, addr, src string) *smtpClient {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	c := &smtpClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	c.Greeting = c.read()
	return c
}

// read reads one (possibly multi-line) reply and returns its last line,
// "CODE TEXT"; a closed connection reads as "".
func (c *smtpClient) read() string {
	c.t.Helper()
	_ = c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	var last string
	for {
		line, err := c.tp.ReadLine()
		if err != nil {
			return last
		}
		if len(line) < 4 || line[3] != '-' {
			return line
		}
		last = line
	}
}

// cmd sends one command line and returns the reply's last line.
func (c *smtpClient) cmd(format string, args ...any) string {
	c.t.Helper()
	_ = c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if err := c.tp.PrintfLine(format, args...); err != nil {
		return ""
	}
	return c.read()
}

// expect sends a command and fails the test unless the reply is want.
func (c *smtpClient) expect(want string, format string, args ...any) {
	c.t.Helper()
	cmd := fmt.Sprintf(format, args...)
	if got := c.cmd("%s", cmd); got != want {
		c.t.Errorf("%s: got %q, want %q", cmd, got, want)
	}
}

// expectPrefix is expect for replies whose end varies (queue IDs, dates).
func (c *smtpClient) expectPrefix(want string, format string, args ...any) string {
	c.t.Helper()
	cmd := fmt.Sprintf(format, args...)
	got := c.cmd("%s", cmd)
	if !strings.HasPrefix(got, want) {
		c.t.Errorf("%s: got %q, want %q...", cmd, got, want)
	}
	return got
}

// data sends DATA and a small message carrying id in its Subject and
// returns the final reply.
func (c *smtpClient) data(id string) string {
	c.t.Helper()
	if got := c.cmd("DATA"); !strings.HasPrefix(got, "354 ") {
		c.t.Errorf("DATA: got %q, want 354", got)
		return got
	}
	w := c.tp.DotWriter()
	fmt.Fprintf(w, "From: sender@sender.example\r\nTo: undisclosed-recipients:;\r\nSubject: %s\r\nMessage-ID: <%s@sender.example>\r\n\r\nTest %s.\r\n", id, id, id)
	if err := w.Close(); err != nil {
		c.t.Errorf("DATA: %v", err)
	}
	return c.read()
}

// send sends a message with a new id (see data) and fails the test
// unless the final reply starts with want; it returns the id.
func (c *smtpClient) send(t *testing.T, want string) string {
	t.Helper()
	id := id(t)
	if got := c.data(id); !strings.HasPrefix(got, want) {
		t.Errorf("DATA: got %q, want %q...", got, want)
	}
	return id
}

func (c *smtpClient) quit() {
	_ = c.tp.PrintfLine("QUIT")
	c.read()
	c.conn.Close()
}

// sink is an SMTP server that takes every message the MTA relays and
// records its envelope recipients by the id in its Subject.
type sink struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs map[string][]string // id → recipients, in delivery order
	cond *sync.Cond
}

func startSink(t testing.TB) *sink {
	t.Helper()
	// Not 127.0.0.1: Sendmail counts its interfaces' addresses as itself
	// and would not relay to a smart host there.
	ln, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, msgs: map[string][]string{}}
	s.cond = sync.NewCond(&s.mu)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *sink) Addr() string { return s.ln.Addr().String() }

func (s *sink) serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	tp := textproto.NewConn(conn)
	reply := func(l string) { _ = tp.PrintfLine("%s", l) }
	reply("220 sink.test ESMTP sink")
	var rcpts []string
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb := strings.ToUpper(line)
		switch {
		case strings.HasPrefix(verb, "EHLO"):
			reply("250-sink.test")
			reply("250 8BITMIME")
		case strings.HasPrefix(verb, "HELO"):
			reply("250 sink.test")
		case strings.HasPrefix(verb, "MAIL FROM:"):
			rcpts = nil
			reply("250 2.1.0 Ok")
		case strings.HasPrefix(verb, "RCPT TO:"):
			a := strings.TrimSpace(line[len("RCPT TO:"):])
			if i := strings.IndexByte(a, '>'); i >= 0 {
				a = a[:i+1]
			}
			rcpts = append(rcpts, strings.Trim(a, "<>"))
			reply("250 2.1.5 Ok")
		case verb == "DATA":
			reply("354 go ahead")
			body, err := tp.ReadDotLines()
			if err != nil {
				return
			}
			id := ""
			for _, l := range body {
				if strings.HasPrefix(l, "Subject: ") {
					id = strings.TrimPrefix(l, "Subject: ")
					break
				}
				if l == "" {
					break
				}
			}
			s.mu.Lock()
			s.msgs[id] = append(s.msgs[id], rcpts...)
			s.cond.Broadcast()
			s.mu.Unlock()
			reply("250 2.0.0 Ok: delivered")
		case verb == "RSET":
			rcpts = nil
			reply("250 2.0.0 Ok")
		case verb == "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("250 2.0.0 Ok")
		}
	}
}

// waitDelivered waits until the message id has been delivered to n
// recipients, or timeout, and returns the recipients it got.
func (s *sink) waitDelivered(id string, n int, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.msgs[id]) < n && time.Now().Before(deadline) {
		s.cond.Wait()
	}
	return append([]string(nil), s.msgs[id]...)
}
