package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/antespam/antespam-milter/config"
)

// Exit statuses.
const (
	exitOK       = 0
	exitFailure  = 1 // serve: a runtime failure; check: an item rejected
	exitUsage    = 2 // usage or config error: systemd does not restart
	exitTempfail = 3 // check: an item tempfailed
)

const usageText = `usage:
  antespam-milter [serve] [-config FILE]
  antespam-milter config-test [-config FILE]
  antespam-milter check [-config FILE] [-json] [-no-cache] rcpt ADDR... | host IP [HOSTNAME]
  antespam-milter cache purge [-config FILE] rcpt ADDR... | host IP [HOSTNAME]
  antespam-milter version
`

// run dispatches to a subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return serve(ctx, args, stderr)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "serve":
		return serve(ctx, rest, stderr)
	case "config-test":
		return configTest(rest, stdout, stderr)
	case "version":
		if len(rest) != 0 {
			return usage(stderr, "version takes no arguments")
		}
		fmt.Fprintf(stdout, "antespam-milter %s\n", version)
		return exitOK
	case "check":
		return check(ctx, rest, stdout, stderr)
	case "cache":
		if len(rest) == 0 || rest[0] != "purge" {
			return usage(stderr, "cache needs the purge subcommand")
		}
		return purge(ctx, rest[1:], stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	return usage(stderr, fmt.Sprintf("unknown command %q", name))
}

// usage prints msg and the usage text and returns exitUsage.
func usage(w io.Writer, msg string) int {
	if msg != "" {
		fmt.Fprintf(w, "antespam-milter: %s\n", msg)
	}
	fmt.Fprint(w, usageText)
	return exitUsage
}

// newFlags makes a subcommand's flag set with a -config flag. Errors and
// -h are handled by parseFlags, which returns the status to exit with.
func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("antespam-milter "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fmt.Fprintf(stderr, "flags of %s:\n", name)
		fs.PrintDefaults()
	}
	path := fs.String("config", config.DefaultPath, "configuration `file`")
	return fs, path
}

// parseFlags parses args; ok false means exit with the returned status
// (0 after -h, 2 on a bad flag).
func parseFlags(fs *flag.FlagSet, args []string) (status int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// loadConfig loads path and prints every error (and warning) to w. A nil
// config means exit 2.
func loadConfig(path string, w io.Writer) *config.Config {
	cfg, err := config.Load(path)
	if err != nil {
		printConfigError(w, err)
		return nil
	}
	for _, warn := range cfg.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	return cfg
}

// itemCommand does what check and cache purge share before their work:
// the flags (more may be added by more, which may be nil), the items and
// the config. ok false means exit with the returned status.
func itemCommand(name string, args []string, stderr io.Writer, more func(*flag.FlagSet)) (cfg *config.Config, items []item, status int, ok bool) {
	fs, path := newFlags(name, stderr)
	if more != nil {
		more(fs)
	}
	if st, ok := parseFlags(fs, args); !ok {
		return nil, nil, st, false
	}
	items, err := parseItems(fs.Args())
	if err != nil {
		return nil, nil, usage(stderr, err.Error()), false
	}
	if cfg = loadConfig(*path, stderr); cfg == nil {
		return nil, nil, exitUsage, false
	}
	return cfg, items, exitOK, true
}

// printConfigError prints each error of a config.Errors on its own line.
func printConfigError(w io.Writer, err error) {
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	fmt.Fprintf(w, "antespam-milter: %v\n", err)
}

// item is one question on the command line of check and cache purge.
type item struct {
	kind     string     // "rcpt" or "host"
	addr     string     // the recipient, or the client IP as given
	ip       netip.Addr // host only
	hostname string     // host only, may be ""
}

func (it item) String() string {
	if it.kind == "host" && it.hostname != "" {
		return it.addr + " " + it.hostname
	}
	return it.addr
}

// parseItems reads "rcpt ADDR..." or "host IP [HOSTNAME]"; an error is a
// usage error.
func parseItems(args []string) ([]item, error) {
	if len(args) == 0 {
		return nil, errors.New("say rcpt ADDR... or host IP [HOSTNAME]")
	}
	switch args[0] {
	case "rcpt":
		if len(args) < 2 {
			return nil, errors.New("rcpt needs at least one address")
		}
		items := make([]item, 0, len(args)-1)
		for _, a := range args[1:] {
			items = append(items, item{kind: "rcpt", addr: a})
		}
		return items, nil
	case "host":
		if len(args) < 2 || len(args) > 3 {
			return nil, errors.New("host needs an IP address and optionally a hostname")
		}
		ip, err := netip.ParseAddr(strings.TrimPrefix(strings.Trim(args[1], "[]"), "IPv6:"))
		if err != nil {
			return nil, fmt.Errorf("host %q is not an IP address", args[1])
		}
		it := item{kind: "host", addr: args[1], ip: ip.Unmap()}
		if len(args) == 3 {
			it.hostname = args[2]
		}
		return []item{it}, nil
	}
	return nil, fmt.Errorf("%q is not rcpt or host", args[0])
}
