package lookup

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/antespam/antespam-milter/metrics"
)

// LDAPOptions configure an LDAP source. They mirror [ldap] in the
// configuration; zero values take the defaults noted.
type LDAPOptions struct {
	// URLs are tried in order (ldap://, ldaps:// or ldapi://); a
	// connection stays on the URL it reached until it breaks.
	URLs []string
	// StartTLS upgrades ldap:// connections; a failed upgrade fails the
	// connection, it never falls back to plain text.
	StartTLS bool
	// TLSCAFile holds the PEM CA certificates trusted for ldaps:// and
	// StartTLS; empty means the system roots. Certificates are always
	// verified.
	TLSCAFile string
	// BindDN and BindPassword: a simple bind on every new connection;
	// empty BindDN means anonymous. The password is never logged.
	BindDN       string
	BindPassword string
	BaseDN       string
	// RecipientFilter and HostFilter are filter templates: %s is the
	// whole candidate, %u its local part and %d its domain (a recipient
	// only; a candidate without one is not queried), %% a percent sign.
	// Every substitution is escaped per RFC 4515.
	RecipientFilter string
	HostFilter      string
	// Timeout bounds a dial (TCP, TLS, bind) and each request; default 2s.
	Timeout time.Duration
	// Connections is the pool size; default 4.
	Connections int
	// MaxInFlight caps the requests outstanding on one connection
	// (slapd drops an anonymous connection past 100); default 64.
	MaxInFlight int
}

// LDAP is the directory Source backed by LDAP servers. A key is found when
// one search, the candidates' filters OR-ed together, matches an entry.
//
// It keeps a small pool of connections, each shared by concurrent lookups
// (go-ldap multiplexes requests by message ID), fills them in order up to
// MaxInFlight requests each, and dials lazily. A connection that fails or
// times out is closed and redialled on its next use, trying the URLs in
// order with a short backoff; a lookup that met an already broken
// connection is retried once on a fresh one. A server that stops answering
// gives an error within Timeout (a dial tries each URL for up to Timeout,
// so a lookup that waits for a dial may take one Timeout per dead URL,
// within its ctx), never a miss.
type LDAP struct {
	opts      LDAPOptions
	log       *slog.Logger
	urls      []*ldapURL
	slots     []*ldapSlot
	next      atomic.Uint32
	closed    atomic.Bool
	timeLimit int // seconds, sent to the server
}

var _ Source = (*LDAP)(nil)

// errLDAPClosed is returned by lookups after Close.
var errLDAPClosed = errors.New("ldap source closed")

// ldapURL is one configured server and whether it failed lately.
type ldapURL struct {
	raw     string // as configured, for logs and errors
	scheme  string
	network string
	addr    string
	tls     *tls.Config // nil for plain ldap:// without StartTLS

	mu        sync.Mutex
	downUntil time.Time
	failures  int
}

// ldapSlot is one pooled connection.
type ldapSlot struct {
	sem chan struct{} // one token per request in flight

	mu       sync.Mutex
	conn     *ldap.Conn
	url      *ldapURL
	dialing  chan struct{} // closed when the dial in progress ends
	retryAt  time.Time     // no dial before, after a failed one
	lastErr  error
	failures int
}

