package manager

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the histogram Manager.Latency
// returns: from 25 µs to 10 s.
var LatencyBuckets = []time.Duration{
	25 * time.Microsecond, 50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// histogram counts durations into LatencyBuckets without locks.
type histogram struct {
	counts [19]atomic.Uint64 // one per bucket, and the overflow
	sum    atomic.Int64
	n      atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
	h.n.Add(1)
}

// Latency is a histogram of the time from a frame's arrival (as the
// connection read it) to the call of a subscription's handler with its
// event: the queueing the library adds. Counts[i] counts the latencies in
// (Buckets[i-1], Buckets[i]], and the last element those above the last
// bucket.
type Latency struct {
	Buckets []time.Duration
	Counts  []uint64
	Sum     time.Duration
	Count   uint64
}

// Latency returns the frame → handler latency over every subscription of
// the manager since New.
func (m *Manager) Latency() Latency {
	l := Latency{Buckets: LatencyBuckets, Counts: make([]uint64, len(m.latency.counts))}
	for i := range m.latency.counts {
		l.Counts[i] = m.latency.counts[i].Load()
	}
	l.Sum = time.Duration(m.latency.sum.Load())
	l.Count = m.latency.n.Load()
	return l
}
