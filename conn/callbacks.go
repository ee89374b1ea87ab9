package conn

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/internal/goid"
	"github.com/e41af43e/directus-realtime/protocol"
)

// notifierCap bounds the callbacks waiting to run on one notifier. A hostile
// server could otherwise grow the queue without end with malformed frames;
// beyond the cap the newest notifications are dropped and counted.
const notifierCap = 4096

// notifier runs user callbacks in order on one goroutine of its own, so that
// a callback may block or call back into the Conn without stalling it. The
// Conn has one per callback (OnStateChange, OnError, OnRefreshToken): a
// blocked OnError does not hold up state changes.
type notifier struct {
	guard func(func()) // runs a callback, recovering a panic

	mu       sync.Mutex
	queue    []func()
	dropped  int
	coalesce bool // keep only the newest callback (refresh tokens)
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	// goid is the id of the notifier's goroutine, so that close called from
	// inside a callback does not wait for itself.
	goid atomic.Uint64
}

func newNotifier(guard func(func()), coalesce bool) *notifier {
	n := &notifier{guard: guard, coalesce: coalesce, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go n.run()
	return n
}

// post queues f. It never blocks.
func (n *notifier) post(f func()) {
	n.mu.Lock()
	switch {
	case n.coalesce:
		// Only the newest matters (a refresh token replaces the previous).
		n.queue = append(n.queue[:0], f)
	case len(n.queue) >= notifierCap:
		n.dropped++
		n.mu.Unlock()
		return
	default:
		n.queue = append(n.queue, f)
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) run() {
	defer close(n.done)
	n.goid.Store(goid.Current())
	for {
		n.mu.Lock()
		q := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, f := range q {
			n.guard(f)
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-n.wake:
		case <-n.stop:
			// Run what was posted before close, then stop.
			n.mu.Lock()
			q := n.queue
			n.queue = nil
			n.mu.Unlock()
			for _, f := range q {
				n.guard(f)
			}
			return
		}
	}
}

// close stops the notifier after the queued callbacks have run and waits for
// that until deadline, unless it is called from a callback: then it returns
// at once and the goroutine ends when the callback returns. It reports
// whether the notifier has stopped (or will, being the caller's own).
func (n *notifier) close(deadline <-chan time.Time) bool {
	n.mu.Lock()
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	n.mu.Unlock()
	if n.goid.Load() == goid.Current() {
		return true
	}
	select {
	case <-n.done:
		return true
	case <-deadline:
		return false
	}
}

// callbacks are the Conn's notifiers, one per callback kind.
type callbacks struct {
	state, errs, tokens *notifier
}

func (c *Conn) startCallbacks() {
	c.notify = callbacks{
		state:  newNotifier(func(f func()) { c.guard("OnStateChange", f) }, false),
		errs:   newNotifier(func(f func()) { c.guard("OnError", f) }, false),
		tokens: newNotifier(func(f func()) { c.guard("OnRefreshToken", f) }, true),
	}
}

// stopCallbacks closes the notifiers, waiting for running callbacks until
// deadline; it reports which were abandoned.
func (c *Conn) stopCallbacks(deadline <-chan time.Time) (abandoned []string) {
	for _, n := range []struct {
		name string
		n    *notifier
	}{{"OnStateChange", c.notify.state}, {"OnError", c.notify.errs}, {"OnRefreshToken", c.notify.tokens}} {
		if !n.n.close(deadline) {
			abandoned = append(abandoned, n.name)
		}
	}
	return abandoned
}

// guard runs a user callback. Unless Config.CrashOnPanic is set, a panic is
// recovered and reported (to OnError as a *protocol.PanicError, except a
// panic of OnError itself, which is only logged).
func (c *Conn) guard(name string, f func()) {
	if c.cfg.CrashOnPanic {
		f()
		return
	}
	defer func() {
		if v := recover(); v != nil {
			c.reportPanic(name, v, debug.Stack())
		}
	}()
	f()
}

// guardedSource wraps the user's TokenSource so that a panic in it is
// recovered, reported, and returned as a *protocol.PanicError.
func (c *Conn) guardedSource(src func(context.Context) (string, error)) func(context.Context) (string, error) {
	if src == nil || c.cfg.CrashOnPanic {
		return src
	}
	return func(ctx context.Context) (tok string, err error) {
		defer func() {
			if v := recover(); v != nil {
				stack := debug.Stack()
				c.reportPanic("TokenSource", v, stack)
				err = &protocol.PanicError{Callback: "TokenSource", Value: v, Stack: stack}
			}
		}()
		return src(ctx)
	}
}

func (c *Conn) reportPanic(name string, v any, stack []byte) {
	pe := &protocol.PanicError{Callback: name, Value: v, Stack: stack}
	c.log.Error("callback panicked; recovered", "callback", name, "panic", v)
	if name != "OnError" {
		c.reportError(pe)
	}
}
