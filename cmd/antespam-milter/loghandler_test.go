package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// spyHandler counts the records that reach the TextHandler behind the
// fast path, through WithAttrs and WithGroup too.
type spyHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (s spyHandler) Handle(ctx context.Context, r slog.Record) error {
	s.n.Add(1)
	return s.Handler.Handle(ctx, r)
}

func (s spyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return spyHandler{s.Handler.WithAttrs(as), s.n}
}

func (s spyHandler) WithGroup(name string) slog.Handler {
	return spyHandler{s.Handler.WithGroup(name), s.n}
}

// handlerPair is the fast handler and slog's TextHandler, each writing to
// its own buffer; fallbacks counts the fast handler's records handed on.
type handlerPair struct {
	fast, text slog.Handler
	fb, tb     bytes.Buffer
	fallbacks  atomic.Int64
}

func newHandlerPair(t testing.TB, opts *slog.HandlerOptions) *handlerPair {
	t.Helper()
	p := &handlerPair{}
	h, ok := newTextHandler(&p.fb, opts).(*textHandler)
	if !ok {
		t.Fatalf("newTextHandler(%+v) has no fast path", opts)
	}
	h.text = spyHandler{h.text, &p.fallbacks}
	p.fast = h
	p.text = slog.NewTextHandler(&p.tb, opts)
	return p
}

// with applies f to both handlers.
func (p *handlerPair) with(f func(slog.Handler) slog.Handler) {
	if f != nil {
		p.fast, p.text = f(p.fast), f(p.text)
	}
}

// handle logs r through both and fails unless they wrote the same bytes.
// It returns what was written and whether the fast path took it.
func (p *handlerPair) handle(t testing.TB, r slog.Record) (string, bool) {
	t.Helper()
	p.fb.Reset()
	p.tb.Reset()
	before := p.fallbacks.Load()
	ctx := context.Background()
	if p.fast.Enabled(ctx, r.Level) != p.text.Enabled(ctx, r.Level) {
		t.Fatalf("Enabled(%v) differs", r.Level)
	}
	if p.text.Enabled(ctx, r.Level) {
		if err := p.fast.Handle(ctx, r.Clone()); err != nil {
			t.Fatal(err)
		}
		if err := p.text.Handle(ctx, r.Clone()); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(p.fb.Bytes(), p.tb.Bytes()) {
		t.Fatalf("fast handler wrote\n%q\nTextHandler wrote\n%q", p.fb.String(), p.tb.String())
	}
	return p.tb.String(), p.fallbacks.Load() == before
}

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("resolved value") }

var testTime = time.Date(2026, 11, 26, 23, 59, 58, 123456789, time.UTC)

// decisionAttrs are the attrs of a decision line as milter's session
// logs it.
func decisionAttrs() []slog.Attr {
	return []slog.Attr{
		slog.String("stage", "rcpt"),
		slog.String("verdict", "reject"),
		slog.String("queue_id", "4XyZ1k2Lmn"),
		slog.String("client_addr", "198.51.100.1"),
		slog.String("client_name", "mx.example.net"),
		slog.String("daemon", "smtpd"),
		slog.String("auth_user", "alice"),
		slog.String("rcpt", "unknown@example.org"),
		slog.String("tier", "lru"),
		slog.Bool("stale", false),
		slog.Duration("duration", 1234*time.Nanosecond),
		slog.String("reason", "unknown recipient"),
		slog.String("reply", "550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown"),
	}
}

