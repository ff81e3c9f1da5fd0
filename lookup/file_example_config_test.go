package lookup_test

// In a package of its own: config imports lookup.

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/internal/testserver"
	"github.com/antespam/antespam-milter/lookup"
)

// TestExampleConfig checks that examples/ (what `make run` serves) loads
// and says what its comments promise.
func TestExampleConfig(t *testing.T) {
	root := testserver.RepoRoot(t)
	cfg, err := config.Load(filepath.Join(root, "examples", "antespam-milter.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != "file" {
		t.Fatalf("source = %q", cfg.Source)
	}
	var logs strings.Builder
	f, err := lookup.NewFile(filepath.Join(root, cfg.File.Recipients), filepath.Join(root, cfg.File.Hosts),
		slog.New(slog.NewTextHandler(&logs, nil)), lookup.FileCaseFold(cfg.Recipients.CaseFoldLocalPart))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "bad line") {
		t.Errorf("bad lines in the examples:\n%s", logs.String())
	}
	c, err := lookup.NewChecker(f, lookup.CheckerOptions{
		Domains:            cfg.Recipients.Domains,
		RecipientDelimiter: cfg.Recipients.RecipientDelimiter,
		CaseFoldLocalPart:  cfg.Recipients.CaseFoldLocalPart,
		CatchAll:           cfg.Recipients.CatchAll,
		AlwaysAccept:       cfg.Recipients.AlwaysAccept,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for addr, want := range map[string]bool{
		"alice@example.com": true, "alice+news@example.com": true, "nobody@example.com": false,
		"anyone@example.net": true, "postmaster@example.com": true,
	} {
		if d, err := c.Recipient(ctx, addr); err != nil || d.Found != want {
			t.Errorf("example %s: %+v, %v; want found %v", addr, d, err, want)
		}
	}
	for ip, want := range map[string]bool{"192.0.2.33": true, "198.51.100.7": true, "198.51.100.8": false} {
		if d, err := c.Host(ctx, netip.MustParseAddr(ip), "unknown"); err != nil || d.Found != want {
			t.Errorf("example host %s: %+v, %v; want found %v", ip, d, err, want)
		}
	}
	if d, err := c.Host(ctx, netip.MustParseAddr("203.0.113.5"), "mx.bad.example"); err != nil || !d.Found {
		t.Errorf("example host mx.bad.example: %+v, %v", d, err)
	}
}