// NewLDAP checks opts and returns an LDAP source. It dials one connection
// at once: a refusal that only a configuration change fixes (invalid
// credentials, inappropriate authentication, confidentiality required,
// insufficient access rights, or StartTLS refused while no other URL
// answered) is an error here. Anything else (a busy, unavailable or
// unwilling server, an unreachable one, a certificate that fails
// verification) is only logged: lookups fail with that error until a
// server answers.
func NewLDAP(opts LDAPOptions, log *slog.Logger) (*LDAP, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Connections <= 0 {
		opts.Connections = 4
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 64
	}
	if err := validateLDAPOptions(opts); err != nil {
		return nil, err
	}
	tlsBase := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLSCAFile != "" {
		pool, err := loadCAFile(opts.TLSCAFile)
		if err != nil {
			return nil, err
		}
		tlsBase.RootCAs = pool
	}
	l := &LDAP{opts: opts, log: log, timeLimit: int((opts.Timeout + time.Second - 1) / time.Second)}
	for _, raw := range opts.URLs {
		u, err := parseLDAPURL(raw, opts.StartTLS, tlsBase)
		if err != nil {
			return nil, err
		}
		l.urls = append(l.urls, u)
	}
	for range opts.Connections {
		l.slots = append(l.slots, &ldapSlot{sem: make(chan struct{}, opts.MaxInFlight)})
	}
	// Dial the first connection now, so that a refused bind is a
	// configuration error rather than a stream of failed lookups.
	s := l.slots[0]
	done := make(chan struct{})
	s.mu.Lock()
	s.dialing = done
	s.mu.Unlock()
	l.dialSlot(s, done)
	s.mu.Lock()
	err := s.lastErr
	s.mu.Unlock()
	if isConfigError(err) {
		l.Close()
		return nil, err
	}
	if err != nil {
		// Busy, unavailable, unreachable or an unverified certificate:
		// it may pass, and a daemon that exits would not be restarted.
		l.log.Warn("no ldap server usable at start; lookups fail until one is", "err", err)
	}
	return l, nil
}

// errStartTLSRefused marks a server's refusal of StartTLS.
var errStartTLSRefused = errors.New("refused")

// configErrorCodes are the result codes that a configuration change must
// fix (credentials, authentication method, TLS, access rights), as
// opposed to a busy or unavailable server.
var configErrorCodes = map[uint16]bool{
	ldap.LDAPResultInvalidCredentials:          true,
	ldap.LDAPResultInappropriateAuthentication: true,
	ldap.LDAPResultConfidentialityRequired:     true,
	ldap.LDAPResultInsufficientAccessRights:    true,
}

// isConfigError reports whether err, a dial's failure (one error per URL
// tried), includes one that only a configuration change fixes.
func isConfigError(err error) bool {
	if errs, ok := err.(joinedErrors); ok {
		for _, e := range errs {
			if isConfigError(e) {
				return true
			}
		}
		return false
	}
	var le *ldap.Error
	return errors.Is(err, errStartTLSRefused) || (errors.As(err, &le) && configErrorCodes[le.ResultCode])
}

func parseLDAPURL(raw string, startTLS bool, base *tls.Config) (*ldapURL, error) {
	if rest, ok := strings.CutPrefix(raw, "ldapi://"); ok {
		// The socket path is percent-encoded in the host part, which
		// url.Parse refuses.
		host, _, _ := strings.Cut(rest, "/")
		path, err := url.PathUnescape(host)
		if err != nil {
			return nil, fmt.Errorf("ldap URL %q: %w", raw, err)
		}
		if path == "" {
			path = "/var/run/slapd/ldapi"
		}
		return &ldapURL{raw: raw, scheme: "ldapi", network: "unix", addr: path}, nil
	}
	p, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("ldap URL %q: %w", raw, err)
	}
	u := &ldapURL{raw: raw, scheme: p.Scheme, network: "tcp"}
	switch p.Scheme {
	case "ldap", "ldaps":
		port := p.Port()
		if port == "" {
			port = "389"
			if p.Scheme == "ldaps" {
				port = "636"
			}
		}
		if p.Hostname() == "" {
			return nil, fmt.Errorf("ldap URL %q: no host", raw)
		}
		if strings.Contains(p.Hostname(), ":") && !strings.HasPrefix(p.Host, "[") {
			return nil, fmt.Errorf("ldap URL %q: host:port is malformed (an IPv6 address goes in brackets)", raw)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, fmt.Errorf("ldap URL %q: port %q is not a number", raw, port)
		}
		u.addr = net.JoinHostPort(p.Hostname(), port)
		if p.Scheme == "ldaps" || startTLS {
			u.tls = base.Clone()
			u.tls.ServerName = p.Hostname()
		}
	default:
		return nil, fmt.Errorf("ldap URL %q: scheme is not ldap, ldaps or ldapi", raw)
	}
	return u, nil
}

