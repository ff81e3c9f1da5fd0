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
// At most memcacheBatchSlots batches are in flight. A get that finds a
// free slot sends its own key at once with a plain Get: an idle daemon
// pays no extra latency. Otherwise it queues its key and waits. A batch
// that ends hands its slot to the first queued waiter together with every
// queued key; that waiter runs the next batch, answers the others and
// hands on in turn. No goroutine is spawned and nothing is long-lived, so
// there is nothing to Close when the tiers are rebuilt on a reload.
//
// A get that completes a batch of memcacheBatchMax keys sends it at once,
// without waiting for a slot, so the queue never holds more than one
// batch: a queued get waits for at most one batch ahead of it to end (the
// first of those in flight) and then for its own. Each batch is one
// memcached request, bounded as any other by Timeout for a request slot
// and by Timeout for the dial, the write and each reply line. The number
// of requests in flight stays capped by the request slots (MaxIdleConns).
//
// What a key gets back does not change: an item in the reply is a hit
// (decoded by its own caller), an absent key a miss. A failed request is
// counted and logged once for the batch (not once per key) and every key
// it did not answer is a miss. A batch whose turn comes while memcached
// is in backoff is answered with misses without a request, as a lookup
// arriving then would have skipped memcached.
const (
	// memcacheBatchSlots is how many batches may be in flight.
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
		it := m.getOne(key)
		b.handOn()
		return it
	}
	w := getWaiters.Get().(*getWaiter)
	w.key = key
	b.queue = append(b.queue, w)
	var full []*getWaiter
	if len(b.queue) >= memcacheBatchMax {
		full, b.queue = b.queue, nil
		b.running++
	}
	b.mu.Unlock()
	switch {
	case full != nil:
		m.getBatch(full, w)
		b.handOn()
	default:
		<-w.ready
		if w.batch != nil {
			m.getBatch(w.batch, w)
			b.handOn()
		}
	}
	it := w.item
	*w = getWaiter{ready: w.ready}
	getWaiters.Put(w)
	return it
}

// handOn passes the slot of a batch that ended to the first queued get,
// with every queued key, or frees it.
func (b *getBatcher) handOn() {
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.running--
		b.mu.Unlock()
		return
	}
	batch := b.queue
	b.queue = nil
	b.mu.Unlock()
	lead := batch[0]
	lead.batch = batch
	lead.ready <- struct{}{}
}

// getOne gets a single key with a plain Get.
func (m *Memcache) getOne(key string) *memcache.Item {
	m.batch.batches.Add(1)
	m.batch.keys.Add(1)
	var it *memcache.Item
	err := m.call(func() (err error) {
		it, err = m.client.Get(key)
		return err
	})
	if err != nil {
		if !errors.Is(err, memcache.ErrCacheMiss) {
			m.fail("get", err)
		}
		return nil
	}
	return it
}

// getBatch gets the keys of batch in one request, sets each waiter's item
// and wakes every waiter but self, which must not be touched afterwards.
func (m *Memcache) getBatch(batch []*getWaiter, self *getWaiter) {
	if m.up() {
		if len(batch) == 1 {
			batch[0].item = m.getOne(batch[0].key)
		} else {
			m.getMulti(batch)
		}
	}
	for _, w := range batch {
		if w != self {
			w.ready <- struct{}{}
		}
	}
}

func (m *Memcache) getMulti(batch []*getWaiter) {
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
		m.fail("get", err)
	}
	// A failed request may still have answered some keys (GetMulti keeps
	// what it read); the others are misses.
	for _, w := range batch {
		w.item = items[w.key]
	}
}
