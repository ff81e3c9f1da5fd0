package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/antespam/antespam-milter/config"
)

// TestComposeReuse: a reload keeps the LRU when [cache] is unchanged and
// points it at the new backend; a changed [cache] gets a new LRU.
func TestComposeReuse(t *testing.T) {
	f := newFixture(t, "")
	log := slog.New(slog.DiscardHandler)
	load := func() *config.Config {
		t.Helper()
		cfg, err := config.Load(f.config)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	first, err := compose(load(), log, composeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ctx := context.Background()
	if d, err := first.Checker.Recipient(ctx, "dave@example.com"); err != nil || d.Found || d.Tier != "file" {
		t.Fatalf("dave before: %+v, %v", d, err)
	}

	// dave is added by a reload (a new backend reads the lists again).
	writeFile(t, f.rcpts, testRecipients+"dave@example.com\n")
	second, err := compose(load(), log, composeOptions{reuse: first})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.LRU != first.LRU {
		t.Fatal("[cache] unchanged, yet the LRU was replaced")
	}
	second.LRU.Invalidate()
	// The old stack's Checker shares the LRU, now in front of the new backend.
	for name, s := range map[string]*stack{"new": second, "old": first} {
		if d, err := s.Checker.Recipient(ctx, "dave@example.com"); err != nil || !d.Found {
			t.Errorf("%s stack after reload: dave %+v, %v; want found", name, d, err)
		}
	}

	f.write(t, "[cache]\nttl = \"2m\"\n[recipients]\ndomains = [\"example.com\"]\n")
	third, err := compose(load(), log, composeOptions{reuse: second})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if third.LRU == second.LRU {
		t.Error("[cache] changed, yet the LRU was kept")
	}

	nc, err := compose(load(), log, composeOptions{noCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.LRU != nil || nc.Memcache != nil {
		t.Error("-no-cache stack has cache tiers")
	}
	if err := nc.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
}
