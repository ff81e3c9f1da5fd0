package main

import gomilter "github.com/emersion/go-milter"

// What antespam-milter answers in option negotiation (milter.Protocol in
// milter/server.go): only Connect, MailFrom and RcptTo are asked for; Helo,
// headers, end of headers and body are masked off; no action flags and no
// symbol list. Keep these in step with the daemon, or the ceiling compares
// different protocols.
const (
	Protocol = gomilter.OptNoHelo | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoBody
	Actions  = gomilter.OptAction(0)
)
