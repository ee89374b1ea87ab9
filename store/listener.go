package store

import (
	"context"
	"runtime/debug"
	"sync"

	"github.com/e41af43e/directus-realtime/internal/queue"
)

// Op is the kind of a Change.
type Op uint8

const (
	// OpAdd: a row appeared (created, or entered the subscription's filter).
	OpAdd Op = iota + 1
	// OpUpdate: a row changed; Old and New are set.
	OpUpdate
	// OpDelete: a row disappeared (deleted; left the filter, marked
	// FilterExit; or found missing by an init: it left the filter or its
	// delete was missed). Old is its last state.
	OpDelete
	// OpReset: the listener fell more than Options.ListenerQueue changes
	// behind; its backlog was dropped. Re-read the collection (Snapshot).
	// Changes after the reset may already be visible in that snapshot.
	OpReset
)

func (o Op) String() string {
	switch o {
	case OpAdd:
		return "add"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpReset:
		return "reset"
	}
	return "unknown"
}

// Change is one change of a row, as a listener hears it.
type Change[K comparable, T any] struct {
	Op       Op
	Key      K
	Old, New T
	// Initial marks changes of the first init, and the adds a listener
	// receives for the rows present when it was added.
	Initial bool
	// Resync marks changes found by a later init: after a reconnect, a
	// re-authentication, a queue overflow or a reconcile.
	Resync bool
	// FilterExit marks the OpDelete of a row that an update moved out of
	// the subscription's filter, removed at that update (Options.FilterExits)
	// rather than found missing by a later init.
	FilterExit bool
}

// Listener hears the changes of a Collection.
type Listener[K comparable, T any] interface {
	OnChange(Change[K, T])
}

// ListenerFunc adapts a function to Listener.
type ListenerFunc[K comparable, T any] func(Change[K, T])

// OnChange calls f(ch).
func (f ListenerFunc[K, T]) OnChange(ch Change[K, T]) { f(ch) }

// AddListener registers l and returns a function that removes it. l first
// hears an OpAdd marked Initial for every row present, then every later
// change, in order, from a goroutine of its own: a slow listener delays
// neither the replica nor the other listeners. Each change is delivered
// after the rows and indexes show it. A panic in l is recovered (unless
// Options.CrashOnPanic), reported to Options.OnError as a
// *protocol.PanicError, and the listener goes on with the next change.
func (c *Collection[K, T]) AddListener(l Listener[K, T]) (remove func()) {
	ls := &listener[K, T]{c: c, fn: l, q: queue.New[Change[K, T]](c.opts.ListenerQueue, c.opts.ListenerBytes),
		wake: make(chan struct{}, 1), stop: make(chan struct{})}
	c.lock()
	if c.closed {
		c.unlock()
		return func() {}
	}
	initial := make([]Change[K, T], 0, len(c.rows))
	for k, v := range c.rows {
		initial = append(initial, Change[K, T]{Op: OpAdd, Key: k, New: v, Initial: true})
	}
	ls.push(initial, c.rowSize())
	c.listeners[ls] = struct{}{}
	c.listenWG.Add(1)
	c.unlock()
	go func() {
		defer c.listenWG.Done()
		ls.run()
	}()
	return func() {
		c.lock()
		delete(c.listeners, ls)
		c.unlock()
		ls.halt()
	}
}

func (c *Collection[K, T]) notifyLocked(changes []Change[K, T]) {
	if len(changes) == 0 {
		return
	}
	for v := range c.views {
		v.applyLocked(changes)
	}
	size := c.rowSize()
	for l := range c.listeners {
		l.push(changes, size)
	}
}

// changeOverhead is counted per queued change besides its rows.
const changeOverhead = 64

type listener[K comparable, T any] struct {
	c  *Collection[K, T]
	fn Listener[K, T]

	mu       sync.Mutex
	q        *queue.Queue[Change[K, T]]
	wake     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
}

// push queues changes without blocking; past the queue's bounds (in changes
// and in bytes, each change counted as its rows' size) the backlog becomes
// one OpReset.
func (l *listener[K, T]) push(changes []Change[K, T], rowSize int64) {
	if len(changes) == 0 {
		return
	}
	l.mu.Lock()
	for _, ch := range changes {
		size := changeOverhead + rowSize
		if ch.Op == OpUpdate {
			size += rowSize // the old row and the new
		}
		if !l.q.Fits(size) {
			// The backlog and the rest of this batch are replaced by one
			// reset: the listener re-reads the collection.
			l.q.Discard()
			l.q.Push(Change[K, T]{Op: OpReset}, changeOverhead)
			break
		}
		l.q.Push(ch, size)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *listener[K, T]) run() {
	for {
		l.mu.Lock()
		ch, ok := l.q.Pop()
		l.mu.Unlock()
		if !ok {
			select {
			case <-l.wake:
				continue
			case <-l.stop:
				return
			}
		}
		select {
		case <-l.stop:
			return
		default:
		}
		l.call(ch)
		l.mu.Lock()
		l.q.Done(1)
		l.mu.Unlock()
	}
}

// call runs the listener on one change, recovering a panic.
func (l *listener[K, T]) call(ch Change[K, T]) {
	if !l.c.opts.CrashOnPanic {
		defer func() {
			if v := recover(); v != nil {
				l.c.reportPanic("listener", v, debug.Stack())
			}
		}()
	}
	l.fn.OnChange(ch)
}

// flush waits until the listener has handled every change queued before the
// call, or was removed.
func (l *listener[K, T]) flush(ctx context.Context) error {
	l.mu.Lock()
	target := l.q.Pushed()
	l.mu.Unlock()
	for {
		l.mu.Lock()
		if l.q.DoneCount() >= target {
			l.mu.Unlock()
			return nil
		}
		sig := l.q.Progress()
		l.mu.Unlock()
		select {
		case <-sig:
		case <-l.stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// FlushListeners waits until every listener has handled every change applied
// before the call, for instance before a program reads what its listeners
// built, or before Close, which drops what they have not handled.
func (c *Collection[K, T]) FlushListeners(ctx context.Context) error {
	c.mu.RLock()
	ls := make([]*listener[K, T], 0, len(c.listeners))
	for l := range c.listeners {
		ls = append(ls, l)
	}
	c.mu.RUnlock()
	for _, l := range ls {
		if err := l.flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (l *listener[K, T]) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
}
