package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// fixture is a config with the file source in a temp dir.
type fixture struct {
	dir, config, rcpts, hosts string
	listen                    string // milter socket spec
	metrics                   string // metrics_listen, "" when off
}

const testRecipients = `# test list
alice@example.com
Carol@example.com
@catchall.example
`

const testHosts = `192.0.2.0/24
198.51.100
bad.example.net
`

// newFixture writes the lists and a config whose body is extra (keys and
// sections appended after the top-level ones written here).
func newFixture(t *testing.T, extra string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.rcpts = filepath.Join(f.dir, "recipients")
	f.hosts = filepath.Join(f.dir, "hosts")
	f.config = filepath.Join(f.dir, "antespam-milter.toml")
	f.listen = fmt.Sprintf("inet:%d@127.0.0.1", testserver.FreePort(t, "127.0.0.1"))
	writeFile(t, f.rcpts, testRecipients)
	writeFile(t, f.hosts, testHosts)
	f.write(t, extra)
	return f
}

// write (re)writes the config with extra appended to the common part.
func (f *fixture) write(t *testing.T, extra string) {
	t.Helper()
	top := fmt.Sprintf("listen = %q\nsource = \"file\"\nshutdown_timeout = \"5s\"\n", f.listen)
	if f.metrics != "" {
		top += fmt.Sprintf("metrics_listen = %q\n", f.metrics)
	}
	// Top-level keys in extra must come before any section.
	head, sections, _ := strings.Cut(extra, "\n[")
	if sections != "" {
		sections = "[" + sections
	}
	body := top + head + "\n" + sections + "\n"
	if !strings.Contains(body, "[recipients]") {
		body += "[recipients]\ndomains = [\"example.com\", \"catchall.example\"]\nrecipient_delimiter = \"+\"\ncatch_all = true\n"
	}
	body += fmt.Sprintf("[file]\nrecipients = %q\nhosts = %q\n", f.rcpts, f.hosts)
	writeFile(t, f.config, body)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runBin runs the daemon binary with args.
func runBin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return testserver.RunDaemonCommand(t, args...)
}

// milterSession opens a negotiated go-milter client session to d, with
// the v2 masks the daemon's go-milter server accepts.
func milterSession(t *testing.T, d *testserver.Daemon) *gomilter.ClientSession {
	t.Helper()
	c := d.MilterClient(20*time.Second, nil)
	s, err := c.Session()
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rcpt opens a session, connects from 127.0.0.1 (not listed), sends MAIL
// and RCPT rcpt, and returns the reply to RCPT.
func rcpt(t *testing.T, d *testserver.Daemon, addr string) string {
	t.Helper()
	return testserver.Reply(testserver.AskRcpt(t, milterSession(t, d), "127.0.0.1", addr))
}
