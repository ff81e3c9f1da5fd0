// Command antespam-milter is a milter for Postfix and Sendmail that rejects
// mail to recipients that do not exist and connections from hosts listed
// as malign, answering from a directory (LDAP or plain files) through an
// in-process LRU and an optional shared memcached.
//
//	antespam-milter [serve] [-config FILE]
//	antespam-milter config-test [-config FILE]
//	antespam-milter check [-config FILE] [-json] [-no-cache] rcpt ADDR... | host IP [HOSTNAME]
//	antespam-milter cache purge [-config FILE] rcpt ADDR... | host IP [HOSTNAME]
//	antespam-milter version
//
// Exit status: 0 on success; 2 on a usage or config error (systemd's
// RestartPreventExitStatus=2); check exits 1 when an item is rejected and
// 3 when one tempfails; serve exits 1 on any other failure.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
