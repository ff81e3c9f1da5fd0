package milter

import (
	"context"
	"log/slog"
	"net/netip"

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
	// Log receives one line per decision; nil means the Server's logger.
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
