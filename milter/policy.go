package milter

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/lookup"
)

// Decider answers the two questions the milter asks. *lookup.Checker is
// the implementation; tests use small fakes.
type Decider interface {
	// Recipient reports whether addr (as given to RCPT TO) is accepted.
	Recipient(ctx context.Context, addr string) (lookup.Decision, error)
	// Host reports whether the client at addr, named hostname by the MTA,
	// is listed as malign.
	Host(ctx context.Context, addr netip.Addr, hostname string) (lookup.Decision, error)
}

var _ Decider = (*lookup.Checker)(nil)

// Policy is everything a decision depends on: who answers, the
// configuration (trusted networks, what is checked, the replies, mode,
// decision_timeout) and where decisions are logged. A Server holds one
// Policy at a time and swaps it atomically on SetPolicy (SIGHUP); each
// callback of a session loads the current one, so a reload applies to the
// next decision and sessions in flight carry on. A Policy is never
// modified once in use.
type Policy struct {
	Decider Decider
	Config  *config.Config
	// Log receives one line per decision, and the Server's own lines while
	// this Policy is in force; nil means the Server's logger.
	Log *slog.Logger
}

// Trusted reports whether a is in trusted_networks: its connection is not
// checked (its recipients still are).
func (p *Policy) Trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, n := range p.Config.TrustedPrefixes {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// Report reports whether the policy is in report mode: decisions are
// computed and logged, but the milter always continues.
func (p *Policy) Report() bool { return p.Config.Mode == "report" }

// Tiers of the decisions a Policy makes without asking the Decider.
const (
	// TierTrusted: the client is in trusted_networks.
	TierTrusted = "trusted"
	// TierDisabled: the check is off ([hosts] or [recipients] enabled =
	// false). The session neither logs nor counts such a decision.
	TierDisabled = "disabled"
)

// DecideRcpt is the RCPT-stage decision, the one path shared by the
// session and the check command: with [recipients] enabled it asks the
// Decider within decision_timeout (ctx is the parent), answers a panic as
// a failed lookup, and maps the outcome with RcptReply. The Decision's
// Item is rcpt when the Decider did not name it, and Duration is set.
func (p *Policy) DecideRcpt(ctx context.Context, rcpt string) (lookup.Decision, Reply) {
	if !p.Config.Recipients.Enabled {
		return lookup.Decision{Item: rcpt, Tier: TierDisabled},
			Reply{Verdict: VerdictAccept, Reason: "not checked: recipients.enabled = false"}
	}
	ctx, cancel := p.decisionContext(ctx)
	start := time.Now()
	d, err := p.askRecipient(ctx, rcpt)
	cancel()
	if d.Duration == 0 {
		d.Duration = time.Since(start)
	}
	if d.Item == "" {
		d.Item = rcpt
	}
	return d, p.RcptReply(rcpt, d, err)
}

// DecideHost is the connect-stage decision, shared like DecideRcpt: a
// client with no IP address (a local connection) or in trusted_networks
// is accepted without a lookup; any other is asked about within
// decision_timeout and the outcome mapped with HostReply.
func (p *Policy) DecideHost(ctx context.Context, addr netip.Addr, hostname string) (lookup.Decision, Reply) {
	switch {
	case !p.Config.Hosts.Enabled:
		return lookup.Decision{Item: lookup.HostKeyName(addr, hostname), Tier: TierDisabled},
			Reply{Verdict: VerdictAccept, Reason: "not checked: hosts.enabled = false"}
	case !addr.IsValid():
		return lookup.Decision{}, Reply{Verdict: VerdictAccept, Reason: "no client address"}
	case p.Trusted(addr):
		return lookup.Decision{Item: lookup.HostKeyName(addr, hostname), Tier: TierTrusted},
			Reply{Verdict: VerdictAccept, Reason: "trusted network"}
	}
	ctx, cancel := p.decisionContext(ctx)
	start := time.Now()
	d, err := p.askHost(ctx, addr, hostname)
	cancel()
	if d.Duration == 0 {
		d.Duration = time.Since(start)
	}
	if d.Item == "" {
		// A Decider other than the Checker may not name the question:
		// name it as the Checker does.
		d.Item = lookup.HostKeyName(addr, hostname)
	}
	return d, p.HostReply(d, err)
}

// decisionContext bounds one decision by decision_timeout (none when 0).
func (p *Policy) decisionContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if t := p.Config.DecisionTimeout; t > 0 {
		c := &lazyDeadline{parent: ctx, deadline: time.Now().Add(t)}
		return c, c.end
	}
	return context.WithCancel(ctx)
}

// lazyDeadline is the context of one decision: parent with a deadline,
// whose Done channel (and timer) is only made when asked for. Most
// decisions are LRU hits that never wait on ctx.Done(); for them a
// context.WithTimeout's allocations, timer and registration with the
// parent were a per-decision cost (about 1.5% of the daemon's CPU under
// load) for nothing. Err reports the deadline without a timer.
type lazyDeadline struct {
	parent   context.Context
	deadline time.Time

	mu     sync.Mutex
	inner  context.Context // made by the first Done
	cancel context.CancelFunc
	ended  bool
}

var _ context.Context = (*lazyDeadline)(nil)

// Deadline is the earlier of the decision's and the parent's.
func (c *lazyDeadline) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

// Done makes, the first time, a context.WithDeadline of the parent to
// wait on (cancelled at once when the decision has already ended).
func (c *lazyDeadline) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		c.inner, c.cancel = context.WithDeadline(c.parent, c.deadline)
		if c.ended {
			c.cancel()
		}
	}
	return c.inner.Done()
}

// Err is the parent's error, context.DeadlineExceeded once the deadline
// has passed, or context.Canceled once the decision has ended.
func (c *lazyDeadline) Err() error {
	c.mu.Lock()
	inner, ended := c.inner, c.ended
	c.mu.Unlock()
	if inner != nil {
		return inner.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	if ended {
		return context.Canceled
	}
	return nil
}

func (c *lazyDeadline) Value(key any) any { return c.parent.Value(key) }

// end is the decision's cancel function.
func (c *lazyDeadline) end() {
	c.mu.Lock()
	c.ended = true
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
}

// askRecipient and askHost call the Decider and turn a panic into a
// lookup error, so that it gets the reply a failed lookup gets (go-milter
// would recover it and close the connection, and the MTA would apply its
// default action).
func (p *Policy) askRecipient(ctx context.Context, rcpt string) (d lookup.Decision, err error) {
	defer recoverLookup(&err)
	return p.Decider.Recipient(ctx, rcpt)
}

func (p *Policy) askHost(ctx context.Context, addr netip.Addr, hostname string) (d lookup.Decision, err error) {
	defer recoverLookup(&err)
	return p.Decider.Host(ctx, addr, hostname)
}

func recoverLookup(err *error) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("lookup panicked: %v", v)
	}
}
