// Package metrics holds antespam-milter's Prometheus collectors, on a
// registry of their own so that tests and the check command can ignore
// them. The daemon serves Registry at /metrics when metrics_listen is set.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Registry holds every collector below plus the Go and process collectors.
var Registry = prometheus.NewRegistry()

var (
	// Decisions counts milter decisions by stage ("connect", "rcpt") and
	// verdict ("accept", "reject", "tempfail") and whether report mode
	// turned a reject into a continue.
	Decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antespam_decisions_total",
		Help: "Milter decisions by stage and verdict.",
	}, []string{"stage", "verdict"})

	// Lookups counts answers by the tier that gave them and result
	// ("found", "not_found", "stale", "error").
	Lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antespam_lookups_total",
		Help: "Lookup answers by tier and result.",
	}, []string{"tier", "result"})

	// StaleServed counts found answers served past their TTL because the
	// directory failed.
	StaleServed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "antespam_stale_answers_total",
		Help: "Cached found answers served past their TTL because the directory failed.",
	})

	// DirectoryErrors counts failed directory requests by source.
	DirectoryErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antespam_directory_errors_total",
		Help: "Failed directory requests by source.",
	}, []string{"source"})

	// DirectoryLatency observes directory request durations by source.
	DirectoryLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "antespam_directory_request_seconds",
		Help:    "Directory request latency by source.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"source"})

	// MemcacheErrors counts memcached failures (each turned into a miss).
	MemcacheErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antespam_memcache_errors_total",
		Help: "memcached failures by operation; each is treated as a miss.",
	}, []string{"op"})

	// SessionsActive is the number of open milter sessions.
	SessionsActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "antespam_sessions_active",
		Help: "Open milter sessions.",
	})

	// SessionsTotal counts accepted milter sessions.
	SessionsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "antespam_sessions_total",
		Help: "Milter sessions accepted.",
	})

	// SessionsRefused counts milter connections refused at max_sessions.
	SessionsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "antespam_sessions_refused_total",
		Help: "Milter connections refused because max_sessions was reached.",
	})

	// SessionsWaiting is the number of milter connections accepted beyond
	// max_sessions and waiting for a session slot (at most
	// min(max_sessions, 256); each is refused after a second without one).
	SessionsWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "antespam_sessions_waiting",
		Help: "Milter connections waiting for a session slot at max_sessions.",
	})

	// ConfigReloads counts SIGHUP reloads by result ("ok", "error").
	ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antespam_config_reloads_total",
		Help: "Configuration reloads by result.",
	}, []string{"result"})

	// DirectoryUp is 1 while the last directory request succeeded.
	DirectoryUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "antespam_directory_up",
		Help: "1 when the last directory request succeeded, else 0.",
	})
)

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		Decisions, Lookups, StaleServed, DirectoryErrors, DirectoryLatency,
		MemcacheErrors, SessionsActive, SessionsTotal, SessionsRefused,
		SessionsWaiting, ConfigReloads, DirectoryUp,
	)
}
