package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/metrics"
	"github.com/antespam/antespam-milter/milter"
)

// serve runs the daemon until ctx is done (SIGTERM, SIGINT), reloading
// the config on SIGHUP.
func serve(ctx context.Context, args []string, stderr io.Writer) int {
	fs, path := newFlags("serve", stderr)
	if st, ok := parseFlags(fs, args); !ok {
		return st
	}
	if fs.NArg() != 0 {
		return usage(stderr, fmt.Sprintf("serve takes no arguments, not %q", fs.Args()))
	}
	// SIGHUP is caught from the start: its default action would end the
	// process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(*path)
	if err != nil {
		logConfigError(newLogger(stderr, "text", "info"), "invalid config, not starting", err)
		return exitUsage
	}
	// Log lines are buffered (at most logFlushInterval); whatever is
	// buffered is written out on every return.
	lw := newLogWriter(stderr)
	defer lw.Close()
	d := &server{path: *path, stderr: lw}
	d.setLogger(cfg)
	return d.run(ctx, cfg, hup)
}

// server is the running daemon: the milter server, the current lookup
// stack and config, and the metrics endpoint.
type server struct {
	path   string
	stderr io.Writer
	log    *slog.Logger

	cfg     *config.Config
	stack   atomic.Pointer[stack] // read by /healthz
	milter  *milter.Server
	metrics *metricsServer
}

func (d *server) setLogger(cfg *config.Config) {
	d.log = newLogger(d.stderr, cfg.LogFormat, cfg.LogLevel)
}

func (d *server) run(ctx context.Context, cfg *config.Config, hup <-chan os.Signal) int {
	log := d.log
	for _, w := range cfg.Warnings {
		log.Warn("config warning", "warning", w)
	}
	if os.Geteuid() == 0 {
		log.Warn("running as root; the packaged systemd unit runs antespam-milter as its own unprivileged user")
	}
	s, err := compose(cfg, log, composeOptions{})
	if err != nil {
		log.Error("cannot build the lookup stack, not starting", "config", cfg.Path, "err", err)
		return exitUsage
	}
	d.cfg = cfg
	d.stack.Store(s)
	defer func() { d.stack.Load().Close() }()

	d.milter = milter.NewServer(d.policy(cfg, s), milter.ServerOptions{
		MaxSessions: cfg.MaxSessions,
		IdleTimeout: cfg.SessionIdleTimeout,
	}, log)
	ln, err := milter.Listen(cfg.Listen, socketMode(cfg), cfg.SocketGroup)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.Listen, "err", err)
		return exitFailure
	}
	if cfg.MetricsListen != "" {
		d.metrics, err = startMetrics(cfg.MetricsListen, d.ping, log)
		if err != nil {
			ln.Close()
			log.Error("cannot serve metrics", "metrics_listen", cfg.MetricsListen, "err", err)
			return exitFailure
		}
	}
	served := make(chan error, 1)
	go func() { served <- d.milter.Serve(ln) }()

	log.Info("antespam-milter started", "version", version, "listen", cfg.Listen,
		"source", cfg.Source, "mode", cfg.Mode, "config", cfg.Path, "metrics_listen", cfg.MetricsListen)
	notify(log, daemon.SdNotifyReady)

	// From here on d.log, which a reload may replace.
	status := exitOK
loop:
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping: signal received", "shutdown_timeout", d.cfg.ShutdownTimeout)
			break loop
		case err := <-served:
			d.log.Error("milter server failed", "err", err)
			status = exitFailure
			break loop
		case <-hup:
			d.reload()
		}
	}
	notify(d.log, daemon.SdNotifyStopping)
	d.shutdown()
	d.log.Info("antespam-milter stopped")
	return status
}

// shutdown stops accepting, lets sessions finish within shutdown_timeout,
// and removes the unix socket (closing its listener does).
func (d *server) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer cancel()
	if err := d.milter.Shutdown(ctx); err != nil {
		d.log.Warn("shutdown: sessions cut short", "err", err)
	}
	if d.metrics != nil {
		d.metrics.close(ctx)
	}
}

