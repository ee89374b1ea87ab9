package graphql

import (
	"runtime/debug"
	"sync"

	"github.com/e41af43e/directus-realtime/protocol"
)

// notifier runs one kind of user callback on its own goroutine, in order.
// Its backlog is bounded: when the callback is stuck and notifierBacklog
// notifications wait, further ones are dropped (and logged), so a blocked
// callback holds up nothing but itself.
type notifier[T any] struct {
	name    string
	fn      func(T)
	onPanic func(*protocol.PanicError)
	ch      chan T
	wg      sync.WaitGroup

	mu      sync.Mutex
	stopped bool
}

const notifierBacklog = 256

func newNotifier[T any](name string, fn func(T), onPanic func(*protocol.PanicError), own func() func()) *notifier[T] {
	n := &notifier[T]{name: name, fn: fn, onPanic: onPanic, ch: make(chan T, notifierBacklog)}
	if fn == nil {
		return n
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer own()()
		for v := range n.ch {
			n.call(v)
		}
	}()
	return n
}

func (n *notifier[T]) call(v T) {
	defer func() {
		if r := recover(); r != nil && n.onPanic != nil {
			n.onPanic(&protocol.PanicError{Callback: n.name, Value: r, Stack: debug.Stack()})
		}
	}()
	n.fn(v)
}

// send queues v; it reports false when v was dropped.
func (n *notifier[T]) send(v T) bool {
	if n.fn == nil {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return false
	}
	select {
	case n.ch <- v:
		return true
	default:
		return false
	}
}

// stop closes the queue and returns a channel closed once the callback
// goroutine has drained it.
func (n *notifier[T]) stop() <-chan struct{} {
	n.mu.Lock()
	if !n.stopped {
		n.stopped = true
		close(n.ch)
	}
	n.mu.Unlock()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	return done
}
