package lookup

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fileInterval makes a File check its files more often than once a second.
func fileCheckEvery(d time.Duration) FileOption {
	return func(o *fileOptions) { o.interval = d }
}

// fileLogBuffer is a log destination safe for the background reloads.
type fileLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *fileLogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *fileLogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newListFile(t *testing.T, rcpts, hosts string, opts ...FileOption) (*File, *fileLogBuffer) {
	t.Helper()
	logs := &fileLogBuffer{}
	f, err := NewFile(rcpts, hosts, slog.New(slog.NewTextHandler(logs, nil)), opts...)
	if err != nil {
		t.Fatalf("NewFile: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f, logs
}

func writeListFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileRcptKey(t *testing.T, addr string, fold bool) Key {
	t.Helper()
	local, domain, err := NormalizeAddress(addr, fold)
	if err != nil {
		t.Fatalf("NormalizeAddress(%q): %v", addr, err)
	}
	return Key{Kind: Recipient, Name: local + "@" + domain, Candidates: RecipientCandidates(local, domain, "+", true)}
}

func fileHostKey(addr, hostname string) Key {
	a := netip.MustParseAddr(addr)
	return Key{Kind: Host, Name: HostKeyName(a, hostname), Candidates: HostCandidates(a, hostname)}
}

func TestFileLookup(t *testing.T) {
	f, logs := newListFile(t, "testdata/recipients", "testdata/hosts")
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		key   Key
		found bool
	}{
		{"listed", fileRcptKey(t, "alice@example.com", true), true},
		{"extension", fileRcptKey(t, "alice+x@example.com", true), true},
		{"listed folded", fileRcptKey(t, "BOB@example.com", true), true},
		{"quoted", fileRcptKey(t, `"John Doe"@example.com`, true), true},
		{"utf8 local", fileRcptKey(t, "JOSÉ@example.com", true), true},
		{"idn as a-label", fileRcptKey(t, "user@xn--bcher-kva.example", true), true},
		{"hash in local part", fileRcptKey(t, "foo#bar@example.com", true), true},
		{"catch-all", fileRcptKey(t, "whoever@catchall.example", true), true},
		{"not listed", fileRcptKey(t, "carol@example.com", true), false},
		{"bad line not listed", fileRcptKey(t, "x@example.com", true), false},

		{"cidr /24", fileHostKey("192.0.2.200", ""), true},
		{"exact ip", fileHostKey("198.51.100.7", "unknown"), true},
		{"exact ip miss", fileHostKey("198.51.100.8", "unknown"), false},
		{"cidr /20 low", fileHostKey("10.1.0.1", ""), true},
		{"cidr /20 high", fileHostKey("10.1.15.254", ""), true},
		{"cidr /20 outside", fileHostKey("10.1.16.1", ""), false},
		{"postfix prefix", fileHostKey("203.0.113.44", ""), true},
		{"ipv6 /48", fileHostKey("2001:db8:1:abcd::1", ""), true},
		{"ipv6 /56", fileHostKey("2001:db8:ff:1ff::1", ""), true},
		{"ipv6 /56 outside", fileHostKey("2001:db8:ff:200::1", ""), false},
		{"mapped network, plain ipv4", fileHostKey("172.31.255.1", ""), true},
		{"mapped client", fileHostKey("::ffff:172.16.3.4", ""), true},
		{"hostname", fileHostKey("192.168.1.1", "bad.example"), true},
		{"hostname parent", fileHostKey("192.168.1.1", "MX.Bad.Example."), true},
		{"hostname listed deeper", fileHostKey("192.168.1.1", "example.net"), false},
		{"hostname other", fileHostKey("192.168.1.1", "good.example"), false},
		{"bracketed hostname", fileHostKey("192.168.1.1", "[192.168.1.1]"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ans, err := f.Lookup(ctx, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if ans.Found != tt.found || ans.Tier != "file" || ans.At.IsZero() {
				t.Errorf("Lookup(%s) = %+v, want found %v", tt.key, ans, tt.found)
			}
		})
	}
	for _, want := range []string{"testdata/recipients:11", "testdata/recipients:12", "testdata/hosts:13", "testdata/hosts:14"} {
		if !strings.Contains(logs.String(), want+" ") {
			t.Errorf("no log line for the bad line at %s in:\n%s", want, logs)
		}
	}
	if r, h := f.Len(); r != 7 || h != 9 {
		t.Errorf("Len = %d, %d; want 7, 9", r, h)
	}
}

func TestFileCaseFoldOff(t *testing.T) {
	f, _ := newListFile(t, "testdata/recipients", "", FileCaseFold(false))
	ctx := context.Background()
	for addr, want := range map[string]bool{"Bob@example.com": true, "bob@example.com": false, "alice@example.com": true} {
		ans, err := f.Lookup(ctx, fileRcptKey(t, addr, false))
		if err != nil || ans.Found != want {
			t.Errorf("%s: %+v, %v; want found %v", addr, ans, err, want)
		}
	}
}

func TestFileEmptyAndMissing(t *testing.T) {
	f, _ := newListFile(t, "", "")
	for _, k := range []Key{fileRcptKey(t, "alice@example.com", true), fileHostKey("192.0.2.1", "x.example")} {
		if ans, err := f.Lookup(context.Background(), k); err != nil || ans.Found {
			t.Errorf("empty source: %+v, %v", ans, err)
		}
	}
	if _, err := NewFile(filepath.Join(t.TempDir(), "nope"), "", nil); err == nil {
		t.Error("NewFile with a missing recipients file: no error")
	}
	if _, err := NewFile("", t.TempDir(), nil); err == nil {
		t.Error("NewFile with a directory as hosts file: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Lookup(ctx, fileHostKey("192.0.2.1", "")); err == nil {
		t.Error("Lookup with a cancelled context: no error")
	}
	if _, err := f.Lookup(context.Background(), Key{Kind: 99, Name: "x"}); err == nil {
		t.Error("Lookup of an unknown kind: no error")
	}
}

// TestFileReload rewrites the lists under a running File: lookups pick the
// change up by themselves, without blocking, and a file that disappears
// keeps its last contents.
func TestFileReload(t *testing.T) {
	dir := t.TempDir()
	rp, hp := filepath.Join(dir, "recipients"), filepath.Join(dir, "hosts")
	writeListFile(t, rp, "alice@example.com\n")
	writeListFile(t, hp, "192.0.2.1\n")
	f, logs := newListFile(t, rp, hp, fileCheckEvery(10*time.Millisecond))
	ctx := context.Background()
	alice, carol := fileRcptKey(t, "alice@example.com", true), fileRcptKey(t, "carol@example.com", true)
	h1, h2 := fileHostKey("192.0.2.1", ""), fileHostKey("10.9.9.9", "")

	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen after 10s; logs:\n%s", what, logs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	found := func(k Key) bool {
		ans, err := f.Lookup(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return ans.Found
	}
	if !found(alice) || found(carol) || !found(h1) || found(h2) {
		t.Fatal("initial contents wrong")
	}

	// Same size as before: a coarse file system clock could leave the
	// time unchanged too, so set it.
	writeListFile(t, rp, "carol@example.com\n")
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(rp, future, future); err != nil {
		t.Fatal(err)
	}
	writeListFile(t, hp, "10.0.0.0/8\n")
	if err := os.Chtimes(hp, future, future); err != nil {
		t.Fatal(err)
	}
	eventually("recipients rewrite", func() bool { return found(carol) && !found(alice) })
	eventually("hosts rewrite", func() bool { return found(h2) && !found(h1) })

	// Replaced by rename (as editors and config managers do).
	tmp := filepath.Join(dir, "recipients.new")
	writeListFile(t, tmp, "alice@example.com\ncarol@example.com\n")
	if err := os.Rename(tmp, rp); err != nil {
		t.Fatal(err)
	}
	eventually("recipients replaced", func() bool { return found(alice) && found(carol) })

	// Removed: the last contents stay, with a warning. The in-place
	// rewrites above may have been read half-written (an empty list,
	// also kept with a warning), so count from here.
	const kept = "keeping the previous list"
	before := strings.Count(logs.String(), kept)
	if err := os.Remove(rp); err != nil {
		t.Fatal(err)
	}
	eventually("warning about the missing file", func() bool {
		found(alice)
		return strings.Count(logs.String(), kept) > before
	})
	for range 5 {
		found(alice)
		time.Sleep(20 * time.Millisecond)
	}
	if !found(alice) || !found(carol) {
		t.Error("contents lost with the file")
	}
	if n := strings.Count(logs.String(), kept) - before; n != 1 {
		t.Errorf("warned %d times about one missing file, want once", n)
	}
	if err := f.Reload(); err == nil {
		t.Error("Reload of a missing file: no error")
	}

	// Reload picks up a change at once.
	writeListFile(t, rp, "dave@example.com\n")
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	dave := fileRcptKey(t, "dave@example.com", true)
	if !found(dave) {
		t.Error("Reload did not load the new file")
	}
}

// TestFileKeepsAListThatBecomesEmpty: a list truncated (or rewritten in
// place and read half-way) must not make every recipient unknown. The
// background check keeps the old entries with one warning; Reload and a
// new File take the empty list; a list that fills again is picked up.
func TestFileKeepsAListThatBecomesEmpty(t *testing.T) {
	dir := t.TempDir()
	rp := filepath.Join(dir, "recipients")
	writeListFile(t, rp, "alice@example.com\n")
	var changes atomic.Int32
	f, logs := newListFile(t, rp, "", fileCheckEvery(10*time.Millisecond), FileOnChange(func() { changes.Add(1) }))
	ctx := context.Background()
	alice, bob := fileRcptKey(t, "alice@example.com", true), fileRcptKey(t, "bob@example.com", true)
	found := func(k Key) bool {
		ans, err := f.Lookup(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return ans.Found
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen after 10s; logs:\n%s", what, logs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := changes.Load(); n != 0 {
		t.Errorf("OnChange called %d times by the first read, want 0", n)
	}

	for _, content := range []string{"", "# every entry commented out\n"} {
		// Counted from here: the first content's warning is in the log
		// when the second is written.
		warned := strings.Count(logs.String(), "list is empty now")
		writeListFile(t, rp, content)
		eventually("warning about the empty list", func() bool {
			found(alice)
			return strings.Count(logs.String(), "list is empty now") > warned
		})
		for range 5 {
			if !found(alice) {
				t.Fatalf("list %q: alice unknown; the old list must stay", content)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := changes.Load(); n != 0 {
			t.Errorf("OnChange called %d times for a list that was not swapped in", n)
		}
		// Filled again: picked up by itself.
		writeListFile(t, rp, "alice@example.com\nbob@example.com\n")
		eventually("the refilled list", func() bool { return found(bob) })
		// Called just after the swap, from the goroutine that made it.
		eventually("OnChange", func() bool { return changes.Load() > 0 })
		time.Sleep(50 * time.Millisecond)
		if n := changes.Load(); n != 1 {
			t.Errorf("OnChange called %d times after one swap, want 1", n)
		}
		changes.Store(0)
	}

	// Reload takes an empty list: the admin means it.
	writeListFile(t, rp, "")
	if err := f.Reload(); err != nil {
		t.Fatalf("Reload of an empty list: %v", err)
	}
	if found(alice) {
		t.Error("Reload kept the old list")
	}
	// So does a new File (daemon start, SIGHUP).
	if g, _ := newListFile(t, rp, ""); func() int { n, _ := g.Len(); return n }() != 0 {
		t.Error("NewFile of an empty list has entries")
	}
}

// TestFileOnChangeWithoutLookups: with FileOnChange the File checks its
// files by itself (a cache in front answers the lookups), and Close stops
// that.
func TestFileOnChangeWithoutLookups(t *testing.T) {
	dir := t.TempDir()
	rp := filepath.Join(dir, "recipients")
	writeListFile(t, rp, "alice@example.com\n")
	changed := make(chan struct{}, 10)
	f, _ := newListFile(t, rp, "", fileCheckEvery(10*time.Millisecond), FileOnChange(func() { changed <- struct{}{} }))
	writeListFile(t, rp, "alice@example.com\nbob@example.com\n")
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("OnChange not called within 10s of a change")
	}
	if n, _ := f.Len(); n != 2 {
		t.Errorf("%d entries after the change, want 2", n)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	writeListFile(t, rp, "carol@example.com\n")
	time.Sleep(100 * time.Millisecond)
	select {
	case <-changed:
		t.Error("OnChange called after Close")
	default:
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestFileReadsAgainWhatChangedMeanwhile: when the file changed between
// the check and the read (a write in progress), the result is not taken
// as is: the file is read again.
func TestFileReadsAgainWhatChangedMeanwhile(t *testing.T) {
	dir := t.TempDir()
	rp := filepath.Join(dir, "recipients")
	writeListFile(t, rp, "alice@example.com\n")
	f, _ := newListFile(t, rp, "")
	stale, err := os.Stat(rp)
	if err != nil {
		t.Fatal(err)
	}
	writeListFile(t, rp, "alice@example.com\nbob@example.com\n")
	if err := f.rcpt.read(stale, false); err != nil {
		t.Fatal(err)
	}
	now, err := os.Stat(rp)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := f.Len(); n != 2 || !sameVersion(f.rcpt.seen, now) {
		t.Errorf("after a read begun on a stale stat: %d entries, seen %v; want 2, the file as read", n, f.rcpt.seen.Size())
	}
}

// TestFileConcurrentReload looks up from many goroutines while the file is
// rewritten: run with -race, every answer is one of the two contents.
func TestFileConcurrentReload(t *testing.T) {
	dir := t.TempDir()
	hp := filepath.Join(dir, "hosts")
	writeListFile(t, hp, "192.0.2.0/24\nbad.example\n")
	f, _ := newListFile(t, "", hp, fileCheckEvery(time.Millisecond))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			k := fileHostKey("192.0.2.9", "mx.bad.example")
			for {
				select {
				case <-stop:
					return
				default:
				}
				ans, err := f.Lookup(context.Background(), k)
				if err != nil || !ans.Found {
					t.Errorf("lookup during reload: %+v, %v", ans, err)
					return
				}
			}
		})
	}
	for i := range 50 {
		tmp := filepath.Join(dir, "hosts.new")
		writeListFile(t, tmp, "192.0.2.0/24\nbad.example\n# "+strings.Repeat("x", i)+"\n")
		if err := os.Rename(tmp, hp); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

// TestFileChecker runs the Checker on the file source, as the daemon does
// with source = "file".
func TestFileChecker(t *testing.T) {
	f, _ := newListFile(t, "testdata/recipients", "testdata/hosts")
	c, err := NewChecker(f, CheckerOptions{
		Domains:            []string{"example.com", "catchall.example", "bücher.example"},
		RecipientDelimiter: "+",
		CaseFoldLocalPart:  true,
		CatchAll:           true,
		AlwaysAccept:       []string{"abuse"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		addr  string
		found bool
		tier  string
	}{
		{"<alice@example.com>", true, "file"},
		{"<Alice+Lists@EXAMPLE.com>", true, "file"},
		{"<carol@example.com>", false, "file"},
		{"<user@bücher.example>", true, "file"},
		{"<x@catchall.example>", true, "file"},
		{"<abuse@example.com>", true, TierAlways},
		{"<postmaster@example.com>", true, TierAlways},
		{"<anyone@example.org>", true, TierNotOurs},
	} {
		d, err := c.Recipient(ctx, tt.addr)
		if err != nil || d.Found != tt.found || d.Tier != tt.tier {
			t.Errorf("Recipient(%s) = %+v, %v; want found %v tier %s", tt.addr, d, err, tt.found, tt.tier)
		}
	}
	for _, tt := range []struct {
		ip, host string
		found    bool
	}{
		{"10.1.7.7", "unknown", true},
		{"192.0.2.1", "", true},
		{"192.168.0.1", "mx2.spam.example.net", true},
		{"192.168.0.1", "mail.example.org", false},
		{"2001:db8:1:2::3", "", true},
	} {
		d, err := c.Host(ctx, netip.MustParseAddr(tt.ip), tt.host)
		if err != nil || d.Found != tt.found || d.Tier != "file" {
			t.Errorf("Host(%s, %s) = %+v, %v; want found %v", tt.ip, tt.host, d, err, tt.found)
		}
	}
}

func BenchmarkFileLookup(b *testing.B) {
	f, err := NewFile("testdata/recipients", "testdata/hosts", nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range []Key{
		{Kind: Recipient, Name: "carol@example.com", Candidates: RecipientCandidates("carol", "example.com", "+", true)},
		fileHostKey("10.1.7.7", "mx.good.example"),
	} {
		b.Run(k.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.Lookup(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
