package lookup

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/bradfitz/gomemcache/memcache"
)

// Batching of concurrent gets. A memcached hit costs the daemon far more
// in the round trip (a pooled connection, write(2), read(2), a park in the
// netpoller, a wake-up) than in anything else, and memcached answers
// "gets k1 k2 ..." for about the price of one key. So gets that arrive
// while others are in flight are collected and sent as one GetMulti.
//
// At most memcacheBatchSlots requests are in flight. A get that finds a
// free slot sends its own key at once with a plain Get: an idle daemon
// pays no extra latency. Otherwise it queues its key and waits. A request
// that ends hands its slot to the first queued get together with the
// queued keys (up to memcacheBatchMax); that get sends them as the next
// batch, answers the others and hands on in turn. No goroutine is spawned
// and nothing is long-lived, so there is nothing to Close when the tiers
// are rebuilt on a reload.
//
// What a key gets back does not change: an item in the reply is a hit
// (decoded by its own caller), an absent key a miss. A batch sends one
// request per memcached server, so a failure is one server's. A failed
// request is counted and logged once (not once per key), every key it did
// not answer is a miss, and so is every key queued behind it whose server
// is now in backoff (every queued key when backoff is off), without a
// request: a down or frozen memcached costs the queue one request's time,
// as the backoff that starts then would have spared a lookup arriving
// later. (A key whose server is in backoff when its batch's turn comes is
// answered the same way.) A panic in a request still wakes every waiter
// and hands the slot on.
//
// How long a get waits: a request is bounded as any other, by Timeout for
// a request slot and by Timeout for the dial, the write and each reply
// line. A queued get waits for the request ahead of it to end and then
// for its own; with more than memcacheBatchSlots × memcacheBatchMax gets
// queued (as many as the sessions looking up at once, at most), for one
// more request per that many ahead of it, each bounded the same way and
// each answering memcacheBatchMax of them.
//
// Launching a full batch at once instead, beyond the slots, was measured
// worse: with 256 concurrent lookups the extra requests drained the queue
// as it filled, and the slots then carried one key each (1.7 keys per
// request instead of 30, and four times the CPU per get).
const (
	// memcacheBatchSlots is how many requests may be in flight.
	memcacheBatchSlots = 2
	// memcacheBatchMax is the most keys sent in one request.
	memcacheBatchMax = 64
)

// getBatcher collects concurrent gets into batches; its zero value is
// ready.
type getBatcher struct {
	mu      sync.Mutex
	running int          // batches in flight
	queue   []*getWaiter // gets waiting for the next batch, in order

	// batches and keys count requests and the keys sent in them, for
	// tests and benchmarks.
	batches, keys atomic.Int64
}

// getWaiter is one queued get.
type getWaiter struct {
	key string
	// ready gets one signal: the answer is in item, or (batch set) this
	// waiter leads the next batch.
	ready chan struct{}
	item  *memcache.Item
	batch []*getWaiter
}

var getWaiters = sync.Pool{New: func() any { return &getWaiter{ready: make(chan struct{}, 1)} }}

// get returns memcached's item for key, nil for a miss or a failure.
func (b *getBatcher) get(m *Memcache, key string) *memcache.Item {
	b.mu.Lock()
	if b.running < memcacheBatchSlots {
		b.running++
		b.mu.Unlock()
		return b.one(m, key)
	}
	w := getWaiters.Get().(*getWaiter)
	w.key = key
	b.queue = append(b.queue, w)
	b.mu.Unlock()
	<-w.ready
	if w.batch != nil {
		b.lead(m, w)
	}
	it := w.item
	*w = getWaiter{ready: w.ready}
	getWaiters.Put(w)
	return it
}

// one gets key alone in a free slot and hands the slot on, also when the
// request panics.
func (b *getBatcher) one(m *Memcache, key string) *memcache.Item {
	ok := false
	defer func() { b.handOn(m, ok) }()
	it, ok := m.getOne(key)
	return it
}

// lead runs the batch w was handed and hands the slot on, also when the
// request panics.
func (b *getBatcher) lead(m *Memcache, w *getWaiter) {
	ok := false
	defer func() { b.handOn(m, ok) }()
	ok = m.getBatch(w.batch, w)
}

