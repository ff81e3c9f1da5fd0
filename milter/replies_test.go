package milter

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/lookup"
)

func TestRcptReply(t *testing.T) {
	lookupErr := errors.New("ldap: connection refused")
	badAddr := fmt.Errorf("%w: no domain", lookup.ErrBadAddress)
	for _, tc := range []struct {
		name    string
		mut     func(*config.Config)
		addr    string
		d       lookup.Decision
		err     error
		verdict string
		code    string
	}{
		{"exists", nil, "a@example.org", lookup.Decision{Found: true, Tier: "ldap"}, nil, VerdictAccept, ""},
		{"not ours", nil, "a@else.test", lookup.Decision{Found: true, Tier: lookup.TierNotOurs}, nil, VerdictAccept, ""},
		{"unknown", nil, "a@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown"},
		{"unknown custom", func(c *config.Config) { c.Recipients.RejectReply = "550 5.1.1 No such user here: {rcpt}" }, "a@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 No such user here: a@example.org"},
		{"lookup error", nil, "a@example.org", lookup.Decision{}, lookupErr, VerdictTempfail, "451 4.3.0 <a@example.org>: Temporary lookup failure"},
		{"lookup error accept", func(c *config.Config) { c.Recipients.OnLookupError = "accept" }, "a@example.org", lookup.Decision{}, lookupErr, VerdictAccept, ""},
		{"bad address", nil, "a", lookup.Decision{}, badAddr, VerdictAccept, ""},
		{"bad address tempfail config", nil, "<>", lookup.Decision{}, badAddr, VerdictAccept, ""},
		{"percent", nil, "100%@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <100%%@example.org>: Recipient address rejected: User unknown"},
		{"crlf", nil, "a\r\n250 ok@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <a250 ok@example.org>: Recipient address rejected: User unknown"},
		{"nul", nil, "a\x00b@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <ab@example.org>: Recipient address rejected: User unknown"},
		{"invalid utf-8", nil, "a\xffb@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <a?b@example.org>: Recipient address rejected: User unknown"},
		{"class mismatch falls back", func(c *config.Config) { c.Recipients.RejectReply = "550 4.1.1 oops {rcpt}" }, "a@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown"},
		{"tempfail as reject falls back", func(c *config.Config) { c.Recipients.RejectReply = "451 4.3.0 {rcpt}" }, "a@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown"},
		{"garbage falls back", func(c *config.Config) { c.Recipients.TempfailReply = "try later" }, "a@example.org", lookup.Decision{}, lookupErr, VerdictTempfail, "451 4.3.0 <a@example.org>: Temporary lookup failure"},
		{"report mode same verdict", func(c *config.Config) { c.Mode = "report" }, "a@example.org", lookup.Decision{}, nil, VerdictReject, "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			if tc.mut != nil {
				tc.mut(c)
			}
			p := &Policy{Config: c}
			r := p.RcptReply(tc.addr, tc.d, tc.err)
			if r.Verdict != tc.verdict || r.Code != tc.code {
				t.Errorf("RcptReply = %q %q, want %q %q", r.Verdict, r.Code, tc.verdict, tc.code)
			}
			if r.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

func TestHostReply(t *testing.T) {
	lookupErr := errors.New("ldap: timeout")
	for _, tc := range []struct {
		name    string
		onErr   string
		d       lookup.Decision
		err     error
		verdict string
		code    string
	}{
		{"listed", "accept", lookup.Decision{Found: true}, nil, VerdictReject, "554 5.7.1 Connection refused: client host is listed"},
		{"not listed", "accept", lookup.Decision{}, nil, VerdictAccept, ""},
		{"error accept", "accept", lookup.Decision{}, lookupErr, VerdictAccept, ""},
		{"error tempfail", "tempfail", lookup.Decision{}, lookupErr, VerdictTempfail, "451 4.3.0 Temporary lookup failure"},
		{"bad address", "tempfail", lookup.Decision{}, fmt.Errorf("%w: invalid", lookup.ErrBadAddress), VerdictAccept, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Policy{Config: testConfig(func(c *config.Config) { c.Hosts.OnLookupError = tc.onErr })}
			r := p.HostReply(tc.d, tc.err)
			if r.Verdict != tc.verdict || r.Code != tc.code {
				t.Errorf("HostReply = %q %q, want %q %q", r.Verdict, r.Code, tc.verdict, tc.code)
			}
		})
	}
}

// TestReplyLineBounded: whatever the address, the reply is one bounded
// line with agreeing codes and no single %.
func TestReplyLineBounded(t *testing.T) {
	for _, addr := range []string{
		strings.Repeat("a", 10000) + "@example.org",
		strings.Repeat("é", 5000),
		strings.Repeat("%", 5000),
		"\r\n\r\n",
	} {
		got := replyLine(defaults.Recipients.RejectReply, defaults.Recipients.RejectReply, '5', addr)
		if n := len(strings.ReplaceAll(got, "%%", "%")); n > maxReplyText {
			t.Errorf("reply of %d bytes", n)
		}
		if !replyRE.MatchString(got) || strings.ContainsAny(got, "\r\n\x00") {
			t.Errorf("reply %q", got)
		}
		if strings.Contains(strings.ReplaceAll(got, "%%", ""), "%") {
			t.Errorf("single %% in %q", got)
		}
	}
}

func FuzzReplyLine(f *testing.F) {
	f.Add(defaults.Recipients.RejectReply, "a@example.org")
	f.Add("550 5.1.1 {rcpt} {rcpt}", "%\r\n")
	f.Add("450 4.1.1 x", "\xff\xfe")
	f.Fuzz(func(t *testing.T, tmpl, addr string) {
		got := replyLine(tmpl, defaults.Recipients.RejectReply, '5', addr)
		m := replyRE.FindStringSubmatch(got)
		if m == nil || m[1][0] != '5' || m[1] != m[2] {
			t.Fatalf("replyLine(%q, %q) = %q: not a 5xx reply with agreeing codes", tmpl, addr, got)
		}
		if strings.ContainsAny(got, "\r\n\x00") || strings.Contains(strings.ReplaceAll(got, "%%", ""), "%") {
			t.Fatalf("replyLine(%q, %q) = %q: unsafe", tmpl, addr, got)
		}
		if len(got) > 2*maxReplyText {
			t.Fatalf("replyLine(%q, %q): %d bytes", tmpl, addr, len(got))
		}
	})
}

// TestDecide: the decision path shared by the session and the check
// command: what is checked, trusted networks, the item fallback, the
// deadline and a panicking Decider.
func TestDecide(t *testing.T) {
	src := newMapSource("known@example.org", "192.0.2.66")
	src.block["slow@example.org"] = true
	src.fail["198.51.100.99"] = true
	cfg := testConfig(func(c *config.Config) { c.DecisionTimeout = 100 * time.Millisecond })
	p := newPolicy(t, src, cfg, nil)
	off := newPolicy(t, src, testConfig(func(c *config.Config) { c.Recipients.Enabled, c.Hosts.Enabled = false, false }), nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name          string
		p             *Policy
		host          bool // DecideHost(ip, hostname), else DecideRcpt(rcpt)
		rcpt          string
		ip, hostname  string
		verdict, tier string
		item          string
		err           bool
	}{
		{name: "known", p: p, rcpt: "known@example.org", verdict: VerdictAccept, tier: "file", item: "known@example.org"},
		{name: "unknown", p: p, rcpt: "<Nobody@Example.org>", verdict: VerdictReject, tier: "file", item: "nobody@example.org"},
		{name: "malformed", p: p, rcpt: "", verdict: VerdictAccept, err: true},
		{name: "deadline", p: p, rcpt: "slow@example.org", verdict: VerdictTempfail, item: "slow@example.org", err: true},
		{name: "recipients off", p: off, rcpt: "nobody@example.org", verdict: VerdictAccept, tier: TierDisabled, item: "nobody@example.org"},
		{name: "host listed", host: true, p: p, ip: "192.0.2.66", hostname: "mx.test", verdict: VerdictReject, tier: "file", item: "192.0.2.66 mx.test"},
		{name: "host trusted", host: true, p: p, ip: "10.1.2.3", verdict: VerdictAccept, tier: TierTrusted, item: "10.1.2.3"},
		{name: "host error", host: true, p: p, ip: "198.51.100.99", verdict: VerdictAccept, item: "198.51.100.99", err: true},
		{name: "host local", host: true, p: p, verdict: VerdictAccept},
		{name: "hosts off", host: true, p: off, ip: "192.0.2.66", verdict: VerdictAccept, tier: TierDisabled, item: "192.0.2.66"},
		{name: "panic", p: &Policy{Decider: panicDecider{}, Config: cfg}, rcpt: "a@example.org", verdict: VerdictTempfail, item: "a@example.org", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				d lookup.Decision
				r Reply
			)
			start := time.Now()
			if !tc.host {
				d, r = tc.p.DecideRcpt(ctx, tc.rcpt)
			} else {
				var a netip.Addr
				if tc.ip != "" {
					a = netip.MustParseAddr(tc.ip)
				}
				d, r = tc.p.DecideHost(ctx, a, tc.hostname)
			}
			if time.Since(start) > time.Second {
				t.Errorf("took %s, decision_timeout %s", time.Since(start), cfg.DecisionTimeout)
			}
			if r.Verdict != tc.verdict || d.Tier != tc.tier || d.Item != tc.item || (r.Err != nil) != tc.err {
				t.Errorf("got %s tier %q item %q err %v, want %s tier %q item %q err %v",
					r.Verdict, d.Tier, d.Item, r.Err, tc.verdict, tc.tier, tc.item, tc.err)
			}
			if r.Reason == "" {
				t.Error("no reason")
			}
			if tc.tier != TierDisabled && tc.tier != TierTrusted && (!tc.host || tc.ip != "") && d.Duration <= 0 {
				t.Error("no duration")
			}
		})
	}
}

