package main

import gomilter "github.com/emersion/go-milter"

// What antespam-milter answers in option negotiation (milter/ in this
// tree): only Connect, MailFrom and RcptTo are asked for; Helo, headers,
// end of headers and body are masked off. Keep these in step with the
// daemon, or the ceiling compares different protocols.
const (
	Protocol = gomilter.OptNoHelo | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoBody
	Actions  = gomilter.OptSetSymList
)

// SymList is the macros the daemon asks for per stage.
var SymList = map[gomilter.Stage][]string{
	gomilter.StageConnect:  {"{client_addr}", "{daemon_name}"},
	gomilter.StageMailFrom: {"i", "{auth_authen}"},
}
