package milter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/lookup"
)

const (
	replyUnknown = "550 5.1.1 <%s>: Recipient address rejected: User unknown"
	replyHost    = "554 5.7.1 Connection refused: client host is listed"
)

func unknown(addr string) string { return strings.Replace(replyUnknown, "%s", addr, 1) }

// TestTransaction: recipients of every kind in one transaction, each with
// its reply, the session's state kept from one to the next and from one
// message to the next.
func TestTransaction(t *testing.T) {
	src := newMapSource("known@example.org", "@catch.example")
	var logs logBuffer
	_, addr := startServer(t, newPolicy(t, src, testConfig(), logs.logger()), ServerOptions{}, logs.logger())
	s := dial(t, "tcp", addr)

	if got := must(t)(s.Conn("mx.client.test", gomilter.FamilyInet, 4444, "198.51.100.7")); got != "continue" {
		t.Fatalf("Conn = %q", got)
	}
	for msg := range 3 {
		if err := s.Macros(gomilter.CodeMail, "i", "Q"+string(rune('A'+msg)), "{auth_authen}", "alice"); err != nil {
			t.Fatal(err)
		}
		if got := must(t)(s.Mail("sender@else.test", nil)); got != "continue" {
			t.Fatalf("Mail = %q", got)
		}
		for _, tc := range []struct{ rcpt, want string }{
			{"unknown@example.org", unknown("unknown@example.org")},
			{"known@example.org", "continue"},
			{"Unknown@EXAMPLE.org", unknown("Unknown@EXAMPLE.org")},
			{"known+ext@example.org", "continue"},
			{"someone@not-ours.test", "continue"},
			{"anyone@catch.example", "continue"},
			{"postmaster@example.org", "continue"},
			{"", "continue"}, // malformed: left to the MTA
			{"nobody+x@example.org", unknown("nobody+x@example.org")},
		} {
			if err := s.Macros(gomilter.CodeRcpt, "{rcpt_addr}", "ignored"); err != nil {
				t.Fatal(err)
			}
			if got := must(t)(s.Rcpt(tc.rcpt, nil)); got != tc.want {
				t.Errorf("message %d: Rcpt(%q) = %q, want %q", msg, tc.rcpt, got, tc.want)
			}
		}
		switch msg {
		case 0:
			if err := s.Abort(); err != nil {
				t.Fatal(err)
			}
		default:
			_, act, err := s.End()
			if err != nil {
				t.Fatal(err)
			}
			if act.Code != gomilter.ActContinue {
				t.Errorf("End = %q", testserver.Reply(act))
			}
		}
	}
	s.Close()

	lines := logs.lines("decision")
	if len(lines) != 28 {
		t.Fatalf("%d decision lines, want 28:\n%s", len(lines), logs.String())
	}
	if lines[0]["stage"] != "connect" || lines[0]["verdict"] != "accept" {
		t.Errorf("connect logged as %v", lines[0])
	}
	first := lines[1]
	for k, want := range map[string]any{
		"stage": "rcpt", "verdict": "reject", "queue_id": "QA", "auth_user": "alice",
		"client_addr": "198.51.100.7", "client_name": "mx.client.test", "rcpt": "unknown@example.org",
		"tier": "file", "stale": false,
	} {
		if first[k] != want {
			t.Errorf("log %s = %v, want %v (%v)", k, first[k], want, first)
		}
	}
	if _, ok := first["duration"]; !ok {
		t.Errorf("no duration in %v", first)
	}
	if lines[10]["queue_id"] != "QB" {
		t.Errorf("second message logged with queue id %v", lines[10]["queue_id"])
	}
}

