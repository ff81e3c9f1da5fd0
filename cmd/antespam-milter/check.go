package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/antespam/antespam-milter/lookup"
	"github.com/antespam/antespam-milter/milter"
)

// check asks the same stack the daemon builds, and maps the answers to
// replies with the milter's own mapping, for each item on the command
// line: one line per item (or one JSON object with -json).
func check(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var asJSON, noCache *bool
	cfg, items, st, ok := itemCommand("check", args, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print one JSON object per item")
		noCache = fs.Bool("no-cache", false, "ask the directory directly, without the LRU and memcached tiers")
	})
	if !ok {
		return st
	}
	log := newLogger(stderr, "text", "warn")
	s, err := compose(cfg, log, composeOptions{noCache: *noCache})
	if err != nil {
		// A list that cannot be read, an LDAP URL that does not parse:
		// the config's fault, and 1 would read as "rejected".
		fmt.Fprintf(stderr, "antespam-milter: %v\n", err)
		return exitUsage
	}
	defer s.Close()

	policy := &milter.Policy{Decider: s.Checker, Config: cfg, Log: log}
	status := exitOK
	for _, it := range items {
		r := decide(ctx, policy, it)
		if err := r.print(stdout, *asJSON); err != nil {
			fmt.Fprintf(stderr, "antespam-milter: %v\n", err)
			return exitFailure
		}
		switch {
		case r.Verdict == milter.VerdictTempfail:
			status = exitTempfail
		case r.Verdict == milter.VerdictReject && status == exitOK:
			status = exitFailure
		}
	}
	return status
}

// checkResult is one line of check's output.
type checkResult struct {
	Item       string  `json:"item"`
	Verdict    string  `json:"verdict"`
	Reply      string  `json:"reply"`
	Tier       string  `json:"tier"`
	Stale      bool    `json:"stale"`
	DurationMS float64 `json:"duration_ms"`
	Reason     string  `json:"reason,omitempty"`

	duration time.Duration
}

// decide answers one item as the daemon's session would, through the
// same Policy.DecideRcpt and Policy.DecideHost.
func decide(ctx context.Context, p *milter.Policy, it item) checkResult {
	var (
		d     lookup.Decision
		reply milter.Reply
	)
	if it.kind == "host" {
		d, reply = p.DecideHost(ctx, it.ip, it.hostname)
	} else {
		d, reply = p.DecideRcpt(ctx, it.addr)
	}
	r := checkResult{
		Item:       it.String(),
		Verdict:    reply.Verdict,
		Reply:      strings.ReplaceAll(reply.Code, "%%", "%"),
		Tier:       d.Tier,
		Stale:      d.Stale,
		DurationMS: float64(d.Duration.Microseconds()) / 1000,
		Reason:     reply.Reason,
		duration:   d.Duration,
	}
	if d.Item != "" {
		r.Item = d.Item
	}
	if d.Stale {
		r.Tier = "stale"
	}
	if err := reply.Err; err != nil {
		r.Tier = "error"
		if errors.Is(err, lookup.ErrBadAddress) {
			r.Tier = "bad-address"
		}
	}
	if r.Reply == "" {
		r.Reply = "-"
	}
	if r.Tier == "" {
		r.Tier = "-"
	}
	return r
}

func (r checkResult) print(w io.Writer, asJSON bool) error {
	if asJSON {
		if r.Reply == "-" {
			r.Reply = "" // the daemon continues: no reply
		}
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode result: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Verdict, r.Item, r.Reply, r.Tier, fmtDuration(r.duration))
	return err
}

// fmtDuration rounds to what a reader wants: 45µs, 1.2ms, 2.5s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
