package lookup_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/antespam/antespam-milter/lookup"
)

// A Checker on the file source, as the daemon runs with source = "file":
// recipients and hosts come from two plain-text lists.
func Example_fileSource() {
	dir, err := os.MkdirTemp("", "antespam-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rcpts, hosts := filepath.Join(dir, "recipients"), filepath.Join(dir, "hosts")
	if err := os.WriteFile(rcpts, []byte("alice@example.com\n@example.net\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(hosts, []byte("192.0.2.0/24\nbad.example\n"), 0o644); err != nil {
		log.Fatal(err)
	}

	src, err := lookup.NewFile(rcpts, hosts, nil, lookup.FileCaseFold(true))
	if err != nil {
		log.Fatal(err)
	}
	c, err := lookup.NewChecker(src, lookup.CheckerOptions{
		Domains:            []string{"example.com", "example.net"},
		RecipientDelimiter: "+",
		CaseFoldLocalPart:  true,
		CatchAll:           true,
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	for _, addr := range []string{
		"<Alice+News@Example.COM>", // found through alice@example.com
		"<nobody@example.com>",     // not listed
		"<anyone@example.net>",     // the @example.net catch-all
		"<postmaster@example.com>", // always accepted, no lookup
		"<someone@example.org>",    // not our domain, no lookup
		"<bad\r\naddress@example.com>",
	} {
		d, err := c.Recipient(ctx, addr)
		switch {
		case errors.Is(err, lookup.ErrBadAddress):
			fmt.Printf("%-28q malformed\n", addr)
		case err != nil:
			fmt.Printf("%-28q don't know: %v\n", addr, err)
		default:
			fmt.Printf("%-28q found=%-5v tier=%-8s item=%s\n", addr, d.Found, d.Tier, d.Item)
		}
	}
	d, err := c.Host(ctx, netip.MustParseAddr("203.0.113.9"), "mx.bad.example")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("host listed=%v item=%q\n", d.Found, d.Item)

	// Output:
	// "<Alice+News@Example.COM>"   found=true  tier=file     item=alice+news@example.com
	// "<nobody@example.com>"       found=false tier=file     item=nobody@example.com
	// "<anyone@example.net>"       found=true  tier=file     item=anyone@example.net
	// "<postmaster@example.com>"   found=true  tier=always   item=postmaster@example.com
	// "<someone@example.org>"      found=true  tier=not-ours item=someone@example.org
	// "<bad\r\naddress@example.com>" malformed
	// host listed=true item="203.0.113.9 mx.bad.example"
}

// The keys a lookup asks a directory for, most specific first.
func ExampleHostCandidates() {
	fmt.Println(lookup.HostCandidates(netip.MustParseAddr("::ffff:192.0.2.10"), "MX.Bad.Example.NET."))
	fmt.Println(lookup.HostCandidates(netip.MustParseAddr("2001:db8:1:2::10"), "[2001:db8:1:2::10]"))
	// Output:
	// [192.0.2.10 192.0.2 192.0.2.0/24 192.0 192.0.0.0/16 192 192.0.0.0/8 mx.bad.example.net bad.example.net example.net]
	// [2001:db8:1:2::10 2001:db8:1:2::/64 2001:db8:1::/56 2001:db8:1::/48]
}

func ExampleRecipientCandidates() {
	local, domain, err := lookup.NormalizeAddress(`<"Bob.Smith+Lists"@Example.COM>`, true)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(local, domain)
	fmt.Println(lookup.RecipientCandidates(local, domain, "+-", true))
	// Output:
	// bob.smith+lists example.com
	// [bob.smith+lists@example.com bob.smith@example.com @example.com]
}
