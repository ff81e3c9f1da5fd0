package main

import (
	"io"
	"log"
	"log/slog"
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
		h = slog.NewTextHandler(w, opts)
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
