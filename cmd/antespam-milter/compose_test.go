package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

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

// TestComposeFileChangeInvalidatesLRU: a user added to the recipients list
// is found within the file check interval, not after cache.negative_ttl.
func TestComposeFileChangeInvalidatesLRU(t *testing.T) {
	f := newFixture(t, "[cache]\nnegative_ttl = \"1h\"\n[recipients]\ndomains = [\"example.com\"]\n")
	cfg, err := config.Load(f.config)
	if err != nil {
		t.Fatal(err)
	}
	s, err := compose(cfg, slog.New(slog.DiscardHandler), composeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, tier := range []string{"file", "lru"} {
		if d, err := s.Checker.Recipient(ctx, "dave@example.com"); err != nil || d.Found || d.Tier != tier {
			t.Fatalf("dave before: %+v, %v; want not found by %s", d, err, tier)
		}
	}
	writeFile(t, f.rcpts, testRecipients+"dave@example.com\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := s.Checker.Recipient(ctx, "dave@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if d.Found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dave still %+v 10s after being listed", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
