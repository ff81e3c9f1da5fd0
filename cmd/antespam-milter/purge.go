package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/lookup"
)

// purge deletes from memcached the answers the daemons stored for the
// items, using the Checker's own key derivation, so an admin can undo a
// cached "user unknown" for the whole fleet. It neither connects to nor
// asks the directory, so it works during an outage too.
func purge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, items, st, ok := itemCommand("cache purge", args, stderr, nil)
	if !ok {
		return st
	}
	if len(cfg.Memcache.Servers) == 0 {
		fmt.Fprintf(stderr, "antespam-milter: %s: memcache.servers is empty: there is no shared cache to purge (each daemon's LRU forgets on SIGHUP)\n", cfg.Path)
		return exitUsage
	}
	log := newLogger(stderr, "text", "warn")
	checker, mc, err := purgeTiers(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "antespam-milter: %v\n", err)
		return exitUsage
	}

	status := exitOK
	for _, it := range items {
		key, needed, err := itemKey(checker, it)
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "antespam-milter: %s: %v\n", it, err)
			status = exitUsage
			continue
		case !needed:
			fmt.Fprintf(stdout, "skipped\t%s\tnever cached: answered without a lookup\n", key.Name)
			continue
		}
		if err := mc.Purge(ctx, key); err != nil {
			fmt.Fprintf(stderr, "antespam-milter: purge %s: %v\n", key, err)
			status = exitFailure
			continue
		}
		fmt.Fprintf(stdout, "purged\t%s\t%s\n", key.Name, mc.ItemKey(key))
	}
	if status == exitOK {
		fmt.Fprintln(stdout, "note: each running daemon's in-process LRU may keep its answer up to cache.ttl / cache.negative_ttl; SIGHUP makes it ask again")
	}
	return status
}

// itemKey is the Key the daemon's lookup uses for it, and whether it is
// looked up (and so cached) at all.
func itemKey(c *lookup.Checker, it item) (lookup.Key, bool, error) {
	if it.kind == "rcpt" {
		return c.RecipientKey(it.addr)
	}
	return c.HostKey(it.ip, it.hostname), true, nil
}

// purgeTiers builds what purge needs of the daemon's stack: the Checker,
// for its keys, and the memcached tier, for its item keys, with the
// settings compose uses (newChecker, memcacheOptions), so that the keys
// are the ones the daemon's lookups store. Both sit on noDirectory: the
// directory is never dialled, and a refused bind or a black-holed server
// cannot fail or delay a purge.
func purgeTiers(cfg *config.Config, log *slog.Logger) (*lookup.Checker, *lookup.Memcache, error) {
	mc, err := lookup.NewMemcache(noDirectory{}, cfg.Memcache.Servers, memcacheOptions(cfg), log)
	if err != nil {
		return nil, nil, fmt.Errorf("memcache tier: %w", err)
	}
	checker, err := newChecker(mc, cfg)
	if err != nil {
		return nil, nil, err
	}
	return checker, mc, nil
}

// noDirectory stands for the directory under purge's tiers, which only
// derive keys and delete them: a lookup is a bug.
type noDirectory struct{}

func (noDirectory) Lookup(context.Context, lookup.Key) (lookup.Answer, error) {
	return lookup.Answer{}, errors.New("cache purge does not look anything up")
}