// replyRE is what Postfix accepts from a milter: a 3-digit code, a space,
// an enhanced status code of the same class, a space and text. It is the
// oracle config.ValidReply, written out for speed, is held to.
var replyRE = regexp.MustCompile(`^([245])[0-9][0-9] ([245])\.[0-9]{1,3}\.[0-9]{1,3} \S`)

// TestValidReply: config.ValidReply, which replyLine relies on, accepts
// exactly what replyRE matches with the class asked for and agreeing codes.
func TestValidReply(t *testing.T) {
	lines := []string{
		"550 5.1.1 x", "550 5.1.1 <a@b>: no", "451 4.3.0 Temporary", "554 5.7.1 Go away", "250 2.0.0 ok",
		"550 5.1.1", "550 5.1.1 ", "550 5.1.1  x", "550 5.1.1\tx", "550 4.1.1 x", "450 5.1.1 x",
		"550 5.123.456 x", "550 5.1234.1 x", "550 5.1.1234 x", "550 5..1 x", "550 5.1. x", "55 5.1.1 x",
		"5500 5.1.1 x", "550-5.1.1 x", "550 5,1,1 x", "a50 5.1.1 x", "550 5.1.1 é", "650 6.1.1 x",
		"550 5.1.1 \x00", "550 5.1.1 \x7f", "550 5.1.1 \v", "", "5", "550 5.0.0 x\r\n",
	}
	for _, line := range lines {
		for _, class := range []byte("2456") {
			m := replyRE.FindStringSubmatch(line)
			want := m != nil && m[1][0] == class && m[1] == m[2]
			if got := config.ValidReply(line, class) == nil; got != want {
				t.Errorf("config.ValidReply(%q, %c) = %v, replyRE says %v", line, class, got, want)
			}
		}
	}
}

// FuzzValidReply holds config.ValidReply to replyRE on any input.
func FuzzValidReply(f *testing.F) {
	for _, s := range []string{"550 5.1.1 x", "451 4.3.0 <a>: t", "550 5.12.123 y", "550 5.1.1\tx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		for _, class := range []byte("245") {
			m := replyRE.FindStringSubmatch(line)
			want := m != nil && m[1][0] == class && m[1] == m[2]
			if got := config.ValidReply(line, class) == nil; got != want {
				t.Errorf("config.ValidReply(%q, %c) = %v, replyRE says %v", line, class, got, want)
			}
		}
	})
}
