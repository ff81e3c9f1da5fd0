package lookup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fileCheckInterval is how often a File looks at its files for changes.
const fileCheckInterval = time.Second

// maxFileLine bounds one line of a list; a longer line is skipped.
const maxFileLine = 4096

// File is the plain-text directory: a list of recipients and a list of
// malign hosts, each held in memory and re-read when the file changes.
//
// The recipients file holds one address or @domain (a catch-all) per line,
// normalised as NormalizeAddress does, so entries match whatever form a
// client uses. The hosts file holds one IP address, CIDR network, IPv4
// prefix in Postfix style (192.0.2, 192.0, 192) or hostname per line; a
// hostname also lists its subdomains, since HostCandidates asks for parent
// domains. Blank lines and comments (from a # at the start of a line or
// after a space) are ignored; a line that does not parse is logged with
// its file and line number and skipped.
//
// At most once a second a lookup starts a background check of the files'
// size, modification time and identity, and a changed file is re-read and
// swapped in as a whole; lookups never wait for it. A file that cannot be
// read later keeps its previous contents, with a warning. So does a file
// that changes while it is read (it is read again at the next check) and
// a list that had entries and is now empty: a file truncated or half
// written in place must not make every recipient unknown. An empty list
// is taken only when the File is made (daemon start, SIGHUP) or on Reload.
type File struct {
	log   *slog.Logger
	rcpt  *listFile
	hosts *listFile
	// stop ends the checks that FileOnChange starts, done says they
	// ended; both nil without.
	stop, done chan struct{}
	closeOnce  sync.Once
}

var _ Source = (*File)(nil)

// FileOption configures NewFile.
type FileOption func(*fileOptions)

type fileOptions struct {
	foldLocal bool
	interval  time.Duration
	onChange  func()
}

// FileCaseFold sets whether the local parts of listed recipients are
// lower-cased; it must agree with CheckerOptions.CaseFoldLocalPart, so
// that listed and looked-up addresses compare alike. The default is true,
// as in the config.
func FileCaseFold(on bool) FileOption {
	return func(o *fileOptions) { o.foldLocal = on }
}

// FileOnChange sets a function called after a changed list is swapped in
// (not after the first read), from the goroutine that read it: the daemon
// marks its LRU stale, so that a user just added is not refused for up to
// cache.negative_ttl. As a cache in front keeps lookups from reaching the
// File, it then also checks its files once a second by itself, until
// Close. A nil fn sets none.
func FileOnChange(fn func()) FileOption {
	return func(o *fileOptions) { o.onChange = fn }
}

// NewFile reads the lists. An empty path means nothing of that kind is
// listed. It fails when a file cannot be read; bad lines are only logged.
func NewFile(recipientsPath, hostsPath string, log *slog.Logger, opts ...FileOption) (*File, error) {
	o := fileOptions{foldLocal: true, interval: fileCheckInterval}
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &File{log: log}
	f.rcpt = &listFile{path: recipientsPath, kind: Recipient, log: log, interval: o.interval, onChange: o.onChange,
		parse: func(line string) (listEntry, error) { return parseRecipientLine(line, o.foldLocal) }}
	f.hosts = &listFile{path: hostsPath, kind: Host, log: log, interval: o.interval, onChange: o.onChange, parse: parseHostLine}
	for _, l := range []*listFile{f.rcpt, f.hosts} {
		if err := l.load(); err != nil {
			return nil, fmt.Errorf("new file source: %w", err)
		}
	}
	if o.onChange != nil {
		f.stop, f.done = make(chan struct{}), make(chan struct{})
		go f.watch(o.interval)
	}
	return f, nil
}

// watch checks the files every interval until Close.
func (f *File) watch(interval time.Duration) {
	defer close(f.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case now := <-t.C:
			f.rcpt.maybeReload(now)
			f.hosts.maybeReload(now)
		}
	}
}

// Close stops the checks that FileOnChange started and waits for one in
// progress; lookups still work.
func (f *File) Close() error {
	if f.stop != nil {
		f.closeOnce.Do(func() {
			close(f.stop)
			<-f.done
			for _, l := range []*listFile{f.rcpt, f.hosts} {
				for !l.busy.CompareAndSwap(false, true) {
					time.Sleep(time.Millisecond)
				}
				l.busy.Store(false)
			}
		})
	}
	return nil
}

// Lookup answers from the lists in memory: found when any candidate is
// listed, or, for a host, when its address is inside a listed network.
func (f *File) Lookup(ctx context.Context, key Key) (Answer, error) {
	if err := ctx.Err(); err != nil {
		return Answer{}, fmt.Errorf("file lookup %s: %w", key, err)
	}
	var l *listFile
	switch key.Kind {
	case Recipient:
		l = f.rcpt
	case Host:
		l = f.hosts
	default:
		return Answer{}, fmt.Errorf("file lookup %s: unknown kind %d", key, key.Kind)
	}
	now := time.Now()
	l.maybeReload(now)
	return Answer{Found: l.snap.Load().has(key), At: now, Tier: "file"}, nil
}

