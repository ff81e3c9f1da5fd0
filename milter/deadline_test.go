package milter

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLazyDeadline: the decision context behaves as a context.WithDeadline
// would, whether or not Done was asked for.
func TestLazyDeadline(t *testing.T) {
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	t.Run("running", func(t *testing.T) {
		c := &lazyDeadline{parent: context.Background(), deadline: time.Now().Add(time.Hour)}
		if err := c.Err(); err != nil {
			t.Errorf("Err = %v, want nil", err)
		}
		if d, ok := c.Deadline(); !ok || !d.Equal(c.deadline) {
			t.Errorf("Deadline = %v %v", d, ok)
		}
		if closed(c.Done()) {
			t.Error("Done closed")
		}
		c.end()
		if !closed(c.Done()) || !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("after end: Done not closed or Err = %v", c.Err())
		}
	})
	t.Run("past deadline", func(t *testing.T) {
		c := &lazyDeadline{parent: context.Background(), deadline: time.Now().Add(-time.Second)}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v, want deadline exceeded", c.Err())
		}
		<-c.Done()
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("after Done: Err = %v", c.Err())
		}
	})
	t.Run("ended before Done", func(t *testing.T) {
		c := &lazyDeadline{parent: context.Background(), deadline: time.Now().Add(time.Hour)}
		c.end()
		if !errors.Is(c.Err(), context.Canceled) || !closed(c.Done()) {
			t.Errorf("Err = %v, Done closed %v", c.Err(), closed(c.Done()))
		}
	})
	t.Run("parent cancelled", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		c := &lazyDeadline{parent: parent, deadline: time.Now().Add(time.Hour)}
		done := c.Done()
		cancel()
		<-done
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err = %v", c.Err())
		}
		c2 := &lazyDeadline{parent: parent, deadline: time.Now().Add(time.Hour)}
		if !errors.Is(c2.Err(), context.Canceled) {
			t.Errorf("Err without Done = %v", c2.Err())
		}
		c.end()
		c2.end()
	})
}
