package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/lookup"
	"github.com/antespam/antespam-milter/metrics"
)

// stack is the lookup stack built from one config:
//
//	Checker → LRU → (swap) → memcached (coalescing its misses) → directory
//	Checker → LRU → (swap) → coalesce → directory (without memcached)
//
// The part under the swap point is the backend; a reload builds a new
// backend and, when [cache] is unchanged, keeps the LRU and its entries,
// marking them stale (Invalidate) so that found answers can still bridge
// a directory outage.
type stack struct {
	Checker *lookup.Checker
	// LRU is nil with -no-cache; Memcache is nil when [memcache] servers
	// is empty or with -no-cache.
	LRU      *lookup.LRU
	Memcache *lookup.Memcache

	front    *swapSource // the LRU's next tier; nil without an LRU
	backend  *backend
	cacheCfg config.Cache
}

// backend is what a stack owns below the LRU.
type backend struct {
	src     lookup.Source
	ping    func(context.Context) error
	closers []func() error
}

// composeOptions vary the stack for check and for reloads.
type composeOptions struct {
	// noCache leaves out the LRU and memcached tiers (check -no-cache).
	noCache bool
	// reuse is the running stack on a reload: its LRU is kept (and its
	// next tier swapped to the new backend) when [cache] is unchanged.
	reuse *stack
}

// compose builds the lookup stack described by cfg. It is the one place
// where tiers are put together, for serve, check and cache purge alike.
// On error nothing is left open.
func compose(cfg *config.Config, log *slog.Logger, o composeOptions) (_ *stack, err error) {
	s := &stack{cacheCfg: cfg.Cache, backend: &backend{}}
	defer func() {
		if err != nil {
			s.backend.close()
		}
	}()

	// lru is the stack's LRU once chosen: a change of the file lists
	// marks it stale, so that a user just added is not refused for up to
	// cache.negative_ttl.
	var lru atomic.Pointer[lookup.LRU]
	var dir lookup.Source
	switch cfg.Source {
	case "file":
		var onChange func()
		if !o.noCache {
			onChange = func() {
				if l := lru.Load(); l != nil {
					l.Invalidate()
				}
			}
		}
		f, err := newFileSource(cfg, log, onChange)
		if err != nil {
			return nil, err
		}
		dir = f
		s.backend.add(f)
		// The lists are in memory: the directory is up once read.
		metrics.DirectoryUp.Set(1)
	case "ldap":
		l, err := newLDAPSource(cfg, log)
		if err != nil {
			return nil, err
		}
		dir = l
		s.backend.add(l)
	default:
		return nil, fmt.Errorf("unknown source %q", cfg.Source)
	}
	if p, ok := dir.(pinger); ok {
		s.backend.ping = p.Ping
	} else if cfg.Source == "file" {
		s.backend.ping = func(context.Context) error { return filesReadable(cfg) }
	}

	// Concurrent lookups of one key reach the directory once: through
	// memcached's own coalescing of its misses when there is memcached
	// (its hits need none), else through a Coalesce tier.
	if !o.noCache && len(cfg.Memcache.Servers) > 0 {
		opts := memcacheOptions(cfg)
		opts.FillTimeout = cfg.DecisionTimeout
		mc, err := lookup.NewMemcache(dir, cfg.Memcache.Servers, opts, log)
		if err != nil {
			return nil, fmt.Errorf("memcache tier: %w", err)
		}
		s.Memcache = mc
		s.backend.add(mc)
		s.backend.src = mc
	} else {
		co := lookup.NewCoalesce(dir, log)
		co.Timeout = cfg.DecisionTimeout
		s.backend.src = co
	}

	top := s.backend.src
	if !o.noCache {
		if r := o.reuse; r != nil && r.LRU != nil && r.cacheCfg == cfg.Cache {
			s.LRU, s.front = r.LRU, r.front
		} else {
			s.front = &swapSource{}
			s.LRU, err = lookup.NewLRU(s.front, lookup.LRUOptions{
				Size:        cfg.Cache.Size,
				TTL:         cfg.Cache.TTL,
				NegativeTTL: cfg.Cache.NegativeTTL,
				StaleMax:    cfg.Cache.StaleMax,
			}, log)
			if err != nil {
				return nil, fmt.Errorf("lru tier: %w", err)
			}
		}
		top = s.LRU
		lru.Store(s.LRU)
	}

	s.Checker, err = newChecker(top, cfg)
	if err != nil {
		return nil, err
	}
	// Last, as nothing can fail any more: a reused LRU now asks the new
	// backend.
	if s.front != nil {
		s.front.set(s.backend.src)
	}
	return s, nil
}

// newChecker makes the Checker with the [recipients] rules.
func newChecker(src lookup.Source, cfg *config.Config) (*lookup.Checker, error) {
	rcptID, hostID := sourceIDs(cfg)
	c, err := lookup.NewChecker(src, lookup.CheckerOptions{
		Domains:            cfg.Recipients.Domains,
		RecipientDelimiter: cfg.Recipients.RecipientDelimiter,
		CaseFoldLocalPart:  cfg.Recipients.CaseFoldLocalPart,
		CatchAll:           cfg.Recipients.CatchAll,
		AlwaysAccept:       cfg.Recipients.AlwaysAccept,
		RecipientSourceID:  rcptID,
		HostSourceID:       hostID,
	})
	if err != nil {
		return nil, fmt.Errorf("checker: %w", err)
	}
	return c, nil
}