// TestConnect: the connect-stage decisions.
func TestConnect(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mut       func(*config.Config)
		host, ip  string
		want      string
		hostCalls int
	}{
		{"listed address", nil, "unknown", "192.0.2.66", replyHost, 1},
		{"listed network", nil, "unknown", "192.0.3.9", replyHost, 1},
		{"listed parent domain", nil, "a.b.spam.test", "198.51.100.1", replyHost, 1},
		{"not listed", nil, "mx.good.test", "198.51.100.1", "continue", 1},
		{"trusted and listed", nil, "unknown", "10.9.8.7", "continue", 0},
		{"hosts disabled", func(c *config.Config) { c.Hosts.Enabled = false }, "unknown", "192.0.2.66", "continue", 0},
		{"custom reply", func(c *config.Config) { c.Hosts.RejectReply = "521 5.7.1 Go away" }, "unknown", "192.0.2.66", "521 5.7.1 Go away", 1},
		{"lookup error accept", nil, "down.test", "198.51.100.99", "continue", 1},
		{"lookup error tempfail", func(c *config.Config) { c.Hosts.OnLookupError = "tempfail" }, "down.test", "198.51.100.99", "451 4.3.0 Temporary lookup failure", 1},
		{"report mode", func(c *config.Config) { c.Mode = "report" }, "unknown", "192.0.2.66", "continue", 1},
		{"ipv6 listed", nil, "unknown", "2001:db8::66", replyHost, 1},
		{"ipv4-mapped", nil, "unknown", "::ffff:192.0.2.66", replyHost, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMapSource("192.0.2.66", "192.0.3.0/24", "spam.test", "2001:db8::66", "10.9.8.7")
			src.fail["198.51.100.99 down.test"] = true
			var mut []func(*config.Config)
			if tc.mut != nil {
				mut = append(mut, tc.mut)
			}
			var logs logBuffer
			_, addr := startServer(t, newPolicy(t, src, testConfig(mut...), logs.logger()), ServerOptions{}, logs.logger())
			s := dial(t, "tcp", addr)
			fam := gomilter.FamilyInet
			if strings.Contains(tc.ip, ":") {
				fam = gomilter.FamilyInet6
			}
			if got := must(t)(s.Conn(tc.host, fam, 25, tc.ip)); got != tc.want {
				t.Errorf("Conn = %q, want %q", got, tc.want)
			}
			if n := src.count(lookup.Host); n != tc.hostCalls {
				t.Errorf("%d host lookups, want %d", n, tc.hostCalls)
			}
			if tc.name == "report mode" {
				l := logs.lines("decision")
				if len(l) != 1 || l[0]["verdict"] != "would_reject" || l[0]["would_reject"] != true {
					t.Errorf("report mode log: %v", l)
				}
			}
			// Recipients are checked whatever happened at connect.
			if got := must(t)(s.Mail("a@b.test", nil)); got != "continue" {
				t.Fatalf("Mail = %q", got)
			}
			want := unknown("unknown@example.org")
			if tc.name == "report mode" {
				want = "continue"
			}
			if got := must(t)(s.Rcpt("unknown@example.org", nil)); got != want {
				t.Errorf("Rcpt = %q, want %q", got, want)
			}
		})
	}
}

// TestConnectIPv6: an IPv6 client address (::1) in the connect packet, and
// one go-milter cannot parse, recovered from Sendmail's {client_addr}. The
// client address travels inside the packet: the milter connection itself
// needs no IPv6.
func TestConnectIPv6(t *testing.T) {
	src := newMapSource("::1")
	pol := newPolicy(t, src, testConfig(), nil)
	_, addr := startServer(t, pol, ServerOptions{}, discard())

	s := dial(t, "tcp", addr)
	if got := must(t)(s.Conn("localhost", gomilter.FamilyInet6, 25, "::1")); got != replyHost {
		t.Errorf("Conn(::1) = %q, want %q", got, replyHost)
	}

	s2 := dial(t, "tcp", addr)
	if err := s2.Macros(gomilter.CodeConn, "{client_addr}", "IPv6:::1", "j", "mx.test"); err != nil {
		t.Fatal(err)
	}
	if got := must(t)(s2.Conn("[IPv6:::1]", gomilter.FamilyInet6, 25, "IPv6:::1")); got != replyHost {
		t.Errorf("Conn(IPv6:::1) = %q, want %q", got, replyHost)
	}
}

func TestClientAddr(t *testing.T) {
	for _, tc := range []struct {
		ip    string
		macro string
		want  string
	}{
		{"192.0.2.1", "", "192.0.2.1"},
		{"::ffff:192.0.2.1", "", "192.0.2.1"},
		{"", "IPv6:2001:db8::1", "2001:db8::1"},
		{"", "[IPv6:2001:db8::1]", "2001:db8::1"},
		{"", "192.0.2.9", "192.0.2.9"},
		{"", "fe80::1%eth0", "fe80::1"},
		{"", "garbage", "invalid IP"},
		{"", "", "invalid IP"},
	} {
		if got := clientAddr(parseIP(tc.ip), tc.macro).String(); got != tc.want {
			t.Errorf("clientAddr(%q, %q) = %q, want %q", tc.ip, tc.macro, got, tc.want)
		}
	}
}

