package lookup

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateSource blocks every lookup until release is closed, telling entered
// (buffered) each time one starts. It fails if its ctx was cancelled.
type gateSource struct {
	next    Source
	entered chan struct{}
	release chan struct{}
}

func newGateSource(next Source) *gateSource {
	return &gateSource{next: next, entered: make(chan struct{}, 1000), release: make(chan struct{})}
}

func (s *gateSource) Lookup(ctx context.Context, key Key) (Answer, error) {
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
		return Answer{}, ctx.Err()
	}
	return s.next.Lookup(ctx, key)
}

// joinCounter lets a test wait until n callers have joined flights.
type joinCounter struct{ wg sync.WaitGroup }

func (j *joinCounter) expect(c *Coalesce, n int) {
	j.wg.Add(n)
	c.joined = j.wg.Done
}

func TestCoalesceOneCallForConcurrentLookups(t *testing.T) {
	const callers = 200
	gate := newGateSource(mapSource{names: map[string]bool{"a@example.com": true}})
	count := &countingSource{next: gate}
	c := NewCoalesce(count, nil)
	var joins joinCounter
	joins.expect(c, callers)

	var wg sync.WaitGroup
	answers := make([]Answer, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			answers[i], errs[i] = c.Lookup(context.Background(), rcptKey("a@example.com"))
		})
	}
	joins.wg.Wait()
	close(gate.release)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || !answers[i].Found || answers[i] != answers[0] {
			t.Fatalf("caller %d: %+v, %v; want the shared found answer %+v", i, answers[i], errs[i], answers[0])
		}
	}
	if n := count.calls(); n != 1 {
		t.Errorf("next asked %d times, want 1", n)
	}
}

func TestCoalesceDistinctKeysDoNotShare(t *testing.T) {
	count := &countingSource{next: mapSource{names: map[string]bool{"a@example.com": true}}}
	c := NewCoalesce(count, nil)
	tests := []struct {
		key  Key
		want bool
	}{
		{rcptKey("a@example.com"), true},
		{rcptKey("b@example.com"), false},
		{Key{Kind: Host, Name: "a@example.com"}, true},
	}
	for _, tt := range tests {
		ans, err := c.Lookup(context.Background(), tt.key)
		if err != nil || ans.Found != tt.want {
			t.Errorf("Lookup(%s) = %+v, %v; want Found %v", tt.key, ans, err, tt.want)
		}
	}
	if n := count.calls(); n != len(tests) {
		t.Errorf("next asked %d times, want %d", n, len(tests))
	}
}

func TestCoalesceCallerCancelDoesNotFailOthers(t *testing.T) {
	gate := newGateSource(mapSource{names: map[string]bool{"a@example.com": true}})
	c := NewCoalesce(gate, nil)
	k := rcptKey("a@example.com")

	const others = 5
	var joins joinCounter
	joins.expect(c, others+1)

	// The first caller starts the flight, then gives up.
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := c.Lookup(ctx, k)
		firstErr <- err
	}()
	<-gate.entered

	var wg sync.WaitGroup
	answers := make([]Answer, others)
	errs := make([]error, others)
	for i := range others {
		wg.Go(func() { answers[i], errs[i] = c.Lookup(context.Background(), k) })
	}
	joins.wg.Wait()
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: err = %v, want context.Canceled", err)
	}
	close(gate.release)
	wg.Wait()
	for i := range others {
		if errs[i] != nil || !answers[i].Found {
			t.Errorf("caller %d: %+v, %v; want found", i, answers[i], errs[i])
		}
	}
}

func TestCoalesceShortDeadlineDoesNotFailOthers(t *testing.T) {
	gate := newGateSource(mapSource{names: map[string]bool{"a@example.com": true}})
	c := NewCoalesce(gate, nil)
	c.Timeout = time.Minute
	k := rcptKey("a@example.com")
	var joins joinCounter
	joins.expect(c, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	firstErr := make(chan error, 1)
	go func() {
		_, err := c.Lookup(ctx, k)
		firstErr <- err
	}()
	<-gate.entered
	second := make(chan error, 1)
	go func() {
		ans, err := c.Lookup(context.Background(), k)
		if err == nil && !ans.Found {
			err = errors.New("not found")
		}
		second <- err
	}()
	joins.wg.Wait()
	if err := <-firstErr; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("short-deadline caller: err = %v, want context.DeadlineExceeded", err)
	}
	close(gate.release)
	if err := <-second; err != nil {
		t.Errorf("second caller: %v", err)
	}
}

func TestCoalesceBoundsTheSharedCall(t *testing.T) {
	gate := newGateSource(mapSource{}) // never released
	c := NewCoalesce(gate, nil)
	c.Timeout = 20 * time.Millisecond
	_, err := c.Lookup(context.Background(), rcptKey("a@example.com"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded from the bounded shared call", err)
	}
}

func TestCoalescePanicBecomesError(t *testing.T) {
	const callers = 10
	c := NewCoalesce(slowSource{next: panicSource{}, delay: 20 * time.Millisecond}, nil)
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { _, errs[i] = c.Lookup(context.Background(), rcptKey("a@example.com")) })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "panic") {
			t.Errorf("caller %d: err = %v, want a panic error", i, err)
		}
	}
	// The group is not stuck: the next lookup runs (and panics) again.
	if _, err := c.Lookup(context.Background(), rcptKey("a@example.com")); err == nil {
		t.Error("lookup after a panic: no error")
	}
}

func TestCoalesceCancelledBeforeStart(t *testing.T) {
	count := &countingSource{next: mapSource{}}
	c := NewCoalesce(count, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Lookup(ctx, rcptKey("a@example.com")); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n := count.calls(); n != 0 {
		t.Errorf("next asked %d times, want 0", n)
	}
}
