package main

import (
	"context"
	"fmt"
	"io"

	"github.com/antespam/antespam-milter/lookup"
)

// purge deletes from memcached the answers the daemons stored for the
// items, using the Checker's own key derivation, so an admin can undo a
// cached "user unknown" for the whole fleet. It does not ask the
// directory, so it works during an outage too.
func purge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("cache purge", stderr)
	if st, ok := parseFlags(fs, args); !ok {
		return st
	}
	items, err := parseItems(fs.Args())
	if err != nil {
		return usage(stderr, err.Error())
	}
	cfg := loadConfig(*path, stderr)
	if cfg == nil {
		return exitUsage
	}
	if len(cfg.Memcache.Servers) == 0 {
		fmt.Fprintf(stderr, "antespam-milter: %s: memcache.servers is empty: there is no shared cache to purge (each daemon's LRU forgets on SIGHUP)\n", cfg.Path)
		return exitUsage
	}
	log := newLogger(stderr, "text", "warn")
	// The same stack as the daemon's, so the keys are the ones its
	// lookups store. Nothing is looked up.
	stk, err := compose(cfg, log, composeOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "antespam-milter: %v\n", err)
		return exitUsage
	}
	defer stk.Close()
	checker, mc := stk.Checker, stk.Memcache

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