// TestRcptLookupError: a failing directory gets 451, or accept when so
// configured; a lookup that outlives decision_timeout gets 451 in time.
func TestRcptLookupError(t *testing.T) {
	for _, tc := range []struct {
		name, rcpt, want string
		mut              func(*config.Config)
	}{
		{"tempfail", "broken@example.org", "451 4.3.0 <broken@example.org>: Temporary lookup failure", nil},
		{"accept", "broken@example.org", "continue", func(c *config.Config) { c.Recipients.OnLookupError = "accept" }},
		{"timeout", "slow@example.org", "451 4.3.0 <slow@example.org>: Temporary lookup failure",
			func(c *config.Config) { c.DecisionTimeout = 200 * time.Millisecond }},
		{"report", "broken@example.org", "continue", func(c *config.Config) { c.Mode = "report" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMapSource("known@example.org")
			src.fail["broken@example.org"] = true
			src.block["slow@example.org"] = true
			cfg := testConfig()
			if tc.mut != nil {
				tc.mut(cfg)
			}
			_, addr := startServer(t, newPolicy(t, src, cfg, nil), ServerOptions{}, discard())
			s := dial(t, "tcp", addr)
			must(t)(s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
			must(t)(s.Mail("a@b.test", nil))
			start := time.Now()
			if got := must(t)(s.Rcpt(tc.rcpt, nil)); got != tc.want {
				t.Errorf("Rcpt = %q, want %q", got, tc.want)
			}
			if d := time.Since(start); d > cfg.DecisionTimeout+5*time.Second { // generous for a loaded machine
				t.Errorf("answered after %s, decision_timeout %s", d, cfg.DecisionTimeout)
			}
			if got := must(t)(s.Rcpt("known@example.org", nil)); got != "continue" {
				t.Errorf("next Rcpt = %q", got)
			}
		})
	}
}

// TestSetPolicy: a new policy applies to the next decision of a session
// in flight.
func TestSetPolicy(t *testing.T) {
	src := newMapSource()
	srv, addr := startServer(t, newPolicy(t, src, testConfig(), nil), ServerOptions{}, discard())
	s := dial(t, "tcp", addr)
	must(t)(s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
	must(t)(s.Mail("a@b.test", nil))
	if got := must(t)(s.Rcpt("x@example.org", nil)); got != unknown("x@example.org") {
		t.Fatalf("before: %q", got)
	}
	srv.SetPolicy(newPolicy(t, src, testConfig(func(c *config.Config) { c.Mode = "report" }), nil))
	if got := must(t)(s.Rcpt("x@example.org", nil)); got != "continue" {
		t.Fatalf("after: %q", got)
	}
}

// fakeDecider says "not found" to everything, whatever the address.
type fakeDecider struct{}

func (fakeDecider) Recipient(ctx context.Context, addr string) (lookup.Decision, error) {
	return lookup.Decision{Item: addr, Tier: "fake"}, nil
}

func (fakeDecider) Host(ctx context.Context, addr netip.Addr, hostname string) (lookup.Decision, error) {
	return lookup.Decision{Item: addr.String(), Tier: "fake"}, nil
}

// TestReplyInjection: what the client sends never reaches the reply with
// CR, LF, NUL or a single %.
func TestReplyInjection(t *testing.T) {
	_, addr := startServer(t, &Policy{Decider: fakeDecider{}, Config: testConfig()}, ServerOptions{}, discard())
	s := dial(t, "tcp", addr)
	must(t)(s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"))
	must(t)(s.Mail("a@b.test", nil))
	for _, rcpt := range []string{
		"a%b@example.org",
		"%s%n%d@example.org",
		"x\r\n250 2.1.5 Ok@example.org",
		"x\n.\nQUIT@example.org",
		strings.Repeat("%", 2000) + "@example.org",
	} {
		got := must(t)(s.Rcpt(rcpt, nil))
		if strings.ContainsAny(got, "\r\n\x00") {
			t.Errorf("Rcpt(%q) = %q: control character", rcpt, got)
		}
		if strings.Contains(strings.ReplaceAll(got, "%%", ""), "%") {
			t.Errorf("Rcpt(%q) = %q: single %%", rcpt, got)
		}
		if !strings.HasPrefix(got, "550 5.1.1 <") || len(got) > 1000 {
			t.Errorf("Rcpt(%q) = %q", rcpt, got)
		}
	}
}

// panicDecider panics on every question.
type panicDecider struct{}

func (panicDecider) Recipient(ctx context.Context, addr string) (lookup.Decision, error) {
	panic("bug in a tier")
}

func (panicDecider) Host(ctx context.Context, addr netip.Addr, hostname string) (lookup.Decision, error) {
	panic("bug in a tier")
}

// TestDeciderPanic: a panicking lookup is answered as a failed one, and the
// session goes on.
func TestDeciderPanic(t *testing.T) {
	_, addr := startServer(t, &Policy{Decider: panicDecider{}, Config: testConfig()}, ServerOptions{}, discard())
	s := dial(t, "tcp", addr)
	if got := must(t)(s.Conn("h", gomilter.FamilyInet, 25, "192.0.2.1")); got != "continue" {
		t.Errorf("Conn = %q (hosts.on_lookup_error = accept)", got)
	}
	must(t)(s.Mail("a@b.test", nil))
	for range 2 {
		if got := must(t)(s.Rcpt("a@example.org", nil)); got != "451 4.3.0 <a@example.org>: Temporary lookup failure" {
			t.Errorf("Rcpt = %q", got)
		}
	}
}

// TestSetPolicyUnderLoad: swapping the policy while sessions decide fails
// none of them; each decision uses one policy or the other, whole.
func TestSetPolicyUnderLoad(t *testing.T) {
	src := newMapSource("known@example.org")
	mk := func(text string) *Policy {
		return newPolicy(t, src, testConfig(func(c *config.Config) { c.Recipients.RejectReply = "550 5.1.1 " + text + " {rcpt}" }), nil)
	}
	a, b := mk("policy-a"), mk("policy-b")
	srv, addr := startServer(t, a, ServerOptions{}, discard())

	stop := make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				swapped <- n
				return
			case <-time.After(2 * time.Millisecond):
			}
			if n%2 == 0 {
				srv.SetPolicy(b)
			} else {
				srv.SetPolicy(a)
			}
			n++
		}
	}()

	const workers, rcpts = 8, 150
	errs := make(chan error, workers)
	counts := make(chan [2]int, workers)
	for range workers {
		go func() {
			s, err := gomilter.NewClientWithOptions("tcp", addr, clientOpts).Session()
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			var c [2]int
			for i := range rcpts {
				if i%50 == 0 {
					if _, err := s.Conn("h", gomilter.FamilyInet, 25, "10.0.0.1"); err != nil {
						errs <- err
						return
					}
					if _, err := s.Mail("a@b.test", nil); err != nil {
						errs <- err
						return
					}
				}
				act, err := s.Rcpt("x@example.org", nil)
				if err != nil {
					errs <- err
					return
				}
				switch testserver.Reply(act) {
				case "550 5.1.1 policy-a x@example.org":
					c[0]++
				case "550 5.1.1 policy-b x@example.org":
					c[1]++
				default:
					errs <- errors.New("unexpected reply " + testserver.Reply(act))
					return
				}
			}
			counts <- c
			errs <- nil
		}()
	}
	var total [2]int
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
			continue
		}
		c := <-counts
		total[0] += c[0]
		total[1] += c[1]
	}
	close(stop)
	n := <-swapped
	if total[0]+total[1] != workers*rcpts && !t.Failed() {
		t.Errorf("%d replies, want %d", total[0]+total[1], workers*rcpts)
	}
	t.Logf("%d swaps; replies by policy a %d, b %d", n, total[0], total[1])
}

