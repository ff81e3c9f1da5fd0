package milter

import (
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/internal/testserver"
)

// smtpRcpts runs EHLO, MAIL and one RCPT per address against an MTA and
// returns each RCPT's reply as "CODE text".
func smtpRcpts(t *testing.T, addr string, rcpts ...string) []string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("smtp dial %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if err := c.Mail("sender@client.test"); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	var out []string
	for _, r := range rcpts {
		err := c.Rcpt(r)
		var te *textproto.Error
		switch {
		case err == nil:
			out = append(out, "250")
		case errors.As(err, &te):
			out = append(out, strconv.Itoa(te.Code)+" "+te.Msg)
		default:
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	c.Quit()
	return out
}

// smtpGreeting returns the first reply an MTA gives a new client.
func smtpGreeting(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	tc := textproto.NewConn(c)
	code, greet, err := tc.ReadResponse(0)
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(code) + " " + greet
}

func mtaPolicy(t *testing.T, logs *logBuffer, listed ...string) *Policy {
	src := newMapSource(append([]string{"known@example.org"}, listed...)...)
	return newPolicy(t, src, testConfig(func(c *config.Config) {
		c.TrustedNetworks, c.TrustedPrefixes = nil, nil
	}), logs.logger())
}

// readSnippet reads an MTA snippet from examples/ without its macro
// lists: the milter's symbol list must bring the macros by itself.
func readSnippet(t *testing.T, name string) string {
	b, err := os.ReadFile(filepath.Join(testserver.RepoRoot(t), "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "milter_connect_macros") && !strings.Contains(l, "milter_mail_macros") &&
			!strings.Contains(l, "milter_rcpt_macros") && !strings.Contains(l, "confMILTER_MACROS") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// checkMacros: the decisions were logged with the macros asked for by the
// symbol list.
func checkMacros(t *testing.T, logs *logBuffer) {
	t.Helper()
	var rcpt map[string]any
	for _, l := range logs.lines("decision") {
		if l["stage"] == "rcpt" && l["verdict"] == "accept" {
			rcpt = l
		}
	}
	if rcpt == nil || rcpt["daemon"] == nil || rcpt["queue_id"] == nil || rcpt["client_addr"] != "127.0.0.1" {
		t.Errorf("macros missing from the decision log:\n%s", logs.String())
	}
}

// TestPostfix: a real Postfix 3.7 negotiates with the milter, shows the
// RCPT replies as they are (with % unescaped) and refuses a listed client.
func TestPostfix(t *testing.T) {
	if testing.Short() && !testserver.InCI() {
		t.Skip("a real MTA: skipped with -short (never in CI)")
	}
	var logs logBuffer
	srv, addr := startServer(t, mtaPolicy(t, &logs), ServerOptions{}, discard())
	pf := testserver.StartPostfix(t, testserver.PostfixOptions{
		Snippet:   readSnippet(t, "postfix-main.cf.snippet"),
		Milters:   []string{"inet:" + addr},
		RelayHost: "127.0.0.5:2525",
		IPv6:      true,
	})
	got := smtpRcpts(t, pf.Listeners[0], "unknown@example.org", "known@example.org", "100%x@example.org", "someone@else.test")
	want := []string{
		"550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown",
		"250",
		"550 5.1.1 <100%x@example.org>: Recipient address rejected: User unknown",
		"250",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Postfix RCPT replies:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	checkMacros(t, &logs)

	for _, l := range []struct{ listed, addr string }{{"127.0.0.1", pf.Listeners[0]}, {"::1", pf.Listeners6[0]}} {
		srv.SetPolicy(mtaPolicy(t, &logs, l.listed))
		g := smtpGreeting(t, l.addr)
		if !strings.HasPrefix(g, "554") {
			t.Errorf("Postfix with %s listed: %q, want a 554", l.listed, g)
		}
		t.Logf("Postfix greets a listed client (%s): %q", l.listed, g)
	}
}

// TestSendmail: the same with a real Sendmail 8.17.
func TestSendmail(t *testing.T) {
	if testing.Short() && !testserver.InCI() {
		t.Skip("a real MTA: skipped with -short (never in CI)")
	}
	var logs logBuffer
	srv, addr := startServer(t, mtaPolicy(t, &logs), ServerOptions{}, discard())
	_, port, _ := net.SplitHostPort(addr)
	sm := testserver.StartSendmail(t, testserver.SendmailOptions{
		Snippet:   readSnippet(t, "sendmail.mc.snippet"),
		Milter:    "inet:" + port + "@127.0.0.1",
		RelayHost: "127.0.0.5:2525",
		IPv6:      true,
	})
	got := smtpRcpts(t, sm.Addr, "unknown@example.org", "known@example.org", "100%x@example.org")
	for i, want := range []string{"550 5.1.1 ", "250", "550 5.1.1 "} {
		if i >= len(got) || !strings.HasPrefix(got[i], want) {
			t.Errorf("Sendmail RCPT replies %q, want %q at %d", got, want, i)
		}
	}
	if len(got) == 3 && (!strings.Contains(got[0], "<unknown@example.org>: Recipient address rejected: User unknown") ||
		!strings.Contains(got[2], "<100%x@example.org>: Recipient address rejected")) {
		t.Errorf("Sendmail RCPT texts: %q", got)
	}
	t.Logf("Sendmail RCPT replies: %q", got)
	checkMacros(t, &logs)

	// The reject template the README suggests behind Sendmail: without
	// {rcpt}, Sendmail's own "<addr>... " prefix names the address once.
	// Sendmail adds no prefix to a 4xx: the default tempfail reply stays.
	src := newMapSource("known@example.org")
	src.fail["broken@example.org"] = true
	srv.SetPolicy(newPolicy(t, src, testConfig(func(c *config.Config) {
		c.TrustedNetworks, c.TrustedPrefixes = nil, nil
		c.Recipients.RejectReply = "550 5.1.1 Recipient address rejected: User unknown"
	}), logs.logger()))
	got = smtpRcpts(t, sm.Addr, "unknown@example.org", "broken@example.org")
	if want := []string{
		"550 5.1.1 <unknown@example.org>... Recipient address rejected: User unknown",
		"451 4.3.0 <broken@example.org>: Temporary lookup failure",
	}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Sendmail RCPT replies with the Sendmail reject template:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range []struct{ listed, addr string }{{"127.0.0.1", sm.Addr}, {"::1", sm.Addr6}} {
		srv.SetPolicy(mtaPolicy(t, &logs, l.listed))
		g := smtpGreeting(t, l.addr)
		if !strings.HasPrefix(g, "554") {
			t.Errorf("Sendmail with %s listed: %q, want a 554", l.listed, g)
		}
		t.Logf("Sendmail greets a listed client (%s): %q", l.listed, g)
	}
}
