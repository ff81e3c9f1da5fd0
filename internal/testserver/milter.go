package testserver

import (
	"net"
	"strconv"
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