// TestShallowDecisions: a decision that needs neither a lookup nor a log
// line is answered on the session's goroutine (no worker was ever handed
// one, so the session has no done channel); the others go to a worker.
func TestShallowDecisions(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	on := testConfig()
	off := testConfig(func(c *config.Config) { c.Recipients.Enabled, c.Hosts.Enabled = false, false })
	for _, tc := range []struct {
		name    string
		cfg     *config.Config
		log     *slog.Logger
		stage   string
		client  string
		shallow bool
	}{
		{"recipients off", off, nil, stageRcpt, "192.0.2.1", true},
		{"hosts off", off, nil, stageConnect, "192.0.2.1", true},
		{"trusted, not logged", on, quiet, stageConnect, "10.0.0.1", true},
		{"no address, not logged", on, quiet, stageConnect, "", true},
		{"trusted, logged", on, discardInfo(), stageConnect, "10.0.0.1", false},
		{"lookup", on, quiet, stageConnect, "192.0.2.1", false},
		{"rcpt lookup", on, quiet, stageRcpt, "10.0.0.1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPolicy(t, newMapSource(), tc.cfg, tc.log)
			srv := NewServer(p, ServerOptions{}, quiet)
			t.Cleanup(func() { srv.Shutdown(context.Background()) })
			s := &session{srv: srv}
			if tc.client != "" {
				s.client = netip.MustParseAddr(tc.client)
			}
			resp, err := s.decide(p, tc.stage, "x@example.org")
			if err != nil || resp == nil {
				t.Fatalf("decide = %v, %v", resp, err)
			}
			if got := s.done == nil; got != tc.shallow {
				t.Errorf("answered on the session goroutine = %v, want %v", got, tc.shallow)
			}
		})
	}
}

// discardInfo is a logger with Info lines enabled that writes nowhere.
func discardInfo() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
