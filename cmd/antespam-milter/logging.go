package main

import (
	"io"
	"log/slog"
)

// newLogger makes the daemon's logger: slog to w (stderr; journald adds
// time and unit) as "text" or "json", at level ("debug", "info", "warn",
// "error"; config.Load has validated both).
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