// TestTextHandlerSame: the fast handler writes what slog.TextHandler
// writes, record after record, taking the fast path exactly where it
// should.
func TestTextHandlerSame(t *testing.T) {
	odd := []string{
		"", " ", "a b", "a=b", `say "hi"`, `back\slash`, "tab\there", "nl\nx", "cr\r", "\x00", "\x1f",
		"del\x7f", "bad\xffutf8", "\xc3", "repl\ufffdchar", "café", "日本語", "nbsp\u00a0x", "ls\u2028x",
		"zw\u200bx", "emoji😀", "-", "a.b", "%d", "'", "#", "x,y", "{}", "[]",
	}
	type tc struct {
		name  string
		with  func(slog.Handler) slog.Handler
		level slog.Level
		msg   string
		time  time.Time
		attrs []slog.Attr
		fast  bool
	}
	cases := []tc{
		{name: "decision line", attrs: decisionAttrs(), fast: true},
		{name: "decision line in an inline group", attrs: []slog.Attr{{Value: slog.GroupValue(decisionAttrs()...)}}, fast: true},
		{name: "no attrs", fast: true},
		{name: "no time", time: time.Time{}, attrs: decisionAttrs()[:2], fast: true},
		{name: "warn", level: slog.LevelWarn, fast: true, attrs: decisionAttrs()},
		{name: "error", level: slog.LevelError, fast: true},
		{name: "info+2", level: slog.LevelInfo + 2, fast: true},
		{name: "debug not logged", level: slog.LevelDebug, fast: true},
		{name: "numbers", fast: true, attrs: []slog.Attr{
			slog.Int64("i", -42), slog.Int64("min", math.MinInt64), slog.Uint64("u", math.MaxUint64), slog.Int("int", 7),
			slog.Float64("f", 0.1), slog.Float64("nan", math.NaN()), slog.Float64("inf", math.Inf(1)),
			slog.Float64("ninf", math.Inf(-1)), slog.Float64("negzero", math.Copysign(0, -1)), slog.Float64("big", 1e21),
			slog.Float64("small", 1e-7), slog.Bool("t", true), slog.Bool("f", false),
		}},
		{name: "durations", fast: true, attrs: []slog.Attr{
			slog.Duration("zero", 0), slog.Duration("ns", 1), slog.Duration("us", 1500), slog.Duration("ms", 2*time.Millisecond),
			slog.Duration("long", time.Hour+2*time.Minute+3*time.Second+4*time.Millisecond), slog.Duration("neg", -time.Second),
			slog.Duration("min", math.MinInt64), slog.Duration("max", math.MaxInt64),
		}},
		{name: "times", fast: true, attrs: []slog.Attr{
			slog.Time("utc", testTime), slog.Time("zone", testTime.In(time.FixedZone("X", -(3*3600+1800)))),
			slog.Time("zero", time.Time{}), slog.Time("mono", time.Now()), slog.Time("whole", testTime.Truncate(time.Second)),
			slog.Time("local", testTime.Local()),
		}},
		{name: "empty group elided", fast: true, attrs: []slog.Attr{slog.Group("g"), slog.String("a", "b")}},
		{name: "named group", attrs: []slog.Attr{slog.Group("g", slog.String("a", "b"))}},
		{name: "empty key", attrs: []slog.Attr{slog.String("", "v")}},
		{name: "empty attr", attrs: []slog.Attr{{}, slog.String("a", "b")}},
		{name: "error value", attrs: []slog.Attr{slog.Any("err", errors.New("boom"))}},
		{name: "any", attrs: []slog.Attr{slog.Any("list", []int{1, 2})}},
		{name: "logvaluer", attrs: []slog.Attr{slog.Any("v", valuer{})}},
		{name: "simple then any", attrs: []slog.Attr{slog.String("a", "x y"), slog.Any("err", errors.New("boom")), slog.String("b", "c")}},
		{name: "WithAttrs simple", fast: true, attrs: decisionAttrs()[:3],
			with: func(h slog.Handler) slog.Handler {
				return h.WithAttrs([]slog.Attr{slog.String("component", "go-milter"), slog.Int("n", 3)}).WithAttrs([]slog.Attr{slog.Bool("b", true)})
			}},
		{name: "WithAttrs only", fast: true,
			with: func(h slog.Handler) slog.Handler { return h.WithAttrs([]slog.Attr{slog.String("k", "a b")}) }},
		{name: "WithAttrs none", fast: true, attrs: decisionAttrs()[:1],
			with: func(h slog.Handler) slog.Handler { return h.WithAttrs(nil) }},
		{name: "WithAttrs any", attrs: decisionAttrs()[:3],
			with: func(h slog.Handler) slog.Handler { return h.WithAttrs([]slog.Attr{slog.Any("err", errors.New("x"))}) }},
		{name: "WithAttrs group", attrs: decisionAttrs()[:3],
			with: func(h slog.Handler) slog.Handler {
				return h.WithAttrs([]slog.Attr{slog.Group("g", slog.Int("a", 1))}).WithAttrs([]slog.Attr{slog.String("c", "d")})
			}},
		{name: "WithGroup", attrs: decisionAttrs()[:3],
			with: func(h slog.Handler) slog.Handler {
				return h.WithGroup("grp").WithAttrs([]slog.Attr{slog.String("c", "d")})
			}},
		{name: "WithGroup empty name", attrs: decisionAttrs()[:3],
			with: func(h slog.Handler) slog.Handler { return h.WithGroup("") }},
	}
	for i, s := range odd {
		cases = append(cases, tc{name: "quoting " + s, msg: s, fast: true, attrs: []slog.Attr{
			slog.String("v", s), slog.String("k"+s, "v"),
		}})
		if s != "" {
			cases = append(cases, tc{name: "key " + s, fast: true, attrs: []slog.Attr{slog.Int(s, i)}})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newHandlerPair(t, nil)
			p.with(c.with)
			msg := c.msg
			if msg == "" && !strings.HasPrefix(c.name, "quoting") {
				msg = "decision"
			}
			tm := testTime
			if c.name == "no time" {
				tm = c.time
			}
			r := slog.NewRecord(tm, c.level, msg, 0)
			r.AddAttrs(c.attrs...)
			_, fast := p.handle(t, r)
			if fast != c.fast {
				t.Errorf("fast path taken: %v, want %v", fast, c.fast)
			}
		})
	}
}

