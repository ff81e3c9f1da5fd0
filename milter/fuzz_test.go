package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/config"
)

// panicWatch catches the panics go-milter recovers from and logs with the
// standard logger.
type panicWatch struct {
	mu  sync.Mutex
	msg string
}

func (w *panicWatch) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("panic")) {
		w.mu.Lock()
		if w.msg == "" {
			w.msg = string(p)
		}
		w.mu.Unlock()
	}
	return len(p), nil
}

func (w *panicWatch) take() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msg
	w.msg = ""
	return m
}

func macroPacket(stage byte, kv ...string) []byte {
	d := []byte{stage}
	for _, s := range kv {
		d = append(append(d, s...), 0)
	}
	return packet('D', d)
}

func join(ps ...[]byte) []byte { return bytes.Join(ps, nil) }

// FuzzSession feeds raw bytes to a session over a real socket: whatever
// comes, the server must not panic or hang, and every reply it writes is
// one line with agreeing codes and no single %.
func FuzzSession(f *testing.F) {
	mail := packet('M', []byte("<a@b.test>\x00"))
	abort, quit := packet('A', nil), packet('Q', nil)
	f.Add(join(optneg(), connPacket("mx.test", "192.0.2.66"), quit))
	f.Add(join(optneg(), macroPacket('C', "j", "mx", "{daemon_name}", "smtpd", "{client_addr}", "IPv6:::1"),
		packet('C', []byte("[IPv6:::1]\x006\x00\x19IPv6:::1\x00")), quit))
	f.Add(join(optneg(), packet('C', []byte("localhost\x00L/var/run/x\x00")), mail, quit))
	f.Add(join(optneg(), connPacket("h", "10.0.0.1"), macroPacket('M', "i", "Q1", "{auth_authen}", "alice"), mail,
		rcptPacket("unknown@example.org"), rcptPacket("known@example.org"), rcptPacket("a%s%n@example.org"),
		rcptPacket("x\r\n250 ok@example.org"), rcptPacket(""), rcptPacket("@"), rcptPacket("\"a b\"@example.org"),
		abort, mail, rcptPacket("known+x@example.org"), packet('E', nil), quit))
	f.Add(join(optneg(), macroPacket('R', strings.Repeat("k", 5000), strings.Repeat("v\x00", 100)), quit))
	f.Add(join(optneg(), packet('X', []byte("unknown command"))))
	f.Add(join(optneg(), []byte{0, 0, 0, 0}))
	f.Add(join(optneg(), []byte{0x7f, 0xff, 0xff, 0xff, 'R'}))
	f.Add(join(optneg(), packet('C', []byte("h\x004"))))
	f.Add(join(optneg(), packet('D', nil), packet('H', []byte("Subject\x00x\x00")), packet('N', nil), packet('B', []byte("body")), packet('T', nil)))
	f.Add([]byte{})

	w := &panicWatch{}
	log.SetOutput(io.MultiWriter(w, io.Discard))
	f.Cleanup(func() { log.SetOutput(os.Stderr) })
	src := newMapSource("known@example.org", "192.0.2.66", "@catch.example")
	cfg := testConfig(func(c *config.Config) { c.DecisionTimeout = time.Second })
	// A unix socket: a fuzzer's millions of TCP connections would fill
	// the machine with TIME-WAIT sockets.
	path := filepath.Join(f.TempDir(), "fuzz.sock")
	ln, err := Listen("unix:"+path, 0o600, "")
	if err != nil {
		f.Fatal(err)
	}
	serveOn(f, ln, newPolicy(f, src, cfg, discard()), ServerOptions{IdleTimeout: 5 * time.Second}, discard())

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.UnixConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("session still open 10s after its input ended")
		}
		checkReplies(t, out)
		if m := w.take(); m != "" {
			t.Fatalf("server panicked: %s", m)
		}
	})
}

// checkReplies checks every reply-code packet the server wrote.
func checkReplies(t *testing.T, out []byte) {
	t.Helper()
	for len(out) >= 5 {
		n := int(binary.BigEndian.Uint32(out))
		if n < 1 || 4+n > len(out) {
			t.Fatalf("malformed reply stream: length %d with %d bytes left", n, len(out)-4)
		}
		code, data := out[4], out[5:4+n]
		out = out[4+n:]
		if code != 'y' {
			continue
		}
		line := strings.TrimSuffix(string(data), "\x00")
		m := replyRE.FindStringSubmatch(line)
		if m == nil || m[1] != m[2] || strings.ContainsAny(line, "\r\n\x00") || strings.Contains(strings.ReplaceAll(line, "%%", ""), "%") {
			t.Fatalf("unsafe reply %q", line)
		}
	}
}

// TestRawSession: the raw-bytes path the fuzzer uses does reach the
// decisions (so the fuzzer checks real replies).
func TestRawSession(t *testing.T) {
	src := newMapSource("known@example.org")
	_, addr := startServer(t, newPolicy(t, src, testConfig(), discard()), ServerOptions{}, discard())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(join(optneg(), connPacket("h", "10.0.0.1"), packet('M', []byte("<a@b.test>\x00")),
		rcptPacket("unknown@example.org"), rcptPacket("known@example.org"), rcptPacket("100%@example.org"),
		packet('Q', nil)))
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	checkReplies(t, out)
	var codes []byte
	var lines []string
	for len(out) >= 5 {
		n := int(binary.BigEndian.Uint32(out))
		codes = append(codes, out[4])
		if out[4] == 'y' {
			lines = append(lines, string(out[5:4+n]))
		}
		out = out[4+n:]
	}
	if string(codes) != "Occycy" {
		t.Errorf("reply codes %q, want %q", codes, "Occycy")
	}
	if len(lines) == 2 && lines[1] != unknown("100%%@example.org")+"\x00" {
		t.Errorf("reply %q", lines[1])
	}
}
