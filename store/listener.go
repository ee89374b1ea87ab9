package store

import (
	"context"
	"sync"
)

// Op is the kind of a Change.
type Op uint8

const (
	// OpAdd: a row appeared (created, or entered the subscription's filter).
	OpAdd Op = iota + 1
	// OpUpdate: a row changed; Old and New are set.
	OpUpdate
	// OpDelete: a row disappeared (deleted, or found missing by an init:
	// it left the filter or its delete was missed). Old is its last state.
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
// after the rows and indexes show it.
func (c *Collection[K, T]) AddListener(l Listener[K, T]) (remove func()) {
	ls := &listener[K, T]{fn: l, limit: c.opts.ListenerQueue, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	c.lock()
	if c.closed {
		c.unlock()
		return func() {}
	}
	initial := make([]Change[K, T], 0, len(c.rows))
	for k, v := range c.rows {
		initial = append(initial, Change[K, T]{Op: OpAdd, Key: k, New: v, Initial: true})
	}
	ls.push(initial)
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
	for l := range c.listeners {
		l.push(changes)
	}
}

type listener[K comparable, T any] struct {
	fn    Listener[K, T]
	limit int

	mu       sync.Mutex
	queue    []Change[K, T]
	head     int
	wake     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	// pushed counts changes queued and done those handled or dropped, so
	// that FlushListeners can wait for what is queued now.
	pushed, done uint64
	doneSig      chan struct{} // closed when done moves, if someone waits
}

// push queues changes without blocking; past the limit the backlog becomes
// one OpReset.
func (l *listener[K, T]) push(changes []Change[K, T]) {
	if len(changes) == 0 {
		return
	}
	l.mu.Lock()
	if len(l.queue)-l.head+len(changes) > l.limit {
		l.advanceLocked(uint64(len(l.queue) - l.head + len(changes)))
		clear(l.queue)
		l.queue = append(l.queue[:0], Change[K, T]{Op: OpReset})
		l.head = 0
		l.pushed += uint64(len(changes)) + 1
	} else {
		l.queue = append(l.queue, changes...)
		l.pushed += uint64(len(changes))
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *listener[K, T]) run() {
	handled := uint64(0)
	for {
		l.mu.Lock()
		l.advanceLocked(handled)
		handled = 1
		if l.head == len(l.queue) {
			clear(l.queue)
			l.queue, l.head = l.queue[:0], 0
			l.mu.Unlock()
			select {
			case <-l.wake:
				continue
			case <-l.stop:
				return
			}
		}
		ch := l.queue[l.head]
		l.queue[l.head] = Change[K, T]{}
		l.head++
		l.mu.Unlock()
		select {
		case <-l.stop:
			return
		default:
		}
		l.fn.OnChange(ch)
	}
}

func (l *listener[K, T]) advanceLocked(n uint64) {
	if n == 0 {
		return
	}
	l.done += n
	if l.doneSig != nil {
		close(l.doneSig)
		l.doneSig = nil
	}
}

// flush waits until the listener has handled every change queued before the
// call, or was removed.
func (l *listener[K, T]) flush(ctx context.Context) error {
	l.mu.Lock()
	target := l.pushed
	l.mu.Unlock()
	for {
		l.mu.Lock()
		if l.done >= target {
			l.mu.Unlock()
			return nil
		}
		if l.doneSig == nil {
			l.doneSig = make(chan struct{})
		}
		sig := l.doneSig
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