// TestTextHandlerTimes: record times, formatted once per second and
// Location, come out as TextHandler writes them, from a second's first
// record to its last and across zones, years of any width included.
func TestTextHandlerTimes(t *testing.T) {
	p := newHandlerPair(t, nil)
	east, west := time.FixedZone("E", 5*3600+1800), time.FixedZone("W", -8*3600)
	base := time.Date(2026, 3, 29, 0, 59, 59, 0, time.UTC)
	var times []time.Time
	locs := []*time.Location{time.UTC, time.Local, east, west, time.FixedZone("E", 3600)}
	for _, ns := range []int{0, 999999, 1000000, 123456789, 999999999, 1e9, 1e9 + 1} {
		for _, loc := range locs {
			times = append(times, base.Add(time.Duration(ns)).In(loc))
		}
	}
	for _, loc := range locs {
		times = append(times, time.Now().In(loc))
	}
	for _, y := range []int{0, 1, 999, 9999, 10000, -1, 292277026} {
		for _, ns := range []int{1, 500000000} {
			times = append(times, time.Date(y, 12, 31, 23, 59, 59, ns, time.UTC), time.Date(y, 12, 31, 23, 59, 59, ns, east))
		}
	}
	for _, tm := range times {
		for range 2 {
			if _, fast := p.handle(t, slog.NewRecord(tm, slog.LevelInfo, "m", 0)); !fast {
				t.Fatalf("%v: not on the fast path", tm)
			}
		}
	}
}

// TestTextHandlerOptions: options the fast path does not follow give
// slog's TextHandler itself; the level is followed.
func TestTextHandlerOptions(t *testing.T) {
	for _, opts := range []*slog.HandlerOptions{
		{AddSource: true},
		{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return a }},
	} {
		if _, ok := newTextHandler(io.Discard, opts).(*slog.TextHandler); !ok {
			t.Errorf("newTextHandler(%+v) is not a TextHandler", opts)
		}
	}
	p := newHandlerPair(t, &slog.HandlerOptions{Level: slog.LevelDebug})
	if out, _ := p.handle(t, slog.NewRecord(testTime, slog.LevelDebug, "dbg", 0)); !strings.Contains(out, "level=DEBUG msg=dbg") {
		t.Errorf("debug record at level debug: %q", out)
	}
	p = newHandlerPair(t, &slog.HandlerOptions{Level: slog.LevelError})
	if out, _ := p.handle(t, slog.NewRecord(testTime, slog.LevelWarn, "w", 0)); out != "" {
		t.Errorf("warn record at level error: %q", out)
	}
}