// Lookup searches once for all of key's candidates.
func (l *LDAP) Lookup(ctx context.Context, key Key) (Answer, error) {
	var tmpl string
	switch key.Kind {
	case Recipient:
		tmpl = l.opts.RecipientFilter
	case Host:
		tmpl = l.opts.HostFilter
	}
	if tmpl == "" {
		return Answer{}, fmt.Errorf("ldap lookup %s: no filter configured for %s keys", key, key.Kind)
	}
	filter, ok := buildFilter(tmpl, key)
	if !ok {
		// Every candidate needed a %u or %d it does not have.
		return Answer{Found: false, At: time.Now(), Tier: "ldap"}, nil
	}
	start := time.Now()
	found, err := l.search(ctx, l.opts.BaseDN, ldap.ScopeWholeSubtree, filter)
	metrics.DirectoryLatency.WithLabelValues("ldap").Observe(time.Since(start).Seconds())
	if err != nil {
		metrics.DirectoryErrors.WithLabelValues("ldap").Inc()
		metrics.DirectoryUp.Set(0)
		return Answer{}, err
	}
	metrics.DirectoryUp.Set(1)
	return Answer{Found: found, At: time.Now(), Tier: "ldap"}, nil
}

// Ping checks that a server answers and the base DN exists, for /healthz.
func (l *LDAP) Ping(ctx context.Context) error {
	found, err := l.search(ctx, l.opts.BaseDN, ldap.ScopeBaseObject, "(objectClass=*)")
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("ldap ping: base DN %q not found", l.opts.BaseDN)
	}
	return nil
}

// Close closes every connection; lookups fail afterwards.
func (l *LDAP) Close() error {
	l.closed.Store(true)
	for _, s := range l.slots {
		s.mu.Lock()
		c := s.conn
		s.conn = nil
		s.mu.Unlock()
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// buildFilter ORs the expansion of tmpl for every candidate of key, or
// reports false when no candidate gives a filter.
func buildFilter(tmpl string, key Key) (string, bool) {
	var parts []string
	cands := key.Expand()
	seen := make(map[string]bool, len(cands))
	for _, c := range cands {
		f, ok := expandFilter(tmpl, c, key.Kind)
		if !ok || seen[f] {
			continue
		}
		seen[f] = true
		parts = append(parts, f)
	}
	switch len(parts) {
	case 0:
		return "", false
	case 1:
		return parts[0], true
	}
	return "(|" + strings.Join(parts, "") + ")", true
}

// expandFilter substitutes candidate into tmpl, like Postfix's
// ldap_table(5): %s the candidate, %u its local part, %d its domain, each
// escaped. For a recipient "@domain" %u is empty; for a host both are.
// It reports false when tmpl needs an empty %u or %d, or when candidate
// holds a NUL byte: that candidate cannot match and is not queried. (slapd
// cuts an IA5 assertion value at an escaped NUL, so "a@b\x00junk" would
// match a@b.)
func expandFilter(tmpl, candidate string, kind Kind) (string, bool) {
	if strings.IndexByte(candidate, 0) >= 0 {
		return "", false
	}
	var local, domain string
	if kind == Recipient {
		local = candidate
		if i := strings.LastIndexByte(candidate, '@'); i >= 0 {
			local, domain = candidate[:i], candidate[i+1:]
		}
	}
	var b strings.Builder
	b.Grow(len(tmpl) + 2*len(candidate))
	for i := 0; i < len(tmpl); i++ {
		c := tmpl[i]
		if c != '%' || i+1 == len(tmpl) {
			b.WriteByte(c)
			continue
		}
		i++
		switch tmpl[i] {
		case 's':
			b.WriteString(ldap.EscapeFilter(candidate))
		case 'u':
			if local == "" {
				return "", false
			}
			b.WriteString(ldap.EscapeFilter(local))
		case 'd':
			if domain == "" {
				return "", false
			}
			b.WriteString(ldap.EscapeFilter(domain))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(tmpl[i])
		}
	}
	return b.String(), true
}

// search reports whether filter matches at least one entry under base.
func (l *LDAP) search(ctx context.Context, base string, scope int, filter string) (bool, error) {
	req := ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 1, l.timeLimit, false, filter, []string{"1.1"}, nil)
	for attempt := 0; ; attempt++ {
		if l.closed.Load() {
			return false, errLDAPClosed
		}
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("ldap search: %w", err)
		}
		s, err := l.acquire(ctx)
		if err != nil {
			return false, fmt.Errorf("ldap search: wait for a connection: %w", err)
		}
		c, u, err := l.conn(ctx, s)
		if err != nil {
			<-s.sem
			return false, err
		}
		found, err := searchOn(ctx, s, c, req, l.opts.Timeout)
		if err == nil {
			return found, nil
		}
		if ctx.Err() != nil || !isConnError(err) {
			return false, fmt.Errorf("ldap search %s: %w", u.raw, err)
		}
		l.drop(s, c, u, err)
		// A connection the server closed while idle (a restart) is worth
		// one more try on a fresh one; a timeout is not: the caller is
		// owed an answer within Timeout.
		if attempt > 0 || isTimeout(err) {
			return false, fmt.Errorf("ldap search %s: %w", u.raw, err)
		}
	}
}

