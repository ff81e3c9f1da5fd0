package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log"
	"net"
	"os"
	"strings"
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
