// Package milter is antespam-milter's protocol glue: it speaks the milter
// protocol (through github.com/emersion/go-milter) to Postfix or Sendmail,
// asks a Decider the two questions at the two stages that matter, and turns
// the answers into replies. It decides nothing itself.
//
// Stages. Only Connect, MAIL and RCPT are used; HELO, headers, end of
// headers and body are masked off in negotiation (see Protocol), and the
// macros read are asked for with the symbol list (see Macros), so the
// MTA's macro settings need no change. go-milter replaces its macro map at
// every stage: what a later stage needs is copied into the session.
//   - Connect: a client in trusted_networks, or with no IP address (a
//     local connection), is not looked up; with [hosts] enabled every
//     other client is, and a listed one gets hosts.reject_reply.
//   - MAIL: the queue id (i) and the authenticated user ({auth_authen})
//     are recorded for the log.
//   - RCPT: with [recipients] enabled every recipient, taken from the RCPT
//     argument, is looked up; a trusted client's recipients too.
//
// Decisions are made in one place, Policy.DecideHost and Policy.DecideRcpt
// (what is checked, trusted networks, decision_timeout, panic recovery),
// and replies chosen in one place, Policy.RcptReply and Policy.HostReply
// (replies.go, whose doc comments hold the table); the check command calls
// the same functions, so it cannot drift from the daemon. Every non-accept
// reply is a reply-code response that keeps the session, never go-milter's
// RespReject or RespTempFail, which would make it drop the session's state;
// a failed lookup is never a Go error, which would close the connection.
// Reply texts are stripped of control characters, bounded, and have every %
// doubled.
//
// Each decision has its own deadline (decision_timeout) and is logged on
// one line ("decision": stage, verdict, queue_id, client_addr, client_name,
// daemon, auth_user, rcpt, tier, stale, duration, reason, reply), at warn
// level when a lookup failed, and counted in metrics.Decisions. A panicking
// lookup is answered as a failed one. In report mode (mode = "report") the
// verdict is computed, logged and counted as "would_reject" or
// "would_tempfail", and the milter continues.
//
// Server owns the listeners and sessions: max_sessions (beyond it a new
// connection waits for a slot, then is refused), an idle read deadline
// between transactions (within one, from MAIL to the end of the message,
// the MTA is silent while the client sends the message: the deadline is
// then TransactionTimeout), a retry with backoff on temporary Accept
// errors, atomic policy swaps (SetPolicy, for SIGHUP), and Shutdown, which
// drains the sessions. Listen opens sockets in the usual inet:PORT@HOST /
// unix:/path syntax.
package milter
