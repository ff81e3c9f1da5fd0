package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/lookup"
)

// mapSource is a lookup.Source over a set of listed candidates. Names in
// fail make Lookup fail; names in block make it wait for release (or the
// context).
type mapSource struct {
	mu      sync.Mutex
	listed  map[string]bool
	fail    map[string]bool
	block   map[string]bool
	release chan struct{}
	started chan string
	calls   map[lookup.Kind]int
}

func newMapSource(listed ...string) *mapSource {
	m := &mapSource{listed: map[string]bool{}, fail: map[string]bool{}, block: map[string]bool{},
		release: make(chan struct{}), started: make(chan string, 100), calls: map[lookup.Kind]int{}}
	for _, l := range listed {
		m.listed[l] = true
	}
	return m
}

func (m *mapSource) Lookup(ctx context.Context, key lookup.Key) (lookup.Answer, error) {
	m.mu.Lock()
	m.calls[key.Kind]++
	fail, block := m.fail[key.Name], m.block[key.Name]
	m.mu.Unlock()
	if block {
		select {
		case m.started <- key.Name:
		default:
		}
		select {
		case <-m.release:
		case <-ctx.Done():
			return lookup.Answer{}, ctx.Err()
		}
	}
	if fail {
		return lookup.Answer{}, errors.New("directory down")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range key.Expand() {
		if m.listed[c] {
			return lookup.Answer{Found: true, Tier: "file", At: time.Now()}, nil
		}
	}
	return lookup.Answer{Tier: "file", At: time.Now()}, nil
}

func (m *mapSource) count(k lookup.Kind) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[k]
}

// testConfig: example.org and catch.example are checked, "+" is the
// delimiter, catch-all on, 10.0.0.0/8 trusted.
func testConfig(mut ...func(*config.Config)) *config.Config {
	c := config.Default()
	c.Recipients.Domains = []string{"example.org", "catch.example"}
	c.Recipients.RecipientDelimiter = "+"
	c.Recipients.CatchAll = true
	c.TrustedNetworks = []string{"10.0.0.0/8"}
	c.TrustedPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	c.DecisionTimeout = 2 * time.Second
	for _, f := range mut {
		f(&c)
	}
	return &c
}

func newPolicy(t testing.TB, src lookup.Source, c *config.Config, log *slog.Logger) *Policy {
	t.Helper()
	ch, err := lookup.NewChecker(src, lookup.CheckerOptions{
		Domains:            c.Recipients.Domains,
		RecipientDelimiter: c.Recipients.RecipientDelimiter,
		CaseFoldLocalPart:  c.Recipients.CaseFoldLocalPart,
		CatchAll:           c.Recipients.CatchAll,
		AlwaysAccept:       c.Recipients.AlwaysAccept,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &Policy{Decider: ch, Config: c, Log: log}
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the decoded log lines with msg.
func (b *logBuffer) lines(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServer serves pol on a loopback TCP port until the test ends.
func startServer(t testing.TB, pol *Policy, opts ServerOptions, log *slog.Logger) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, pol, opts, log), ln.Addr().String()
}

func serveOn(t testing.TB, ln net.Listener, pol *Policy, opts ServerOptions, log *slog.Logger) *Server {
	t.Helper()
	srv := NewServer(pol, opts, log)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return srv
}

var clientOpts = gomilter.ClientOptions{
	ReadTimeout:  10 * time.Second,
	WriteTimeout: 10 * time.Second,
	ActionMask:   0,
	ProtocolMask: 0,
}

// dial opens a negotiated milter session as an MTA would.
func dial(t testing.TB, network, addr string) *gomilter.ClientSession {
	t.Helper()
	s, err := gomilter.NewClientWithOptions(network, addr, clientOpts).Session()
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// must returns a function that fails t on err and returns the reply.
func must(t testing.TB) func(*gomilter.Action, error) string {
	return func(a *gomilter.Action, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return testserver.Reply(a)
	}
}

// counterValue reads a counter or one child of a vector.
func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// eventually polls cond until it holds or the time is up.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func parseIP(s string) net.IP { return net.ParseIP(s) }
