package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// textHandler is slog.TextHandler with a fast path for the records the
// daemon logs most, its decision lines: a record whose attributes are all
// of simple kinds (string, int64, uint64, float64, bool, duration, time),
// outside any group except the inline group slog makes of an empty key, is
// formatted here into a pooled buffer, byte for byte as TextHandler would
// (a differential test and FuzzTextHandlerSame hold it to that), and
// written with one Write. TextHandler's general path costs about twice as
// much per decision line (a handle state, two pooled buffers, a deferred
// recover per value), and the decision line is the daemon's largest own
// cost per session under load (BENCHMARKS.md §1).
//
// Everything else goes to the TextHandler it wraps: records with other
// kinds (errors, LogValuers, any), named groups, an empty key, and every
// handler after WithGroup. WithAttrs keeps the fast path when its
// attributes are simple, formatted once as TextHandler does.
type textHandler struct {
	text slog.Handler // the TextHandler, with the same attrs
	w    *lockedWriter
	pre  []byte // the attrs from WithAttrs, formatted, each " key=value"
}

// lockedWriter serialises the fast path's writes with the TextHandler's
// (each handler of the family writes through it), as TextHandler's own
// mutex does between its handlers: the writer need not be safe for
// concurrent use.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}

// newTextHandler is slog.NewTextHandler(w, opts) with the fast path; with
// options the fast path does not follow (ReplaceAttr, AddSource) it is the
// TextHandler itself.
func newTextHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	if opts.ReplaceAttr != nil || opts.AddSource {
		return slog.NewTextHandler(w, opts)
	}
	lw := &lockedWriter{w: w}
	return &textHandler{text: slog.NewTextHandler(lw, opts), w: lw}
}

func (h *textHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.text.Enabled(ctx, l)
}

// textBuffers holds the fast path's line buffers.
var textBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// maxPooledText is the largest buffer put back in textBuffers: a rare
// huge line is not kept alive for the next ones.
const maxPooledText = 16 << 10

// Handle formats r on the fast path, or hands it to the TextHandler.
func (h *textHandler) Handle(ctx context.Context, r slog.Record) error {
	bp := textBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	if !r.Time.IsZero() {
		b = append(b, "time="...)
		b = appendRecordTime(b, r.Time.Round(0))
		b = append(b, ' ')
	}
	b = append(b, "level="...)
	b = appendTextString(b, r.Level.String())
	b = append(b, " msg="...)
	b = appendTextString(b, r.Message)
	b = append(b, h.pre...)
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		b, ok = appendTextAttr(b, a)
		return ok
	})
	var err error
	if ok {
		b = append(b, '\n')
		_, err = h.w.Write(b)
	} else {
		err = h.text.Handle(ctx, r)
	}
	if cap(b) <= maxPooledText {
		*bp = b[:0]
		textBuffers.Put(bp)
	}
	return err
}

// WithAttrs keeps the fast path when every attr in as is simple.
func (h *textHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	text := h.text.WithAttrs(as)
	pre := append([]byte(nil), h.pre...)
	for _, a := range as {
		var ok bool
		if pre, ok = appendTextAttr(pre, a); !ok {
			return text
		}
	}
	return &textHandler{text: text, w: h.w, pre: pre}
}

// WithGroup leaves the fast path: group prefixes are TextHandler's job
// (even an empty name's: TextHandler then prefixes keys with ".").
func (h *textHandler) WithGroup(name string) slog.Handler {
	return h.text.WithGroup(name)
}

// appendTextAttr appends " key=value" as TextHandler does, nothing for an
// attr TextHandler elides (an empty group) and the attrs of an inline
// group (one with an empty key) in turn. It reports false, with b in any
// state, for what the fast path leaves to TextHandler.
func appendTextAttr(b []byte, a slog.Attr) ([]byte, bool) {
	v := a.Value
	if v.Kind() == slog.KindGroup {
		g := v.Group()
		if len(g) == 0 {
			return b, true
		}
		if a.Key != "" {
			return b, false
		}
		for _, ga := range g {
			var ok bool
			if b, ok = appendTextAttr(b, ga); !ok {
				return b, false
			}
		}
		return b, true
	}
	if a.Key == "" {
		return b, false
	}
	n := len(b)
	b = append(b, ' ')
	b = appendTextString(b, a.Key)
	b = append(b, '=')
	switch v.Kind() {
	case slog.KindString:
		b = appendTextString(b, v.String())
	case slog.KindBool:
		b = strconv.AppendBool(b, v.Bool())
	case slog.KindInt64:
		b = strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		b = strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindFloat64:
		b = strconv.AppendFloat(b, v.Float64(), 'g', -1, 64)
	case slog.KindDuration:
		// Duration.String is inlined: its string stays on the stack.
		b = append(b, v.Duration().String()...)
	case slog.KindTime:
		b = appendRFC3339Millis(b, v.Time())
	default:
		return b[:n], false
	}
	return b, true
}