// Reload re-reads both files now if they changed, waiting for it. Unlike
// the background checks it takes a list that became empty. A file that
// cannot be read keeps its previous contents and its error is returned.
func (f *File) Reload() error {
	return errors.Join(f.rcpt.reload(), f.hosts.reload())
}

// Len returns how many recipients and hosts entries are loaded.
func (f *File) Len() (recipients, hosts int) {
	return f.rcpt.snap.Load().len(), f.hosts.snap.Load().len()
}

// listFile is one list and the state that decides when to re-read it.
type listFile struct {
	path     string
	kind     Kind
	log      *slog.Logger
	interval time.Duration
	parse    func(line string) (listEntry, error)
	onChange func() // nil: none

	snap atomic.Pointer[listSnapshot]
	// next is the earliest time (Unix nanoseconds) of the next change check.
	next atomic.Int64
	// busy is held by the one goroutine checking or reading the file; it
	// guards seen and failing.
	busy atomic.Bool
	seen os.FileInfo
	// failing is the last background check's error, "" when it worked.
	failing string
}

// listEntry is one parsed line: a key, or a network.
type listEntry struct {
	key    string
	prefix netip.Prefix
}

// listSnapshot is an immutable parsed list.
type listSnapshot struct {
	keys map[string]struct{}
	// nets holds the listed networks, and bits4 and bits6 the prefix
	// lengths present, longest first: a lookup masks the address once per
	// length instead of scanning every network.
	nets         map[netip.Prefix]struct{}
	bits4, bits6 []int
}

func (s *listSnapshot) len() int { return len(s.keys) + len(s.nets) }

func (s *listSnapshot) has(key Key) bool {
	for _, c := range key.Expand() {
		if _, ok := s.keys[c]; ok {
			return true
		}
	}
	if key.Kind != Host || len(s.nets) == 0 {
		return false
	}
	ip := key.Name
	if i := strings.IndexByte(ip, ' '); i >= 0 {
		ip = ip[:i]
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	bits := s.bits6
	if a.Is4() {
		bits = s.bits4
	}
	for _, b := range bits {
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if _, ok := s.nets[p]; ok {
			return true
		}
	}
	return false
}

// maybeReload starts a background re-read when the interval has passed and
// no other check is running; the caller goes on with the current snapshot.
func (l *listFile) maybeReload(now time.Time) {
	if l.path == "" || now.UnixNano() < l.next.Load() {
		return
	}
	if !l.busy.CompareAndSwap(false, true) {
		return
	}
	l.next.Store(now.Add(l.interval).UnixNano())
	go func() {
		defer l.busy.Store(false)
		err := l.reloadLocked(false)
		// Warn once when the file stops being readable, not once a second
		// while it stays missing; a failure that changes on the way (a
		// file removed between stat and open) is only worth a debug line.
		switch {
		case err != nil && l.failing == "":
			l.failing = err.Error()
			l.log.Warn("keeping the previous list", "path", l.path, "err", err)
		case err != nil && err.Error() != l.failing:
			l.failing = err.Error()
			l.log.Debug("list still unreadable", "path", l.path, "err", err)
		case err == nil && l.failing != "":
			l.failing = ""
			l.log.Info("list readable again", "path", l.path)
		}
	}()
}

// reload re-reads the file if it changed, waiting for a running check.
func (l *listFile) reload() error {
	if l.path == "" {
		return nil
	}
	for !l.busy.CompareAndSwap(false, true) {
		time.Sleep(time.Millisecond)
	}
	defer l.busy.Store(false)
	return l.reloadLocked(true)
}

// reloadLocked reads the file when its identity, size or time changed,
// and calls onChange when it swapped a new list in. takeEmpty: see read.
// The caller holds busy.
func (l *listFile) reloadLocked(takeEmpty bool) error {
	fi, err := os.Stat(l.path)
	if err != nil {
		return fmt.Errorf("stat %s list: %w", l.kind, err)
	}
	if l.seen != nil && sameVersion(l.seen, fi) {
		return nil
	}
	if err := l.read(fi, takeEmpty); err != nil {
		return err
	}
	if l.onChange != nil {
		l.onChange()
	}
	return nil
}

// sameVersion: a and b describe the same file with the same size and
// modification time.
func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// load reads the file the first time; an empty path lists nothing.
func (l *listFile) load() error {
	if l.path == "" {
		l.snap.Store(&listSnapshot{})
		return nil
	}
	fi, err := os.Stat(l.path)
	if err != nil {
		return fmt.Errorf("stat %s list: %w", l.kind, err)
	}
	return l.read(fi, true)
}

// Attempts at reading a file that keeps changing while it is read, and
// the pause between them.
const (
	fileReadAttempts = 3
	fileReadPause    = 20 * time.Millisecond
)

// read parses the file and swaps the new snapshot in. fi was taken before
// reading; the file is looked at again after reading, and when it changed
// meanwhile (a write in progress) it is read again, up to
// fileReadAttempts times, then left for the next check. Unless takeEmpty,
// a list that had entries and now has none is not swapped in (a file
// truncated, or rewritten in place, as it was read) and is an error.
func (l *listFile) read(fi os.FileInfo, takeEmpty bool) error {
	var data []byte
	for attempt := 1; ; attempt++ {
		var err error
		data, err = os.ReadFile(l.path)
		if err != nil {
			return fmt.Errorf("read %s list: %w", l.kind, err)
		}
		after, err := os.Stat(l.path)
		if err != nil {
			return fmt.Errorf("stat %s list: %w", l.kind, err)
		}
		if sameVersion(fi, after) && int64(len(data)) == after.Size() {
			break
		}
		if attempt == fileReadAttempts {
			return fmt.Errorf("read %s list: the file kept changing while it was read (%d attempts)", l.kind, attempt)
		}
		fi = after
		time.Sleep(fileReadPause)
	}
	s := &listSnapshot{keys: map[string]struct{}{}, nets: map[netip.Prefix]struct{}{}}
	bad := 0
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		text := listLine(line)
		if text == "" {
			continue
		}
		var e listEntry
		var err error
		if len(text) > maxFileLine {
			err = fmt.Errorf("line longer than %d bytes", maxFileLine)
		} else {
			e, err = l.parse(text)
		}
		if err != nil {
			bad++
			l.log.Warn("skipping a bad line", "at", l.path+":"+strconv.Itoa(n), "err", err)
			continue
		}
		if e.prefix.IsValid() {
			s.nets[e.prefix] = struct{}{}
		} else {
			s.keys[e.key] = struct{}{}
		}
	}
	for p := range s.nets {
		if p.Addr().Is4() {
			s.bits4 = append(s.bits4, p.Bits())
		} else {
			s.bits6 = append(s.bits6, p.Bits())
		}
	}
	for _, b := range []*[]int{&s.bits4, &s.bits6} {
		slices.Sort(*b)
		slices.Reverse(*b)
		*b = slices.Compact(*b)
	}
	if old := l.snap.Load(); !takeEmpty && s.len() == 0 && old != nil && old.len() > 0 {
		// Not marked seen: read again at every check until it has
		// entries again or a reload takes it.
		return fmt.Errorf("%s list is empty now: keeping its %d entries until a reload (SIGHUP) or restart", l.kind, old.len())
	}
	l.snap.Store(s)
	l.seen = fi
	l.log.Info("loaded list", "kind", l.kind.String(), "path", l.path, "entries", s.len(), "bad_lines", bad)
	return nil
}