// TestNewLoggerText: the daemon's text logger writes the decision line
// and the standard logger's lines (with component=go-milter) as
// TextHandler would.
func TestNewLoggerText(t *testing.T) {
	t.Cleanup(func() {
		log.SetOutput(os.Stderr)
		log.SetFlags(log.LstdFlags)
	})
	var buf bytes.Buffer
	l := newLogger(&buf, "text", "info")
	l.LogAttrs(context.Background(), slog.LevelInfo, "decision", decisionAttrs()...)
	log.Print("Error writing packet: broken pipe")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	for i, want := range []string{
		` level=INFO msg=decision stage=rcpt verdict=reject queue_id=4XyZ1k2Lmn client_addr=198.51.100.1 client_name=mx.example.net daemon=smtpd auth_user=alice rcpt=unknown@example.org tier=lru stale=false duration=1.234µs reason="unknown recipient" reply="550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown"`,
		` level=WARN msg="Error writing packet: broken pipe" component=go-milter`,
	} {
		if !strings.HasPrefix(lines[i], "time=") || !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d: %q, want time=... then %q", i, lines[i], want)
		}
	}
}

// FuzzTextHandlerSame: records of random keys and values, through a
// handler with random WithAttrs, give the same bytes from the fast
// handler and from slog's TextHandler.
func FuzzTextHandlerSame(f *testing.F) {
	f.Add("decision", "rcpt", "unknown@example.org", int64(-1), uint64(1), 0.5, true, int64(1234), int64(1795737600), int64(5e8), 3600)
	f.Add("", "", "", int64(0), uint64(0), 0.0, false, int64(0), int64(0), int64(0), 0)
	f.Add("a b", "k=v", "say \"hi\"\n", int64(math.MinInt64), uint64(math.MaxUint64), math.Inf(-1), false, int64(math.MinInt64), int64(-62135596800), int64(999999999), -45000)
	f.Add("\xff\xfe", "日本", "\u00a0\u2028\ufffd\x7f\\", int64(7), uint64(8), math.NaN(), true, int64(3*time.Hour+7), int64(253402300799), int64(1), 86399)
	f.Fuzz(func(t *testing.T, msg, key, s string, i int64, u uint64, fl float64, bo bool, d, sec, nsec int64, off int) {
		zone := time.FixedZone(key, off%(18*3600))
		tm := time.Unix(sec%(400*365*86400), nsec).In(zone)
		p := newHandlerPair(t, nil)
		p.with(func(h slog.Handler) slog.Handler {
			if key == "" {
				return h
			}
			return h.WithAttrs([]slog.Attr{slog.String(key, s), slog.Duration(s+"d", time.Duration(d))})
		})
		r := slog.NewRecord(tm, slog.Level(i%16), msg, 0)
		attrs := []slog.Attr{
			slog.String(key, s), slog.String(s, key), slog.Int64(key+"i", i), slog.Uint64(s+"u", u),
			slog.Float64("f"+key, fl), slog.Bool("b"+s, bo), slog.Duration("d", time.Duration(d)),
			slog.Time("t"+key, tm), slog.Time("t2", time.Unix(0, d)),
		}
		r.AddAttrs(attrs...)
		r.AddAttrs(slog.Attr{Value: slog.GroupValue(attrs...)})
		p.handle(t, r)
	})
}

// BenchmarkDecisionRecord: one decision line (13 attrs, as milter's
// session logs it: "group", the attrs in one inline group; "attrs", added
// one by one) through slog's TextHandler and through the fast handler,
// into io.Discard.
func BenchmarkDecisionRecord(b *testing.B) {
	attrs := decisionAttrs()
	for _, bc := range []struct {
		name string
		h    slog.Handler
	}{
		{"TextHandler", slog.NewTextHandler(io.Discard, nil)},
		{"fast", newTextHandler(io.Discard, nil)},
	} {
		b.Run(bc.name+"/attrs", func(b *testing.B) {
			b.ReportAllocs()
			defer testserver.ReportCPU(b)()
			for b.Loop() {
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "decision", 0)
				r.AddAttrs(attrs...)
				bc.h.Handle(context.Background(), r) //nolint:errcheck
			}
		})
		b.Run(bc.name+"/group", func(b *testing.B) {
			b.ReportAllocs()
			defer testserver.ReportCPU(b)()
			for b.Loop() {
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "decision", 0)
				r.AddAttrs(slog.Attr{Value: slog.GroupValue(attrs...)})
				bc.h.Handle(context.Background(), r) //nolint:errcheck
			}
		})
	}
}
