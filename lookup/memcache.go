package lookup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/antespam/antespam-milter/metrics"
)

// Defaults for the zero fields of MemcacheOptions.
const (
	DefaultMemcacheKeyPrefix    = "antespam:1:"
	DefaultMemcacheTimeout      = 100 * time.Millisecond
	DefaultMemcacheMaxIdleConns = 64
	DefaultMemcacheLockTimeout  = 2 * time.Second
	DefaultMemcacheLockTTL      = 5 * time.Second
	DefaultMemcachePoll         = 5 * time.Millisecond
	DefaultMemcacheBackoff      = time.Second
)

// memcachedMaxKey is the longest key memcached accepts.
const memcachedMaxKey = 250

// memcacheFormat is the version of the key layout and value format,
// written into every key after KeyPrefix: a daemon of another format reads
// and writes other keys, so a rolling upgrade never misreads old values,
// whatever key_prefix says. Change it with either.
const memcacheFormat = "v1"

// maxAnswerSkew is how far ahead of this daemon's clock a cached answer's
// time may be. Another daemon's clock may run a little ahead; an answer
// from further in the future would stay fresh (and a not-found one go on
// rejecting) until memcached dropped it, so it is garbage: a miss.
const maxAnswerSkew = time.Minute

// memcachedMaxRelative is the longest expiration memcached takes as
// relative seconds; anything longer is read as a Unix time.
const memcachedMaxRelative = 30 * 24 * time.Hour

// MemcacheOptions configure the shared memcached tier ([memcache] in the
// config, plus cache.stale_max).
type MemcacheOptions struct {
	// KeyPrefix starts every key, so that unrelated fleets or
	// deployments can share memcached servers. Default "antespam:1:". The
	// format version that keeps a rolling upgrade from misreading old
	// values follows it in code (memcacheFormat).
	KeyPrefix string
	// TTL is how long a found answer is fresh, NegativeTTL a not-found one,
	// both counted from when the directory gave it.
	TTL         time.Duration
	NegativeTTL time.Duration
	// StaleMax is how long a found item lives in memcached and may be
	// served when the next tier fails.
	StaleMax time.Duration
	// Timeout bounds each memcached dial, read and write (default 100ms).
	Timeout time.Duration
	// MaxIdleConns is kept per server; set it near the expected number of
	// concurrent lookups (default 64; the library's own default is 2). It
	// also caps the memcached requests in flight: the library opens a new
	// connection whenever none is idle, without limit, and memcached
	// refuses connections past its own limit (1024 by default).
	MaxIdleConns int
	// LockTimeout bounds how long a lookup waits for another daemon that
	// holds the key's lock to publish its answer (default 2s).
	LockTimeout time.Duration
	// LockTTL is how long a lock outlives a daemon that died holding it
	// (default 5s; rounded up to whole seconds).
	LockTTL time.Duration
	// PollInterval is how often a waiting lookup looks for the answer
	// (default 5ms).
	PollInterval time.Duration
	// Backoff is how long memcached is left alone after a failure, so a
	// down or frozen server costs one Timeout a Backoff rather than one a
	// lookup (default 1s; negative: never back off).
	Backoff time.Duration
	// FillTimeout bounds a fill (lock, directory, publish) shared by the
	// concurrent lookups of one key in this process (Coalesce.Timeout);
	// 0 means DefaultCoalesceTimeout.
	FillTimeout time.Duration
	// Now is the clock for answer ages; nil means time.Now.
	Now func() time.Time
}