// listLine trims a line and cuts a comment: a # at its start or after
// white space, outside quotes (a # inside a local part is allowed).
func listLine(b []byte) string {
	b = bytes.TrimSpace(b)
	quoted := false
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case '#':
			if !quoted && (i == 0 || b[i-1] == ' ' || b[i-1] == '\t') {
				b = bytes.TrimSpace(b[:i])
			}
		}
	}
	return string(b)
}

// parseRecipientLine reads an address or @domain.
func parseRecipientLine(line string, foldLocal bool) (listEntry, error) {
	if strings.HasPrefix(line, "@") && !strings.Contains(line, ":") {
		d, err := NormalizeDomain(line[1:])
		if err != nil {
			return listEntry{}, err
		}
		return listEntry{key: "@" + d}, nil
	}
	local, domain, err := NormalizeAddress(line, foldLocal)
	if err != nil {
		return listEntry{}, err
	}
	return listEntry{key: local + "@" + domain}, nil
}

// parseHostLine reads an IP address, a CIDR network, an IPv4 prefix in
// Postfix style or a hostname, in the forms HostCandidates produces.
func parseHostLine(line string) (listEntry, error) {
	if strings.Contains(line, "/") {
		p, err := netip.ParsePrefix(line)
		if err != nil {
			return listEntry{}, fmt.Errorf("bad network: %w", err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return listEntry{prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(line); err == nil {
		if a.Zone() != "" {
			return listEntry{}, errors.New("an address with a zone cannot be listed")
		}
		return listEntry{key: a.Unmap().String()}, nil
	}
	if p, ok := ipv4Partial(line); ok {
		return listEntry{key: p}, nil
	}
	h := NormalizeHostname(line)
	if h == "" {
		return listEntry{}, fmt.Errorf("%q is not an IP address, network or hostname", line)
	}
	if !strings.Contains(h, ".") {
		// Parent domains stop at two labels, so a top-level name would
		// never match; say so rather than list it in vain.
		return listEntry{}, fmt.Errorf("%q has a single label and would never match", line)
	}
	return listEntry{key: h}, nil
}

// ipv4Partial reads 192, 192.0 or 192.0.2 (Postfix's access(5) network
// forms) and returns it canonically, without leading zeros.
func ipv4Partial(s string) (string, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 3 {
		return "", false
	}
	for i, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return "", false
		}
		n, _ := strconv.Atoi(p)
		if n > 255 {
			return "", false
		}
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, "."), true
}
