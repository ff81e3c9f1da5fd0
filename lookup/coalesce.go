package lookup

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"golang.org/x/sync/singleflight"
)

// DefaultCoalesceTimeout bounds a shared lookup when Coalesce.Timeout is 0.
const DefaultCoalesceTimeout = 10 * time.Second

// Coalesce merges concurrent lookups of one key into a single call to the
// next tier and gives every caller the same answer, so a burst of mail to
// one new address reaches the directory once.
//
// The shared call runs with a context detached from its first caller's
// (values kept, cancellation dropped): a caller that gives up does not fail
// the others. It is bounded by the longer of Timeout and the first
// caller's remaining deadline, so one caller with a short deadline does not
// doom the rest either. Each caller still returns as soon as its own
// context is done. A panic in the next tier becomes an error for every
// caller instead of a crash (singleflight re-raises it otherwise).
type Coalesce struct {
	// Timeout bounds the shared call; 0 means DefaultCoalesceTimeout. Set
	// it before the first Lookup.
	Timeout time.Duration

	next  Source
	log   *slog.Logger
	group singleflight.Group
	// joined, when set (tests only), runs once a caller has joined a
	// flight, so a test can know every caller shares it.
	joined func()
}

var _ Source = (*Coalesce)(nil)

// NewCoalesce returns the coalescing tier in front of next. log may be nil.
func NewCoalesce(next Source, log *slog.Logger) *Coalesce {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Coalesce{next: next, log: log}
}

// Lookup asks the next tier for key, sharing the call with concurrent
// lookups of the same key.
func (c *Coalesce) Lookup(ctx context.Context, key Key) (Answer, error) {
	if err := ctx.Err(); err != nil {
		return Answer{}, err
	}
	bound := c.Timeout
	if bound <= 0 {
		bound = DefaultCoalesceTimeout
	}
	if d, ok := ctx.Deadline(); ok {
		bound = max(bound, time.Until(d))
	}
	// The detached context is made before DoChan so that fn does not
	// capture ctx itself.
	detached := context.WithoutCancel(ctx)
	ch := c.group.DoChan(key.String(), func() (v any, err error) {
		defer func() {
			if r := recover(); r != nil {
				c.log.Error("lookup: panic in next tier", "key", key.String(), "panic", r, "stack", string(debug.Stack()))
				err = fmt.Errorf("panic in next tier: %v", r)
			}
		}()
		fctx, cancel := context.WithTimeout(detached, bound)
		defer cancel()
		return c.next.Lookup(fctx, key)
	})
	if c.joined != nil {
		c.joined()
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return Answer{}, r.Err
		}
		return r.Val.(Answer), nil
	case <-ctx.Done():
		return Answer{}, fmt.Errorf("wait for shared lookup: %w", ctx.Err())
	}
}