// Memcache is the tier shared by a fleet of daemons through memcached.
//
// Keys are KeyPrefix + format version + ":" + kind + ":" + Key.Scope + ":"
// + name, as in "antespam:1:v1:rcpt:1a2b3c4d:alice@example.com": the
// scope keeps daemons with other recipient rules or another directory from
// reading each other's answers. A name that would make the key longer than
// 250 bytes, that holds a byte memcached refuses (space, control
// characters, DEL) or any non-ASCII byte (UTF-8 addresses), or that starts
// with "h:" is replaced by "h:" and the hex SHA-256 of the name, so every
// input makes a safe key and none can inject a command.
//
// Values are "1 <unix-ms>" (found) or "0 <unix-ms>" (not found): the
// answer and when the directory gave it (a time more than a minute ahead
// of this daemon's clock is garbage). A found item lives in memcached for
// StaleMax so it can bridge a directory outage; a not-found one only for
// NegativeTTL.
//
// Any memcached failure (down, timeout, a value it cannot parse) is a miss
// plus a rate-limited warning and a metrics.MemcacheErrors count, never a
// failed lookup.
//
// Reads of concurrent lookups are sent together, as one request of up to
// 64 keys, while other reads are in flight (see memcache_batch.go); a lone
// read is sent at once. A failed batch counts as one error.
//
// A failing server is left alone for Backoff; with several servers only
// the keys that live on it (gomemcache picks a key's server by hash) skip
// memcached meanwhile, the others keep being served from theirs.
//
// Coalescing: in this process, concurrent lookups of a key that memcached
// lacks share one fill (a Coalesce around it), so a hit, by far the common
// case, pays nothing for coalescing, and the composition puts no separate
// Coalesce tier in front of Memcache. Fleet-wide, before asking the next
// tier, a fill takes a short lock on the key with memcached's add. The
// daemon that gets it asks and publishes the answer; the others poll for
// that answer for up to LockTimeout, then ask themselves.
type Memcache struct {
	next   Source
	client *memcache.Client
	opts   MemcacheOptions
	log    *slog.Logger
	warn   warnLimiter
	// servers picks a key's server, as the client does; downUntil holds,
	// by server address, until when (Unix nanoseconds) it is skipped
	// after a failure. The map is not written after NewMemcache.
	servers   *memcache.ServerList
	downUntil map[string]*atomic.Int64
	// anyDown is the latest downUntil of all: while it is past, up need
	// not pick the key's server (one load on a lookup's path).
	anyDown atomic.Int64
	// slots caps the requests in flight (MaxIdleConns).
	slots chan struct{}
	// batch sends concurrent gets as one request (memcache_batch.go).
	batch getBatcher
	// fills shares a fill between the concurrent lookups of a key.
	fills *Coalesce
}

// errBusy is a request that found every slot taken for a whole Timeout.
var errBusy = errors.New("memcache: every connection busy")

var _ Source = (*Memcache)(nil)