// appendTextString appends s as TextHandler does: as is, or quoted by
// strconv.Quote's rules when it needs quoting. A string of printable
// ASCII, what the daemon logs nearly always, is scanned once and quoted
// here (only '"' and '\\' are escaped): strconv's rune by rune quoting was
// most of the cost of a decision line's reason and reply.
func appendTextString(b []byte, s string) []byte {
	quote := uint8(0)
	if len(s) == 0 {
		quote = 1
	}
	i := 0
	for ; i < len(s); i++ {
		k := textByteClass[s[i]]
		if k > 1 {
			break
		}
		quote |= k
	}
	if i < len(s) {
		if textNeedsQuoting(s) {
			return strconv.AppendQuote(b, s)
		}
		return append(b, s...)
	}
	if quote == 0 {
		return append(b, s...)
	}
	b = append(b, '"')
	start := 0
	for j := 0; j < len(s); j++ {
		if c := s[j]; c == '"' || c == '\\' {
			b = append(b, s[start:j]...)
			b = append(b, '\\')
			start = j
		}
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// textByteClass classifies bytes for appendTextString: 0 printable ASCII
// that needs no quoting, 1 printable ASCII that does (space, '=', '"'), 2
// anything else (control characters, DEL, bytes of multi-byte runes and
// invalid UTF-8), left to textNeedsQuoting and strconv.
var textByteClass = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c < ' ' || c >= 0x7f:
			t[c] = 2
		case c == ' ' || c == '=' || c == '"':
			t[c] = 1
		}
	}
	return t
}()

// textNeedsQuoting is log/slog's needsQuoting: an empty string, a space,
// '=', '"', an ASCII control character, invalid UTF-8, U+FFFD, a Unicode
// space or a rune that is not printable. A backslash and DEL are left
// alone, as slog leaves them.
func textNeedsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == ' ' || c == '=' || c == '"' {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// recordSecond is the formatted second of the last record time: lines
// come many a second, and all but the milliseconds is the same for
// every time in one second of one Location (a zone's offset changes only
// at a whole second).
type recordSecond struct {
	unix int64
	loc  *time.Location
	head []byte // "2006-01-02T15:04:05."
	zone []byte // "Z" or "-07:00"
}

var lastSecond atomic.Pointer[recordSecond]

// appendRecordTime is appendRFC3339Millis, with the second formatted
// once per second and Location.
func appendRecordTime(b []byte, t time.Time) []byte {
	const headLen = len("2006-01-02T15:04:05.")
	sec, loc := t.Unix(), t.Location()
	if c := lastSecond.Load(); c != nil && c.unix == sec && c.loc == loc {
		ms := t.Nanosecond() / 1e6
		b = append(b, c.head...)
		b = append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
		return append(b, c.zone...)
	}
	n := len(b)
	b = appendRFC3339Millis(b, t)
	// Years of other than four digits are formatted as they come.
	if f := b[n:]; len(f) > headLen+3 && f[4] == '-' && f[headLen-1] == '.' {
		lastSecond.Store(&recordSecond{
			unix: sec,
			loc:  loc,
			head: append([]byte(nil), f[:headLen]...),
			zone: append([]byte(nil), f[headLen+3:]...),
		})
	}
	return b
}

// appendRFC3339Millis is log/slog's time format: RFC 3339 with exactly
// three digits of milliseconds, truncated. RFC3339Nano trims trailing
// zeros, so a tenth of a millisecond is added to always get four digits
// and the fourth is dropped.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}
