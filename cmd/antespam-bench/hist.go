package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram shared by every worker: values
// below 256 ns are exact, larger ones keep 8 significant bits (buckets
// under 0.8% wide). Recording is three atomic adds, so workers need no
// histogram of their own and the merge is free.
type hist struct {
	counts [256 + 56*128]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
}

func bucket(v int64) int {
	if v < 256 {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	sh := bits.Len64(uint64(v)) - 8
	m := v >> sh
	return 256 + (sh-1)*128 + int(m-128)
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) int64 {
	if i < 256 {
		return int64(i)
	}
	sh := (i-256)/128 + 1
	m := int64((i-256)%128 + 128)
	return m<<sh + (int64(1)<<sh)/2
}

func (h *hist) record(d time.Duration) {
	v := int64(d)
	h.counts[bucket(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// quantile returns the value at rank ceil(q*n).
func (h *hist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank >= n {
		return time.Duration(h.max.Load())
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := bucketValue(i)
			if m := h.max.Load(); v > m {
				v = m
			}
			return time.Duration(v)
		}
	}
	return time.Duration(h.max.Load())
}

// Latency is a histogram's summary in microseconds, for humans and -json.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

func us(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)*10) / 10 }

func (h *hist) summary() Latency {
	n := h.n.Load()
	l := Latency{Count: n}
	if n == 0 {
		return l
	}
	l.Mean = us(time.Duration(h.sum.Load() / int64(n)))
	l.P50 = us(h.quantile(0.50))
	l.P90 = us(h.quantile(0.90))
	l.P99 = us(h.quantile(0.99))
	l.P999 = us(h.quantile(0.999))
	l.Max = us(time.Duration(h.max.Load()))
	return l
}