// NewMemcache returns the memcached tier in front of next, using the
// memcached servers ("host:port" or a unix socket path). It fails when a
// server name does not resolve; it does not connect. log may be nil.
func NewMemcache(next Source, servers []string, opts MemcacheOptions, log *slog.Logger) (*Memcache, error) {
	if len(servers) == 0 {
		return nil, errors.New("memcache: no servers")
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultMemcacheKeyPrefix
	}
	if !safeKeyPart(opts.KeyPrefix) || len(opts.KeyPrefix) > 100 {
		return nil, fmt.Errorf("memcache: key prefix %q: must be at most 100 printable ASCII bytes without spaces", opts.KeyPrefix)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultMemcacheTimeout
	}
	if opts.MaxIdleConns <= 0 {
		opts.MaxIdleConns = DefaultMemcacheMaxIdleConns
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultMemcacheLockTimeout
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = DefaultMemcacheLockTTL
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultMemcachePoll
	}
	if opts.Backoff == 0 {
		opts.Backoff = DefaultMemcacheBackoff
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// memcache.New drops SetServers' error, leaving a client on which
	// every call fails with ErrNoServers.
	var ss memcache.ServerList
	if err := ss.SetServers(servers...); err != nil {
		return nil, fmt.Errorf("memcache: servers %q: %w", servers, err)
	}
	c := memcache.NewFromSelector(&ss)
	c.Timeout = opts.Timeout
	c.MaxIdleConns = opts.MaxIdleConns
	m := &Memcache{next: next, client: c, opts: opts, log: log, slots: make(chan struct{}, opts.MaxIdleConns),
		servers: &ss, downUntil: map[string]*atomic.Int64{}}
	ss.Each(func(a net.Addr) error { //nolint:errcheck // f never fails
		m.downUntil[a.String()] = new(atomic.Int64)
		return nil
	})
	m.fills = NewCoalesce(memcacheFill{m}, log)
	m.fills.Timeout = opts.FillTimeout
	return m, nil
}

// memcacheFill is the Source that Memcache's Coalesce shares: the fill of
// a key that memcached lacks.
type memcacheFill struct{ m *Memcache }

func (f memcacheFill) Lookup(ctx context.Context, key Key) (Answer, error) {
	ik := f.m.itemKey(key)
	if !f.m.up(ik) {
		return f.m.next.Lookup(ctx, key)
	}
	return f.m.fill(ctx, key, ik)
}

// memcacheItem is a decoded value.
type memcacheItem struct {
	found bool
	at    time.Time
}

// Lookup serves key from memcached when fresh; otherwise it asks the next
// tier (once for the process and once for the fleet, see Memcache) and
// publishes the answer. When the next tier fails, a found item younger
// than StaleMax is served with Stale set.
func (m *Memcache) Lookup(ctx context.Context, key Key) (Answer, error) {
	ik := m.itemKey(key)
	if !m.up(ik) {
		return m.fills.Lookup(ctx, key)
	}
	item, cached := m.get(ik)
	if cached && m.fresh(item) {
		return Answer{Found: item.found, At: item.at, Tier: "memcache"}, nil
	}
	ans, err := m.fills.Lookup(ctx, key)
	if err != nil {
		if cached && item.found && m.opts.Now().Sub(item.at) < m.opts.StaleMax {
			metrics.StaleServed.Inc()
			m.log.Debug("memcache: serving stale answer", "key", key.String(), "at", item.at, "err", err)
			return Answer{Found: true, At: item.at, Tier: "memcache", Stale: true}, nil
		}
		return Answer{}, err
	}
	return ans, nil
}

// fill gets the answer for a key that memcached lacks or holds expired:
// from the daemon holding the key's lock, or from the next tier.
func (m *Memcache) fill(ctx context.Context, key Key, ik string) (Answer, error) {
	lk := m.lockKey(key)
	deadline := time.Now().Add(m.opts.LockTimeout)
	// Leave half of ctx's time to ask the directory ourselves if the
	// holder never answers. Through Lookup, ctx is the shared fill's
	// (Coalesce: at least FillTimeout, the decision_timeout, from when the
	// first asker started it); a caller that joined late may reach its own
	// deadline first and gets an error, never a made-up answer.
	if d, ok := ctx.Deadline(); ok {
		if half := time.Now().Add(time.Until(d) / 2); half.Before(deadline) {
			deadline = half
		}
	}
	wait := m.opts.PollInterval
	for {
		if !m.up(ik) || !m.up(lk) {
			return m.ask(ctx, key, ik, "")
		}
		err := m.call(func() error {
			return m.client.Add(&memcache.Item{Key: lk, Value: []byte("1"), Expiration: expiration(m.opts.LockTTL)})
		})
		switch {
		case err == nil:
			// Between our get and our add the previous holder may have
			// published and released: look once more before asking.
			if item, ok := m.get(ik); ok && m.fresh(item) {
				m.delete(lk)
				return Answer{Found: item.found, At: item.at, Tier: "memcache"}, nil
			}
			return m.ask(ctx, key, ik, lk)
		case errors.Is(err, errBusy):
			// This process is saturated: waiting for the holder (or the
			// deadline) adds less load than asking the directory too.
			m.fail("add", err, lk)
		case !errors.Is(err, memcache.ErrNotStored):
			m.fail("add", err, lk)
			return m.ask(ctx, key, ik, "")
		}
		// Another daemon is asking: poll for its answer and its lock in
		// one request, backing off so that a crowd of waiters does not
		// flood memcached. A released lock without a fresh answer means
		// the holder failed: try to take over.
		for locked := true; locked; {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return Answer{}, fmt.Errorf("memcache: waiting for the answer to %q: %w", key.String(), ctx.Err())
			case <-t.C:
			}
			wait = min(wait*3/2, 10*m.opts.PollInterval)
			var items map[string]*memcache.Item
			err := m.call(func() (err error) {
				items, err = m.client.GetMulti([]string{ik, lk})
				return err
			})
			if err != nil && !errors.Is(err, errBusy) {
				m.fail("get", err, ik, lk)
				return m.ask(ctx, key, ik, "")
			}
			if it := items[ik]; it != nil {
				if item, ok := m.decode(ik, it.Value); ok && m.fresh(item) {
					return Answer{Found: item.found, At: item.at, Tier: "memcache"}, nil
				}
			}
			if time.Now().After(deadline) {
				m.log.Debug("memcache: lock holder too slow, asking myself", "key", key.String())
				return m.ask(ctx, key, ik, "")
			}
			locked = err != nil || items[lk] != nil
		}
	}
}

// ask asks the next tier, publishes a fresh answer and releases the lock
// lk (if held).
func (m *Memcache) ask(ctx context.Context, key Key, ik, lk string) (Answer, error) {
	ans, err := m.next.Lookup(ctx, key)
	if err == nil && !ans.Stale {
		if ans.At.IsZero() {
			ans.At = m.opts.Now()
		}
		m.set(ik, ans)
	}
	if lk != "" {
		m.delete(lk)
	}
	return ans, err
}

