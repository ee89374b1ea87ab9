// Package queue is the bounded FIFO behind every per-consumer queue of the
// module: a subscription's events (manager) and a listener's changes
// (store). It is bounded in items and in bytes, and it counts progress
// (items pushed, items done), so that a caller can wait until what was
// queued before a point in time has been handled. Each owner keeps its own
// overflow policy (the manager resyncs, the store sends a reset).
//
// A Queue is not safe for concurrent use: its owner guards it with its own
// lock, together with the state the policy needs.
package queue

// idleCap is the largest backing array an empty queue keeps: a burst may
// grow the array to the queue's bound, and an idle consumer should not hold
// that memory.
const idleCap = 64

// Queue is a FIFO of T bounded by MaxItems items and MaxBytes bytes (as
// sized by the pusher). An empty queue always accepts one item, however
// large: a single init can exceed any byte budget and must still pass.
type Queue[T any] struct {
	maxItems int
	maxBytes int64

	buf   []slot[T] // ring buffer
	head  int
	n     int
	bytes int64

	pushed, done uint64
	progress     chan struct{} // closed when done advances, if someone waits
}

type slot[T any] struct {
	v    T
	size int64
}

// New returns an empty queue; a non-positive bound means none.
func New[T any](maxItems int, maxBytes int64) *Queue[T] {
	return &Queue[T]{maxItems: maxItems, maxBytes: maxBytes}
}

// Len returns the number of items queued.
func (q *Queue[T]) Len() int { return q.n }

// Bytes returns the size of the items queued.
func (q *Queue[T]) Bytes() int64 { return q.bytes }

// Fits reports whether an item of size would stay within the bounds.
func (q *Queue[T]) Fits(size int64) bool {
	if q.n == 0 {
		return true
	}
	if q.maxItems > 0 && q.n >= q.maxItems {
		return false
	}
	return q.maxBytes <= 0 || q.bytes+size <= q.maxBytes
}

// Below reports whether the queue is at most a fraction num/den of its
// bounds, both in items and in bytes: where a pusher waiting for room
// resumes.
func (q *Queue[T]) Below(num, den int) bool {
	itemsOK := q.maxItems <= 0 || q.n*den <= q.maxItems*num
	bytesOK := q.maxBytes <= 0 || q.bytes*int64(den) <= q.maxBytes*int64(num)
	return itemsOK && bytesOK
}

// Push appends v, of size bytes, whether or not it fits: callers check
// Fits first unless the item must pass (an init).
func (q *Queue[T]) Push(v T, size int64) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = slot[T]{v: v, size: size}
	q.n++
	q.bytes += size
	q.pushed++
}

func (q *Queue[T]) grow() {
	c := max(2*len(q.buf), 8)
	if q.maxItems > 0 && c > q.maxItems && q.n < q.maxItems {
		c = q.maxItems
	}
	buf := make([]slot[T], c)
	for i := 0; i < q.n; i++ {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

// Pop removes and returns the oldest item. It is not counted done until the
// caller says so with Done (after handling it).
func (q *Queue[T]) Pop() (T, bool) {
	var zero T
	if q.n == 0 {
		return zero, false
	}
	s := q.buf[q.head]
	q.buf[q.head] = slot[T]{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.bytes -= s.size
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > idleCap {
			q.buf = nil
		}
	}
	return s.v, true
}

// Done counts n popped items as handled and wakes those waiting for
// progress.
func (q *Queue[T]) Done(n int) {
	if n <= 0 {
		return
	}
	q.done += uint64(n)
	if q.progress != nil {
		close(q.progress)
		q.progress = nil
	}
}

// Discard drops every queued item, counting them done, and returns how many
// there were.
func (q *Queue[T]) Discard() int {
	n := q.n
	for q.n > 0 {
		q.Pop()
	}
	q.buf, q.head = nil, 0
	q.Done(n)
	return n
}

// Pushed returns how many items were ever pushed.
func (q *Queue[T]) Pushed() uint64 { return q.pushed }

// DoneCount returns how many items were handled or discarded.
func (q *Queue[T]) DoneCount() uint64 { return q.done }

// Progress returns a channel closed the next time Done advances.
func (q *Queue[T]) Progress() <-chan struct{} {
	if q.progress == nil {
		q.progress = make(chan struct{})
	}
	return q.progress
}

// Close wakes every waiter for good; the queue must not be used afterwards
// except for reading its counters.
func (q *Queue[T]) Close() {
	q.Discard()
	if q.progress != nil {
		close(q.progress)
		q.progress = nil
	}
}
