package main

import (
	"io"
	"log"
	"log/slog"
	"sync"
	"time"
)

// newLogger makes the daemon's logger: slog to w (stderr; journald adds
// time and unit) as "text" or "json", at level ("debug", "info", "warn",
// "error"; config.Load has validated both).
//
// The standard log package is routed to it too, at warn level with
// component=go-milter: go-milter logs there what it cannot hand back as
// an error ("Error reading milter command: unexpected EOF" when an MTA
// drops a connection in the middle of a command, "Error writing packet:
// ...", a recovered panic), and those lines must be as structured as the
// rest. The last logger made wins, as a reload wants.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = newTextHandler(w, opts)
	}
	routeStdLog(h)
	return slog.New(h)
}

// routeStdLog makes the standard logger write through h: each line
// becomes one record at warn level (dropped when h does not log warnings)
// with component=go-milter, the only package here that logs there.
func routeStdLog(h slog.Handler) {
	std := slog.NewLogLogger(h.WithAttrs([]slog.Attr{slog.String("component", "go-milter")}), slog.LevelWarn)
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(std.Writer())
}

// Defaults of the daemon's log buffer.
const (
	logFlushInterval = 100 * time.Millisecond
	logDirectLines   = 16
	logBufferSize    = 32 << 10
)

// logWriter buffers the daemon's log lines when they come fast: one
// write(2) per decision line to stderr (four lines per SMTP session) was
// the largest part of logging's cost under load. Within each window of
// flushInterval the first direct lines go straight out, so a daemon that
// logs little (and a test reading its output right after a reply) sees
// every line at once; the lines beyond those are buffered and written
// out by a timer at most flushInterval later, or earlier when the next
// line would not fit, so under load there are a few writes per window
// instead of one per line. Close writes out what is left: serve closes
// it on every return. Each Write is one record from a slog handler and is
// kept whole and in order. Safe for concurrent use: a reload's new logger
// writes to the same logWriter as the old one.
type logWriter struct {
	w        io.Writer
	interval time.Duration
	direct   int

	mu          sync.Mutex
	buf         []byte
	windowStart time.Time
	lines       int // lines written in the window from windowStart
	timer       *time.Timer
	armed       bool
	closed      bool
}

func newLogWriter(w io.Writer) *logWriter {
	return newLogWriterSize(w, logFlushInterval, logDirectLines, logBufferSize)
}

func newLogWriterSize(w io.Writer, interval time.Duration, direct, size int) *logWriter {
	lw := &logWriter{w: w, interval: interval, direct: direct, buf: make([]byte, 0, size)}
	lw.timer = time.AfterFunc(time.Hour, lw.timed)
	lw.timer.Stop()
	return lw
}

// Write writes p out or buffers it.
func (lw *logWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		return lw.w.Write(p)
	}
	if now := time.Now(); now.Sub(lw.windowStart) >= lw.interval {
		lw.windowStart = now
		lw.lines = 0
	}
	lw.lines++
	if lw.lines <= lw.direct && len(lw.buf) == 0 {
		return lw.w.Write(p)
	}
	if len(lw.buf)+len(p) > cap(lw.buf) {
		lw.flushLocked()
		if len(p) >= cap(lw.buf) {
			return lw.w.Write(p)
		}
	}
	lw.buf = append(lw.buf, p...)
	if !lw.armed {
		lw.armed = true
		lw.timer.Reset(lw.interval)
	}
	return len(p), nil
}

// Close writes out what is buffered; later writes go straight through.
func (lw *logWriter) Close() {
	lw.mu.Lock()
	lw.flushLocked()
	lw.closed = true
	lw.timer.Stop()
	lw.mu.Unlock()
}

func (lw *logWriter) timed() {
	lw.mu.Lock()
	lw.armed = false
	lw.flushLocked()
	lw.mu.Unlock()
}

// flushLocked writes the buffer out; a write error is dropped, as slog
// drops it (there is nowhere else to log it).
func (lw *logWriter) flushLocked() {
	if len(lw.buf) > 0 {
		lw.w.Write(lw.buf) //nolint:errcheck
		lw.buf = lw.buf[:0]
	}
}