// Purge deletes the items (and locks) of keys, so that the next lookup of
// each asks the directory: "antespam-milter cache purge". A key that is not
// there is not an error.
func (m *Memcache) Purge(ctx context.Context, keys ...Key) error {
	var errs []error
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memcache purge: %w", err)
		}
		for _, mk := range []string{m.itemKey(k), m.lockKey(k)} {
			if err := m.call(func() error { return m.client.Delete(mk) }); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
				errs = append(errs, fmt.Errorf("memcache delete %q: %w", k.String(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Ping checks that every memcached server answers, for health checks.
func (m *Memcache) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memcache ping: %w", err)
	}
	if err := m.client.Ping(); err != nil {
		return fmt.Errorf("memcache ping: %w", err)
	}
	return nil
}

// ItemKey is the memcached key of key's answer; tests and tools use it.
func (m *Memcache) ItemKey(key Key) string { return m.itemKey(key) }

func (m *Memcache) itemKey(key Key) string { return memcacheKey(m.opts.KeyPrefix, key) }

// lockKey lives in a namespace of its own ("lock:" is no kind).
func (m *Memcache) lockKey(key Key) string { return memcacheKey(m.opts.KeyPrefix+"lock:", key) }

// memcacheKey is prefix + format:kind:scope:name, or with h:sha256(name)
// for the name when it is not safe as is: too long, refused by memcached,
// non-ASCII, or itself looking like a hashed name. A scope that is not a
// short safe word (the Checker's is 8 hex digits) is hashed too.
func memcacheKey(prefix string, key Key) string {
	kind := key.Kind.String()
	scope := key.Scope
	if len(scope) > 16 || scope != "" && (!safeKeyPart(scope) || strings.IndexByte(scope, ':') >= 0) {
		sum := sha256.Sum256([]byte(scope))
		scope = hex.EncodeToString(sum[:8])
	}
	n := len(prefix) + len(memcacheFormat) + len(kind) + len(scope) + 3
	if n+len(key.Name) <= memcachedMaxKey && safeKeyPart(key.Name) && !strings.HasPrefix(key.Name, "h:") {
		return prefix + memcacheFormat + ":" + kind + ":" + scope + ":" + key.Name
	}
	sum := sha256.Sum256([]byte(key.Name))
	return prefix + memcacheFormat + ":" + kind + ":" + scope + ":h:" + hex.EncodeToString(sum[:])
}

// safeKeyPart reports whether s is non-empty printable ASCII without
// spaces: what memcached takes in a key, minus non-ASCII bytes, which the
// text protocol would pass but which are hashed to keep keys readable.
func safeKeyPart(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// get reads the item ik, batched with concurrent gets: a miss, a failure
// or an unreadable value is false.
func (m *Memcache) get(ik string) (memcacheItem, bool) {
	it := m.batch.get(m, ik)
	if it == nil {
		return memcacheItem{}, false
	}
	return m.decode(ik, it.Value)
}

// decode reads a value; an unreadable one, or one answered more than
// maxAnswerSkew in the future, is counted, logged and a miss (the next
// answer overwrites it).
func (m *Memcache) decode(ik string, v []byte) (memcacheItem, bool) {
	item, err := decodeMemcacheValue(v)
	if err == nil && item.at.After(m.opts.Now().Add(maxAnswerSkew)) {
		err = fmt.Errorf("value %q: answered at %s, in the future", v, item.at.UTC().Format(time.RFC3339))
	}
	if err != nil {
		metrics.MemcacheErrors.WithLabelValues("decode").Inc()
		if m.warn.allow(time.Now().UnixNano()) {
			m.log.Warn("memcache: unreadable value, treating as a miss", "key", ik, "err", err)
		}
		return memcacheItem{}, false
	}
	return item, true
}

func (m *Memcache) set(ik string, ans Answer) {
	exp := m.opts.NegativeTTL
	if ans.Found {
		exp = max(m.opts.StaleMax, m.opts.TTL)
	}
	if exp <= 0 {
		return
	}
	item := &memcache.Item{Key: ik, Value: encodeMemcacheValue(ans.Found, ans.At), Expiration: expiration(exp)}
	err := m.call(func() error { return m.client.Set(item) })
	if err != nil {
		m.fail("set", err, ik)
	}
}

func (m *Memcache) delete(k string) {
	if err := m.call(func() error { return m.client.Delete(k) }); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		m.fail("delete", err, k)
	}
}

func (m *Memcache) fresh(item memcacheItem) bool {
	ttl := m.opts.NegativeTTL
	if item.found {
		ttl = m.opts.TTL
	}
	return m.opts.Now().Sub(item.at) < ttl
}

// call runs one memcached request in one of the request slots, waiting
// at most Timeout for a slot.
func (m *Memcache) call(req func() error) error {
	select {
	case m.slots <- struct{}{}:
	default:
		t := time.NewTimer(m.opts.Timeout)
		select {
		case m.slots <- struct{}{}:
			t.Stop()
		case <-t.C:
			return errBusy
		}
	}
	defer func() { <-m.slots }()
	return req()
}

// up reports whether the server of memcached key k is worth asking: not
// within Backoff of a failure.
func (m *Memcache) up(k string) bool {
	now := time.Now().UnixNano()
	if now >= m.anyDown.Load() {
		return true
	}
	d := m.serverOf(k)
	return d == nil || now >= d.Load()
}

// down starts the backoff of server d until the time until.
func (m *Memcache) down(d *atomic.Int64, until int64) {
	d.Store(until)
	for {
		cur := m.anyDown.Load()
		if until <= cur || m.anyDown.CompareAndSwap(cur, until) {
			return
		}
	}
}

// serverOf is the backoff time of k's server.
func (m *Memcache) serverOf(k string) *atomic.Int64 {
	a, err := m.servers.PickServer(k)
	if err != nil {
		return nil
	}
	return m.downUntil[a.String()]
}

// fail counts and logs a memcached failure and starts the backoff of the
// server that failed: the one the error names (a dial, read or write
// error carries its address), else the servers of keys, the keys of the
// request.
func (m *Memcache) fail(op string, err error, keys ...string) {
	metrics.MemcacheErrors.WithLabelValues(op).Inc()
	now := time.Now()
	// Busy slots say this process is saturated, not that memcached is
	// down: no backoff for those.
	server := ""
	if m.opts.Backoff > 0 && !errors.Is(err, errBusy) {
		until := now.Add(m.opts.Backoff).UnixNano()
		if a := failedServer(err); m.downUntil[a] != nil {
			server = a
			m.down(m.downUntil[a], until)
		} else {
			for _, k := range keys {
				if d := m.serverOf(k); d != nil {
					m.down(d, until)
				}
			}
		}
	}
	if m.warn.allow(now.UnixNano()) {
		m.log.Warn("memcache: failing, treating as a miss", "op", op, "server", server, "err", err, "backoff", m.opts.Backoff)
	}
}

// failedServer is the memcached address an error names, or "".
func failedServer(err error) string {
	var ct *memcache.ConnectTimeoutError
	if errors.As(err, &ct) && ct.Addr != nil {
		return ct.Addr.String()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		return op.Addr.String()
	}
	return ""
}

// expiration converts d to memcached's expiration: whole seconds, at least
// one, as a Unix time past 30 days (memcached reads larger relative values
// as absolute times).
func expiration(d time.Duration) int32 {
	if d > memcachedMaxRelative {
		return int32(time.Now().Add(d).Unix())
	}
	return int32(max(1, (d+time.Second-1)/time.Second))
}

func encodeMemcacheValue(found bool, at time.Time) []byte {
	b := make([]byte, 0, 16)
	if found {
		b = append(b, '1', ' ')
	} else {
		b = append(b, '0', ' ')
	}
	return strconv.AppendInt(b, at.UnixMilli(), 10)
}

func decodeMemcacheValue(v []byte) (memcacheItem, error) {
	if len(v) > 32 {
		return memcacheItem{}, fmt.Errorf("value of %d bytes is too long", len(v))
	}
	if len(v) < 3 || (v[0] != '0' && v[0] != '1') || v[1] != ' ' {
		return memcacheItem{}, fmt.Errorf("value %q is not \"0|1 unix-ms\"", v)
	}
	ms, err := strconv.ParseInt(string(v[2:]), 10, 64)
	if err != nil || ms <= 0 {
		return memcacheItem{}, fmt.Errorf("value %q: bad time", v)
	}
	return memcacheItem{found: v[0] == '1', at: time.UnixMilli(ms)}, nil
}
