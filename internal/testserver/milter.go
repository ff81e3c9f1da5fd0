package testserver

import (
	"net"
	"strconv"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// MilterClient opens milter sessions to d the way an MTA does, with the
// protocol v2 masks (actions ≤ 0x3f, protocol ≤ 0x7f) that the daemon's
// go-milter server accepts. A nil dialer is a net.Dialer with a 5 s
// timeout.
func (d *Daemon) MilterClient(readTimeout time.Duration, dialer gomilter.Dialer) *gomilter.Client {
	if dialer == nil {
		dialer = &net.Dialer{Timeout: 5 * time.Second}
	}
	return gomilter.NewClientWithOptions(d.Network, d.Address, gomilter.ClientOptions{
		Dialer: dialer, ReadTimeout: readTimeout, WriteTimeout: 5 * time.Second,
		ActionMask: 0x3f, ProtocolMask: 0x7f,
	})
}

// Reply renders a milter action as the MTA would see it: "continue", or
// the reply line ("550 5.1.1 <a@b>: ..."), or "action X" for another.
func Reply(a *gomilter.Action) string {
	switch a.Code {
	case gomilter.ActContinue:
		return "continue"
	case gomilter.ActReplyCode:
		return strconv.Itoa(a.SMTPCode) + " " + a.SMTPText
	}
	return "action " + string(rune(a.Code))
}

// AskRcpt sends Connect from client (an IP address), MAIL and RCPT
// TO:<rcpt> on the negotiated session s, failing t on any error, and
// returns the action answering RCPT.
func AskRcpt(t testing.TB, s *gomilter.ClientSession, client, rcpt string) *gomilter.Action {
	t.Helper()
	if _, err := s.Conn("mx.client.test", gomilter.FamilyInet, 25, client); err != nil {
		t.Fatalf("conn: %v", err)
	}
	if _, err := s.Mail("<sender@example.org>", nil); err != nil {
		t.Fatalf("mail: %v", err)
	}
	a, err := s.Rcpt("<"+rcpt+">", nil)
	if err != nil {
		t.Fatalf("rcpt %s: %v", rcpt, err)
	}
	return a
}