// reload re-reads the config. An invalid config, or one whose lookup stack
// cannot be built, is logged and the old one stays in force. A valid one
// gets a new stack (keeping the LRU when [cache] is unchanged) swapped in
// atomically; the LRU's answers are marked stale; the old stack is closed
// once decisions that may still use it are over.
func (d *server) reload() {
	notifyReloading(d.log)
	defer notify(d.log, daemon.SdNotifyReady)
	start := time.Now()
	cfg, err := config.Load(d.path)
	if err != nil {
		metrics.ConfigReloads.WithLabelValues("error").Inc()
		logConfigError(d.log, "reload: invalid config, keeping the old one", err)
		return
	}
	for _, w := range cfg.Warnings {
		d.log.Warn("config warning", "warning", w)
	}
	old := d.stack.Load()
	s, err := compose(cfg, d.log, composeOptions{reuse: old})
	if err != nil {
		metrics.ConfigReloads.WithLabelValues("error").Inc()
		d.log.Error("reload: cannot build the lookup stack, keeping the old one", "config", cfg.Path, "err", err)
		return
	}
	prev := d.cfg
	d.setLogger(cfg)
	// Answers cached under the old config are marked stale before the new
	// rules can read them.
	if s.LRU != nil {
		s.LRU.Invalidate()
	}
	d.milter.SetPolicy(d.policy(cfg, s))
	d.stack.Store(s)
	d.cfg = cfg
	old.closeAfter(prev.DecisionTimeout+time.Second, d.log)
	metrics.ConfigReloads.WithLabelValues("ok").Inc()
	for _, key := range restartKeys(prev, cfg) {
		d.log.Warn("reload: this setting changed but only takes effect on restart", "key", key)
	}
	d.log.Info("config reloaded", "config", cfg.Path, "source", cfg.Source, "mode", cfg.Mode,
		"lru_kept", s.LRU != nil && s.LRU == old.LRU, "duration", time.Since(start))
}

// restartKeys lists the settings a reload does not apply.
func restartKeys(a, b *config.Config) []string {
	var keys []string
	for _, k := range []struct {
		key        string
		prev, next any
	}{
		{"listen", a.Listen, b.Listen},
		{"socket_mode", a.SocketMode, b.SocketMode},
		{"socket_group", a.SocketGroup, b.SocketGroup},
		{"metrics_listen", a.MetricsListen, b.MetricsListen},
		{"max_sessions", a.MaxSessions, b.MaxSessions},
		{"session_idle_timeout", a.SessionIdleTimeout, b.SessionIdleTimeout},
	} {
		if k.prev != k.next {
			keys = append(keys, k.key)
		}
	}
	return keys
}

func (d *server) policy(cfg *config.Config, s *stack) *milter.Policy {
	return &milter.Policy{Decider: s.Checker, Config: cfg, Log: d.log}
}

// ping asks the current stack's directory, for /healthz.
func (d *server) ping(ctx context.Context) error { return d.stack.Load().Ping(ctx) }

// socketMode is socket_mode as a file mode (validated by config.Load).
func socketMode(cfg *config.Config) os.FileMode {
	m, err := strconv.ParseUint(cfg.SocketMode, 8, 32)
	if err != nil {
		return 0o660
	}
	return os.FileMode(m)
}

// logConfigError logs each error of a config.Errors on a line of its own.
func logConfigError(log *slog.Logger, msg string, err error) {
	var errs config.Errors
	if !errors.As(err, &errs) {
		log.Error(msg, "err", err)
		return
	}
	for _, e := range errs {
		log.Error(msg, "file", e.File, "line", e.Line, "key", e.Key, "err", e.Msg)
	}
}

// notify tells systemd (when NOTIFY_SOCKET is set) about the daemon's
// state.
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "state", state, "err", err)
	}
}

// notifyReloading sends RELOADING=1 with the MONOTONIC_USEC that
// Type=notify-reload units require.
func notifyReloading(log *slog.Logger) {
	var ts unix.Timespec
	state := daemon.SdNotifyReloading
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err == nil {
		state += fmt.Sprintf("\nMONOTONIC_USEC=%d", ts.Nano()/1000)
	}
	notify(log, state)
}