// sourceIDs name the directory that answers recipients and hosts, for the
// Checker's Key.Scope: answers cached from another list or another LDAP
// tree or filter are never served. The URLs are sorted: their order is
// failover, not meaning.
func sourceIDs(cfg *config.Config) (rcpt, host string) {
	switch cfg.Source {
	case "file":
		return "file:" + cfg.File.Recipients, "file:" + cfg.File.Hosts
	case "ldap":
		tree := "ldap:" + strings.Join(slices.Sorted(slices.Values(cfg.LDAP.URLs)), " ") + "|" + cfg.LDAP.BaseDN + "|"
		return tree + cfg.LDAP.RecipientFilter, tree + cfg.LDAP.HostFilter
	}
	return cfg.Source, cfg.Source
}

// Ping asks the directory whether it answers (for /healthz). A source
// without a Ping method is taken to be up.
func (s *stack) Ping(ctx context.Context) error {
	if s.backend.ping == nil {
		return nil
	}
	return s.backend.ping(ctx)
}

// Close releases the stack's backend: directory connections, memcached
// clients, file watchers. The LRU holds nothing to release.
func (s *stack) Close() error { return s.backend.close() }

// closeAfter closes the stack once in-flight decisions that may still use
// it have ended (they are bounded by decision_timeout).
func (s *stack) closeAfter(d time.Duration, log *slog.Logger) {
	time.AfterFunc(d, func() {
		if err := s.Close(); err != nil {
			log.Warn("close replaced lookup stack", "err", err)
		}
	})
}

type pinger interface {
	Ping(ctx context.Context) error
}

// add registers v's Close method, whichever signature it has.
func (b *backend) add(v any) {
	switch c := v.(type) {
	case interface{ Close() error }:
		b.closers = append(b.closers, c.Close)
	case interface{ Close() }:
		b.closers = append(b.closers, func() error { c.Close(); return nil })
	}
}

func (b *backend) close() error {
	var errs []error
	for _, c := range slices.Backward(b.closers) {
		errs = append(errs, c())
	}
	b.closers = nil
	return errors.Join(errs...)
}

// swapSource is the LRU's next tier, replaced atomically on reload.
type swapSource struct {
	p atomic.Pointer[lookup.Source]
}

func (s *swapSource) set(src lookup.Source) { s.p.Store(&src) }

// Lookup asks the current backend.
func (s *swapSource) Lookup(ctx context.Context, key lookup.Key) (lookup.Answer, error) {
	return (*s.p.Load()).Lookup(ctx, key)
}

// newFileSource opens the plain-text lists; a list whose check is
// disabled is not read. onChange, when not nil, runs after a changed list
// is swapped in.
func newFileSource(cfg *config.Config, log *slog.Logger, onChange func()) (lookup.Source, error) {
	rcpts, hosts := cfg.File.Recipients, cfg.File.Hosts
	if !cfg.Recipients.Enabled {
		rcpts = ""
	}
	if !cfg.Hosts.Enabled {
		hosts = ""
	}
	f, err := lookup.NewFile(rcpts, hosts, log, lookup.FileCaseFold(cfg.Recipients.CaseFoldLocalPart), lookup.FileOnChange(onChange))
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	return f, nil
}

// memcacheOptions are the [memcache] settings for the memcached tier;
// compose and cache purge share them so that purge deletes the very keys
// the daemon writes.
func memcacheOptions(cfg *config.Config) lookup.MemcacheOptions {
	return lookup.MemcacheOptions{
		KeyPrefix:    cfg.Memcache.KeyPrefix,
		TTL:          cfg.Memcache.TTL,
		NegativeTTL:  cfg.Memcache.NegativeTTL,
		StaleMax:     cfg.Cache.StaleMax,
		Timeout:      cfg.Memcache.Timeout,
		MaxIdleConns: cfg.Memcache.MaxIdleConns,
		LockTimeout:  cfg.Memcache.LockTimeout,
	}
}

// filesReadable is the file source's health: its lists can be opened.
func filesReadable(cfg *config.Config) error {
	for _, p := range []string{cfg.File.Recipients, cfg.File.Hosts} {
		if p == "" {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("file source: %w", err)
		}
		f.Close()
	}
	return nil
}

// newLDAPSource connects to the directory with the [ldap] settings.
func newLDAPSource(cfg *config.Config, log *slog.Logger) (*lookup.LDAP, error) {
	l, err := lookup.NewLDAP(lookup.LDAPOptions{
		URLs:            cfg.LDAP.URLs,
		StartTLS:        cfg.LDAP.StartTLS,
		TLSCAFile:       cfg.LDAP.TLSCAFile,
		BindDN:          cfg.LDAP.BindDN,
		BindPassword:    cfg.LDAP.BindPassword,
		BaseDN:          cfg.LDAP.BaseDN,
		RecipientFilter: cfg.LDAP.RecipientFilter,
		HostFilter:      cfg.LDAP.HostFilter,
		Timeout:         cfg.LDAP.Timeout,
		Connections:     cfg.LDAP.Connections,
		MaxInFlight:     cfg.LDAP.MaxInFlight,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("ldap source: %w", err)
	}
	return l, nil
}
