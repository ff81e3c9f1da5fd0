package milter

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/lookup"
)

// Verdicts of a decision.
const (
	VerdictAccept   = "accept"
	VerdictReject   = "reject"
	VerdictTempfail = "tempfail"
)

// Reply is the outcome of one decision: what the MTA is told and why.
type Reply struct {
	// Verdict is VerdictAccept, VerdictReject or VerdictTempfail.
	Verdict string
	// Code is the whole SMTP reply line for a reject or a tempfail, such
	// as "550 5.1.1 <a@example.org>: Recipient address rejected: User
	// unknown", already sanitised and %-escaped for the MTA; "" for an
	// accept.
	Code string
	// Reason says why, for the log.
	Reason string
	// Err is the lookup's error, nil when the Decider answered; Reason
	// includes it.
	Err error
}

// Limits on reply texts: SMTP reply lines are at most 512 octets with the
// CRLF (RFC 5321 section 4.5.3.1.5); the %-escaping may double some bytes,
// and Postfix and Sendmail undo it.
const (
	maxRcptInReply = 256
	maxReplyText   = 400
)

// RcptReply maps the outcome of a recipient lookup to a reply. This
// function and HostReply are the one place outcomes become SMTP replies,
// for the milter and for "antespam-milter check" alike:
//
//	recipient found, not ours, always accepted → accept
//	recipient not found                       → recipients.reject_reply (550 5.1.1), {rcpt} replaced
//	lookup error                              → recipients.tempfail_reply (451 4.3.0),
//	                                            or accept when recipients.on_lookup_error = "accept"
//	malformed address (lookup.ErrBadAddress)  → accept: the MTA judges syntax
//
// A malformed address is accepted on purpose: the MTA has already taken it
// as an RCPT argument and knows its own rules (bare "postmaster", local
// parts it qualifies with its own domain, source routes); a milter that
// rejected what it could not parse would bounce mail for real users.
//
// The verdict does not depend on the mode: in report mode the session logs
// it and continues.
func (p *Policy) RcptReply(addr string, d lookup.Decision, err error) Reply {
	reply := p.rcptReply(addr, d, err)
	reply.Err = err
	return reply
}

func (p *Policy) rcptReply(addr string, d lookup.Decision, err error) Reply {
	r := &p.Config.Recipients
	switch {
	case err != nil && errors.Is(err, lookup.ErrBadAddress):
		return Reply{Verdict: VerdictAccept, Reason: fmt.Sprintf("left to the MTA: %v", err)}
	case err != nil && r.OnLookupError == "accept":
		return Reply{Verdict: VerdictAccept, Reason: fmt.Sprintf("lookup failed, accepted (recipients.on_lookup_error = accept): %v", err)}
	case err != nil:
		return Reply{
			Verdict: VerdictTempfail,
			Code:    replyLine(r.TempfailReply, defaults.Recipients.TempfailReply, '4', addr),
			Reason:  fmt.Sprintf("lookup failed: %v", err),
		}
	case d.Found:
		return Reply{Verdict: VerdictAccept, Reason: rcptFoundReason(d.Tier)}
	default:
		return Reply{
			Verdict: VerdictReject,
			Code:    replyLine(r.RejectReply, defaults.Recipients.RejectReply, '5', addr),
			Reason:  "unknown recipient",
		}
	}
}

func rcptFoundReason(tier string) string {
	switch tier {
	case lookup.TierNotOurs:
		return "domain not checked"
	case lookup.TierAlways:
		return "always accepted"
	}
	return "recipient exists"
}

// HostReply maps the outcome of a client host lookup to a reply:
//
//	host not listed → accept
//	host listed     → hosts.reject_reply (554 5.7.1)
//	lookup error    → accept (hosts.on_lookup_error = "accept", the default),
//	                  or hosts.tempfail_reply (451 4.3.0)
//
// Both MTAs replace the text of a connect-stage reject with their own
// ("554 <host> ESMTP not accepting connections" in Postfix, "... not
// accepting messages" in Sendmail); the text only reaches their logs.
func (p *Policy) HostReply(d lookup.Decision, err error) Reply {
	reply := p.hostReply(d, err)
	reply.Err = err
	return reply
}

func (p *Policy) hostReply(d lookup.Decision, err error) Reply {
	h := &p.Config.Hosts
	switch {
	case err != nil && errors.Is(err, lookup.ErrBadAddress):
		return Reply{Verdict: VerdictAccept, Reason: fmt.Sprintf("not checked: %v", err)}
	case err != nil && h.OnLookupError == "tempfail":
		return Reply{
			Verdict: VerdictTempfail,
			Code:    replyLine(h.TempfailReply, defaults.Hosts.TempfailReply, '4', ""),
			Reason:  fmt.Sprintf("lookup failed: %v", err),
		}
	case err != nil:
		return Reply{Verdict: VerdictAccept, Reason: fmt.Sprintf("lookup failed, accepted (hosts.on_lookup_error = accept): %v", err)}
	case d.Found:
		return Reply{
			Verdict: VerdictReject,
			Code:    replyLine(h.RejectReply, defaults.Hosts.RejectReply, '5', ""),
			Reason:  "client host is listed",
		}
	default:
		return Reply{Verdict: VerdictAccept, Reason: "client host not listed"}
	}
}

var defaults = config.Default()

// replyLine builds the reply sent to the MTA from a configured template:
// a template that is not a single-line reply of the given class with
// agreeing codes (config.ValidReply; config validation prevents this, a
// Policy built by hand may not) is replaced by the default; {rcpt} is
// replaced by the address, stripped of control characters and bounded;
// the result is bounded and every % is doubled, as Sendmail and Postfix
// read it as a format string.
func replyLine(tmpl, fallback string, class byte, rcpt string) string {
	tmpl = cleanText(tmpl, maxReplyText)
	if config.ValidReply(tmpl, class) != nil {
		tmpl = fallback
	}
	line := tmpl
	if strings.Contains(line, "{rcpt}") {
		line = strings.ReplaceAll(line, "{rcpt}", cleanText(rcpt, maxRcptInReply))
	}
	line = cleanText(line, maxReplyText)
	if config.ValidReply(line, class) != nil {
		// The address left no text after the codes ("550 5.1.1 {rcpt}"
		// with an empty address, say): keep the codes, say something.
		line = tmpl[:strings.IndexByte(tmpl[4:], ' ')+5] + genericText[class]
	}
	return strings.ReplaceAll(line, "%", "%%")
}

var genericText = map[byte]string{'4': "Temporary failure", '5': "Rejected"}

// cleanText drops control characters (CR, LF, NUL and the rest of C0, and
// DEL), turns invalid UTF-8 into '?' and cuts s to at most max bytes on a
// character boundary.
func cleanText(s string, max int) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean && len(s) <= max {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			continue
		}
		if r == utf8.RuneError {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
