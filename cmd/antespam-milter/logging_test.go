package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// TestStdLogRouted: what go-milter writes with the standard log package
// becomes a structured record at warn level, and follows the level.
func TestStdLogRouted(t *testing.T) {
	t.Cleanup(func() {
		log.SetOutput(os.Stderr)
		log.SetFlags(log.LstdFlags)
	})
	var buf bytes.Buffer
	newLogger(&buf, "json", "info")
	log.Printf("Error reading milter command: %v", "unexpected EOF")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %q: %v", buf.String(), err)
	}
	for k, want := range map[string]any{
		"level": "WARN", "msg": "Error reading milter command: unexpected EOF", "component": "go-milter",
	} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %v (%s)", k, rec[k], want, buf.String())
		}
	}

	buf.Reset()
	newLogger(&buf, "text", "error")
	log.Print("Error writing packet: broken pipe")
	if buf.Len() != 0 {
		t.Errorf("logged at log_level = error: %q", buf.String())
	}
}

// TestServeStdLogStructured: an MTA that drops the connection in the
// middle of a command makes go-milter log through the standard logger;
// the daemon's JSON output carries it as a JSON record like every other
// line.
func TestServeStdLogStructured(t *testing.T) {
	f := newFixture(t, `log_format = "json"`)
	d := testserver.StartDaemon(t, f.config)
	c, err := net.Dial(d.Network, d.Address)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0, 0, 0, 100, 'O', 0}) // 100 bytes announced, 2 sent
	c.Close()
	if !d.WaitOutput("unexpected EOF", 10*time.Second) {
		t.Fatalf("go-milter's read error not logged:\n%s", d.Output())
	}
	sc := bufio.NewScanner(strings.NewReader(d.Output()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("not a JSON record: %q", sc.Text())
			continue
		}
		if strings.Contains(sc.Text(), "unexpected EOF") && (rec["level"] != "WARN" || rec["component"] != "go-milter") {
			t.Errorf("go-milter's line: %s, want level WARN and component go-milter", sc.Text())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logWriter's timer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogWriter: the first lines of a window go straight out; the ones
// beyond are held back, then written out by the timer without anyone
// flushing, whole and in order; a line that does not fit writes the buffer
// out first; Close writes out the rest, and writes after Close go
// straight through.
func TestLogWriter(t *testing.T) {
	var out syncBuffer
	lw := newLogWriterSize(&out, 50*time.Millisecond, 1, 1024)
	defer lw.Close()
	lw.Write([]byte("one\n"))
	if got := out.String(); got != "one\n" {
		t.Errorf("first line of a window: %q out, want it at once", got)
	}
	lw.Write([]byte("two\n"))
	lw.Write([]byte("three\n"))
	for deadline := time.Now().Add(10 * time.Second); out.String() != "one\ntwo\nthree\n"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("buffered lines not written out by the timer: %q", out.String())
		}
	}

	// No direct lines and a window far longer than the test: only a full
	// buffer and Close write anything out.
	var full syncBuffer
	lw2 := newLogWriterSize(&full, time.Hour, 0, 4096)
	line := []byte(strings.Repeat("x", 1000) + "\n")
	for range 4 {
		lw2.Write(line)
	}
	if got := len(full.String()); got != 0 {
		t.Errorf("%d bytes out before the buffer is full, want 0", got)
	}
	lw2.Write(line) // does not fit: the 4 before it are written out
	if got := len(full.String()); got != 4*len(line) {
		t.Errorf("after overflowing the buffer: %d bytes out, want %d", got, 4*len(line))
	}
	lw2.Close()
	if got := len(full.String()); got != 5*len(line) {
		t.Errorf("after Close: %d bytes out, want %d", got, 5*len(line))
	}
	lw2.Write([]byte("late\n"))
	if !strings.HasSuffix(full.String(), "late\n") {
		t.Errorf("write after Close not passed through")
	}
}