// searchOn runs req on c and gives back s's token when the request ends,
// which may be after ctx is done: the token counts what the server holds.
// c's own request timeout (SetTimeout) bounds every Search by timeout, so
// when ctx has more time left than that (as the coalescing tier's always
// has) Search runs in this goroutine: a cancellation of ctx before its
// deadline (only the daemon's exit does that) then waits for the request
// to end, at most timeout. Otherwise Search runs in a goroutine, so that
// the caller returns at ctx's end, rather than SearchAsync(ctx) because
// SearchAsync ends without an error both on cancellation and on a closing
// connection, which would read as "not found".
func searchOn(ctx context.Context, s *ldapSlot, c *ldap.Conn, req *ldap.SearchRequest, timeout time.Duration) (bool, error) {
	// Deadline first: Done may make a timer (the decision's lazy context).
	if d, ok := ctx.Deadline(); ok && time.Until(d) > timeout+time.Second || !ok && ctx.Done() == nil {
		defer func() { <-s.sem }()
		return searchResult(c.Search(req))
	}
	type result struct {
		found bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-s.sem }()
		found, err := searchResult(c.Search(req))
		done <- result{found, err}
	}()
	select {
	case r := <-done:
		return r.found, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// searchResult: any entry means found, whatever followed it (slapd ends a
// search that matched more than SizeLimit with sizeLimitExceeded). No
// entry but a referral is "don't know", not a miss: the entry may live on
// the server referred to, which is not followed.
func searchResult(r *ldap.SearchResult, err error) (bool, error) {
	if r != nil && len(r.Entries) > 0 {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if r != nil && len(r.Referrals) > 0 {
		return false, fmt.Errorf("no entry, but a referral to %s (referrals are not followed)", strings.Join(r.Referrals, ", "))
	}
	return false, nil
}

// isConnError reports whether err means the connection is unusable rather
// than that the server answered with an LDAP result code.
func isConnError(err error) bool {
	var le *ldap.Error
	if errors.As(err, &le) {
		return le.ResultCode == ldap.ErrorNetwork || le.ResultCode == ldap.ErrorUnexpectedMessage || le.ResultCode == ldap.ErrorUnexpectedResponse
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func isTimeout(err error) bool {
	var ne net.Error
	return strings.Contains(err.Error(), "timed out") || (errors.As(err, &ne) && ne.Timeout())
}

// acquire takes a request token on a slot: the first usable one with room,
// so that light load shares one connection; when all usable ones are full
// it waits on one of them chosen round-robin (a slot in dial backoff would
// only fail the request). When none is usable it takes any slot, to fail
// at once with the dial error.
func (l *LDAP) acquire(ctx context.Context) (*ldapSlot, error) {
	now := time.Now()
	full := 0 // usable slots without room
	for _, s := range l.slots {
		if !s.usable(now) {
			continue
		}
		select {
		case s.sem <- struct{}{}:
			return s, nil
		default:
		}
		full++
	}
	turn := l.next.Add(1) - 1
	s := l.slots[turn%uint32(len(l.slots))]
	if full > 0 {
		// The next usable slot in turn (if one became unusable meanwhile,
		// the plain round-robin choice stands).
		k := turn % uint32(full)
		for _, c := range l.slots {
			if c.usable(now) {
				if k == 0 {
					s = c
					break
				}
				k--
			}
		}
	}
	select {
	case s.sem <- struct{}{}:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// usable: the slot has a connection or may dial one now.
func (s *ldapSlot) usable(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil || !now.Before(s.retryAt)
}

// conn returns s's connection, dialling one (in the background, shared
// with other callers) when there is none and the backoff allows.
func (l *LDAP) conn(ctx context.Context, s *ldapSlot) (*ldap.Conn, *ldapURL, error) {
	for {
		s.mu.Lock()
		if s.conn != nil && !s.conn.IsClosing() {
			c, u := s.conn, s.url
			s.mu.Unlock()
			return c, u, nil
		}
		if s.conn != nil {
			// The server closed it (go-ldap's reader saw EOF).
			old, u := s.conn, s.url
			s.conn = nil
			s.mu.Unlock()
			l.log.Warn("ldap connection closed by the server", "url", u.raw)
			go old.Close()
			continue
		}
		if s.dialing == nil {
			if wait := time.Until(s.retryAt); wait > 0 {
				err := s.lastErr
				s.mu.Unlock()
				return nil, nil, fmt.Errorf("ldap: no connection (next attempt in %s): %w", wait.Round(time.Millisecond), err)
			}
			s.dialing = make(chan struct{})
			go l.dialSlot(s, s.dialing)
		}
		ch := s.dialing
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("ldap: wait for a connection: %w", ctx.Err())
		}
	}
}

// dialSlot dials for s and records the outcome; it runs detached from any
// one lookup so that a cancelled caller does not waste the dial.
func (l *LDAP) dialSlot(s *ldapSlot, done chan struct{}) {
	c, u, err := l.dialAny()
	s.mu.Lock()
	// Close sets closed before it takes each slot's lock: checked here,
	// under the lock, no connection outlives Close.
	var late *ldap.Conn
	if err == nil && l.closed.Load() {
		late, c, err = c, nil, errLDAPClosed
	}
	if err != nil {
		s.failures++
		s.retryAt = time.Now().Add(backoff(s.failures, 100*time.Millisecond, 2*time.Second))
		s.lastErr = err
	} else {
		s.conn, s.url = c, u
		s.failures, s.retryAt, s.lastErr = 0, time.Time{}, nil
	}
	s.dialing = nil
	s.mu.Unlock()
	close(done)
	if late != nil {
		late.Close()
	}
}

func backoff(failures int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// dialAny tries the URLs in order, those that failed lately last.
func (l *LDAP) dialAny() (*ldap.Conn, *ldapURL, error) {
	now := time.Now()
	order := make([]*ldapURL, 0, len(l.urls))
	var down []*ldapURL
	for _, u := range l.urls {
		if u.isDown(now) {
			down = append(down, u)
		} else {
			order = append(order, u)
		}
	}
	order = append(order, down...)
	var errs joinedErrors
	for _, u := range order {
		c, err := l.dial(u)
		if err == nil {
			if u.up() > 0 {
				l.log.Info("ldap server answers again", "url", u.raw)
			}
			return c, u, nil
		}
		// Warn once per outage of a URL; the retries go to debug.
		if u.markDown() == 1 {
			l.log.Warn("ldap connect failed", "url", u.raw, "err", err)
		} else {
			l.log.Debug("ldap connect failed again", "url", u.raw, "err", err)
		}
		errs = append(errs, err)
		var le *ldap.Error
		if errors.As(err, &le) && configErrorCodes[le.ResultCode] {
			// The server refused the credentials or the access: another
			// replica would say the same. A busy or unwilling server, or
			// one refusing StartTLS, is worth trying the next URL for.
			return nil, nil, err
		}
	}
	return nil, nil, errs
}

// dial connects to u, upgrades to TLS when configured, and binds (or asks
// "who am I?" when anonymous, to prove the server answers), all within
// Timeout.
func (l *LDAP) dial(u *ldapURL) (*ldap.Conn, error) {
	timeout := l.opts.Timeout
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, u.network, u.addr)
	if err != nil {
		return nil, fmt.Errorf("ldap dial %s: %w", u.raw, err)
	}
	// Reads are bounded until the connection is proven; go-ldap bounds
	// each request after that, but its writes never: bound them here.
	_ = raw.SetReadDeadline(deadline)
	var nc net.Conn = &writeDeadlineConn{Conn: raw, timeout: timeout}
	if u.scheme == "ldaps" {
		tc := tls.Client(nc, u.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("ldap TLS handshake with %s: %w", u.raw, err)
		}
		nc = tc
	}
	c := ldap.NewConn(nc, u.scheme == "ldaps")
	c.Start()
	c.SetTimeout(timeout)
	if u.scheme == "ldap" && u.tls != nil {
		if err := c.StartTLS(u.tls); err != nil {
			c.Close()
			var le *ldap.Error
			if errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork {
				// The server answered no: never go on in plain text.
				return nil, fmt.Errorf("ldap StartTLS with %s: %w: %w", u.raw, errStartTLSRefused, err)
			}
			return nil, fmt.Errorf("ldap StartTLS with %s: %w", u.raw, err)
		}
	}
	if l.opts.BindDN != "" {
		if err := c.Bind(l.opts.BindDN, l.opts.BindPassword); err != nil {
			c.Close()
			return nil, fmt.Errorf("ldap bind as %q to %s: %w", l.opts.BindDN, u.raw, err)
		}
	} else if _, err := c.WhoAmI(nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("ldap probe (who am I) of %s: %w", u.raw, err)
	}
	_ = raw.SetReadDeadline(time.Time{})
	return c, nil
}

// drop closes c after err, unless s already moved on, and marks u down so
// the next dial tries the other URLs first.
func (l *LDAP) drop(s *ldapSlot, c *ldap.Conn, u *ldapURL, err error) {
	s.mu.Lock()
	mine := s.conn == c
	if mine {
		s.conn = nil
	}
	s.mu.Unlock()
	if !mine {
		return
	}
	l.log.Warn("ldap connection dropped", "url", u.raw, "err", err)
	if isTimeout(err) {
		u.markDown()
	}
	// Close may wait for go-ldap's goroutines; the lookup need not.
	go c.Close()
}

func (u *ldapURL) isDown(now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return now.Before(u.downUntil)
}

// markDown records a failure of u and returns how many in a row.
func (u *ldapURL) markDown() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.failures++
	u.downUntil = time.Now().Add(backoff(u.failures, time.Second, 30*time.Second))
	return u.failures
}

// up records a success of u and returns the failures it ends.
func (u *ldapURL) up() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := u.failures
	u.failures, u.downUntil = 0, time.Time{}
	return n
}

// writeDeadlineConn bounds every write: go-ldap writes without a deadline,
// and a write to a server that stopped reading would block its request
// loop, and with it every request on the connection.
type writeDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *writeDeadlineConn) Write(b []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(b)
}

// joinedErrors is the failure of every URL, on one line.
type joinedErrors []error

func (e joinedErrors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e joinedErrors) Unwrap() []error { return e }