// handOn passes the slot of a request that ended to the first queued get,
// with up to memcacheBatchMax queued keys, or frees it. After a failed
// request (ok false) the queued gets whose server is now in backoff are
// answered a miss at once, or every queued get when backoff is off.
func (b *getBatcher) handOn(m *Memcache, ok bool) {
	b.mu.Lock()
	var missed []*getWaiter
	if !ok && len(b.queue) > 0 {
		if m.opts.Backoff < 0 {
			missed, b.queue = b.queue, nil
		} else {
			kept := b.queue[:0]
			for _, w := range b.queue {
				if m.up(w.key) {
					kept = append(kept, w)
				} else {
					missed = append(missed, w)
				}
			}
			clear(b.queue[len(kept):])
			b.queue = kept
		}
	}
	if len(b.queue) == 0 {
		b.queue = b.queue[:0]
		b.running--
		b.mu.Unlock()
		wake(missed, nil)
		return
	}
	batch := b.queue
	b.queue = nil
	if len(batch) > memcacheBatchMax {
		b.queue = append([]*getWaiter(nil), batch[memcacheBatchMax:]...)
		batch = batch[:memcacheBatchMax:memcacheBatchMax]
	}
	b.mu.Unlock()
	wake(missed, nil)
	lead := batch[0]
	lead.batch = batch
	lead.ready <- struct{}{}
}

// wake signals every waiter of ws but self, which must not be touched
// afterwards.
func wake(ws []*getWaiter, self *getWaiter) {
	for _, w := range ws {
		if w != self {
			w.ready <- struct{}{}
		}
	}
}

// getOne gets a single key with a plain Get; ok is false when the request
// failed.
func (m *Memcache) getOne(key string) (it *memcache.Item, ok bool) {
	m.batch.batches.Add(1)
	m.batch.keys.Add(1)
	err := m.call(func() (err error) {
		it, err = m.client.Get(key)
		return err
	})
	if err != nil {
		if !errors.Is(err, memcache.ErrCacheMiss) {
			m.fail("get", err, key)
			return nil, false
		}
		return nil, true
	}
	return it, true
}

// getBatch gets the keys of batch, one request per memcached server (so
// that a failure is one server's), sets each waiter's item and wakes every
// waiter but self, also when a request panics. Keys whose server went
// into backoff since they queued are misses without a request. It is
// false when a request failed.
func (m *Memcache) getBatch(batch []*getWaiter, self *getWaiter) bool {
	defer wake(batch, self)
	var buf [memcacheBatchMax]*getWaiter
	live := buf[:0]
	for _, w := range batch {
		if m.up(w.key) {
			live = append(live, w)
		}
	}
	switch {
	case len(live) == 0:
		return true
	case len(live) == 1:
		var ok bool
		live[0].item, ok = m.getOne(live[0].key)
		return ok
	case len(m.downUntil) == 1:
		return m.getMulti(live)
	}
	groups := map[string][]*getWaiter{}
	var order []string
	for _, w := range live {
		a := ""
		if addr, err := m.servers.PickServer(w.key); err == nil {
			a = addr.String()
		}
		if groups[a] == nil {
			order = append(order, a)
		}
		groups[a] = append(groups[a], w)
	}
	oks := make([]bool, len(order))
	var wg sync.WaitGroup
	for i, a := range order[1:] {
		wg.Go(func() { oks[i+1] = m.getMulti(groups[a]) })
	}
	oks[0] = m.getMulti(groups[order[0]])
	wg.Wait()
	for _, ok := range oks {
		if !ok {
			return false
		}
	}
	return true
}

func (m *Memcache) getMulti(batch []*getWaiter) bool {
	if len(batch) == 1 {
		var ok bool
		batch[0].item, ok = m.getOne(batch[0].key)
		return ok
	}
	m.batch.batches.Add(1)
	m.batch.keys.Add(int64(len(batch)))
	keys := make([]string, len(batch))
	for i, w := range batch {
		keys[i] = w.key
	}
	var items map[string]*memcache.Item
	err := m.call(func() (err error) {
		items, err = m.client.GetMulti(keys)
		return err
	})
	if err != nil {
		m.fail("get", err, keys...)
	}
	// A failed request may still have answered some keys (GetMulti keeps
	// what it read); the others are misses.
	for _, w := range batch {
		w.item = items[w.key]
	}
	return err == nil
}
