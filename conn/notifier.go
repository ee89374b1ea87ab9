package conn

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// notifierCap bounds the callbacks waiting to run. A hostile server could
// otherwise grow the queue without end with malformed frames; beyond the cap
// the newest notifications are dropped and counted.
const notifierCap = 4096

// notifier runs user callbacks in order on one goroutine of its own, so that
// a callback may block or call back into the Conn without stalling it.
type notifier struct {
	mu      sync.Mutex
	queue   []func()
	dropped int
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	// goid is the id of the notifier's goroutine, so that close called from
	// inside a callback does not wait for itself.
	goid atomic.Uint64
}

func newNotifier() *notifier {
	n := &notifier{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go n.run()
	return n
}

// post queues f. It never blocks.
func (n *notifier) post(f func()) {
	n.mu.Lock()
	if len(n.queue) >= notifierCap {
		n.dropped++
		n.mu.Unlock()
		return
	}
	n.queue = append(n.queue, f)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) run() {
	defer close(n.done)
	n.goid.Store(goroutineID())
	for {
		n.mu.Lock()
		q := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, f := range q {
			f()
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-n.wake:
		case <-n.stop:
			// Drain what was posted before close, then stop.
			n.mu.Lock()
			q := n.queue
			n.queue = nil
			n.mu.Unlock()
			for _, f := range q {
				f()
			}
			return
		}
	}
}

// close stops the notifier after the queued callbacks have run and waits for
// that, unless it is called from a callback: then it returns at once and the
// goroutine ends when the callback returns.
func (n *notifier) close() {
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	if n.goid.Load() == goroutineID() {
		return
	}
	<-n.done
}

// goroutineID parses the current goroutine's id from its stack header
// ("goroutine 42 [running]:"). Only close uses it, once.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		id, _ := strconv.ParseUint(string(b[:i]), 10, 64)
		return id
	}
	return 0
}
