package manager

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Stats are a subscription's counters.
type Stats struct {
	// Events is the number of events handed to the handler, inits included.
	Events uint64
	// Resyncs counts inits delivered with Resync set.
	Resyncs uint64
	// Errors counts error frames the server sent for the subscription
	// (delivered as handlers.KindError) and handler errors.
	Errors uint64
	// Overflows counts queue overflows: each discarded the queued events and
	// asked for a resync, whose init replaces them.
	Overflows uint64
	// LastEvent is when the last delivered event was received.
	LastEvent time.Time
}

// SubscribeOptions describe a subscription, as the composable's subscribe
// options do.
type SubscribeOptions struct {
	// Collection is required.
	Collection string
	// Query shapes init and events (fields, filter, sort, limit …). Without
	// a limit Directus applies its default of 100 rows to the init; use
	// Limit -1 for every row.
	Query *protocol.Query
	// Item, a string or an integer, subscribes to one item.
	Item any
	// Event, when set (protocol.EventCreate, EventUpdate or EventDelete),
	// delivers only that action; the init then carries no data.
	Event string
	// UID names the subscription locally; a second Subscribe with an active
	// UID gets the existing subscription and a *DuplicateError. Empty means
	// a generated uid that is never reused.
	UID string
	// Persistent subscriptions live until Unsubscribe(uid) or Close, and
	// UnsubscribeCollection and UnsubscribeAll spare them. Others end when
	// the ctx given to Subscribe is done (or their Scope closes).
	Persistent bool
	// QueueSize bounds the events waiting for this subscription's handler;
	// 0 means Options.QueueSize.
	QueueSize int
}

// Subscription is the handle of one local subscription. Its methods are safe
// for concurrent use.
type Subscription struct {
	m          *Manager
	uid        string
	opts       SubscribeOptions
	handler    handlers.Handler
	item       bool
	created    time.Time
	seq        uint64 // creation order
	queueSize  int
	scope      *Scope
	stopScoped func() bool // unbinds the scoping context

	ss *serverSub // guarded by m.mu

	ready    chan struct{} // closed at the first init or when Subscribe fails
	initSig  chan struct{} // closed and replaced at every init and refusal (guarded by dmu)
	readyErr error         // set before ready is closed
	done     chan struct{} // closed when the subscription ends

	// Delivery state, guarded by dmu. Lock order: m.mu before dmu.
	dmu            sync.Mutex
	queue          []handlers.Event
	head           int
	running        bool
	ended          bool
	endErr         error
	gotInit        bool
	awaitingResync bool
	failed         bool
	// pushed counts events queued, consumed those handled or discarded;
	// initAt is the value of pushed at the last init, so that Resync can
	// wait until the handler has handled that init.
	pushed, consumed, initAt uint64
	consumedSig              chan struct{} // closed when consumed moves, if someone waits
	roomSig                  chan struct{} // closed when the queue is down to roomAt, if route waits for room
	roomAt                   int
	// early holds events of the current attempt that arrived before its
	// init. Directus registers a subscription before it sends the init, so
	// an event can overtake it; events carry rows as read at dispatch, so
	// they are newer than the init and follow it.
	early []handlers.Event
	// earlyLost records that early overflowed: the init and what is left of
	// early miss events, so another resync is needed.
	earlyLost bool

	events, resyncs, errors, overflows atomic.Uint64
	lastEvent                          atomic.Int64
}

// UID returns the subscription's local uid.
func (s *Subscription) UID() string { return s.uid }

// Collection returns the subscribed collection.
func (s *Subscription) Collection() string { return s.opts.Collection }

// Persistent reports whether the subscription outlives contexts and is
// spared by UnsubscribeCollection and UnsubscribeAll.
func (s *Subscription) Persistent() bool { return s.opts.Persistent }

// Options returns the options the subscription was made with.
func (s *Subscription) Options() SubscribeOptions { return s.opts }

// Done is closed when the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended (ErrUnsubscribed, ErrClosed, the
// scoping context's cause), or nil while it lives.
func (s *Subscription) Err() error {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return s.endErr
}

// Unsubscribe ends this subscription (not another one that later took its
// uid). Its handler gets no event after Unsubscribe returns, except the one
// it may be running. It returns ErrNotFound if the subscription had already
// ended.
func (s *Subscription) Unsubscribe() error {
	return s.m.end(s, ErrUnsubscribed)
}

// Resync asks the server for a fresh init, delivered with Resync set, and
// returns once the handler has handled it. Subscriptions sharing the server
// subscription get it too. It must not be called from the subscription's
// own handler, which would wait for itself.
func (s *Subscription) Resync(ctx context.Context) error {
	return s.m.resync(ctx, s)
}

// Flush waits until the handler has handled every event queued for the
// subscription before the call: after Subscribe, it waits for the first
// init to have been handled. It must not be called from the subscription's
// own handler, which would wait for itself.
func (s *Subscription) Flush(ctx context.Context) error {
	s.dmu.Lock()
	n := s.pushed
	s.dmu.Unlock()
	return s.waitConsumed(ctx, n)
}

// State returns the live state: a subscription whose connection is down is
// resyncing, since it will be restored with a fresh init.
func (s *Subscription) State() SubscriptionState {
	s.dmu.Lock()
	st := s.stateLocked()
	s.dmu.Unlock()
	if st == StateActive && !s.m.IsConnected() {
		return StateResyncing
	}
	return st
}

func (s *Subscription) stateLocked() SubscriptionState {
	switch {
	case s.ended:
		return StateEnded
	case s.failed:
		return StateFailed
	case !s.gotInit:
		return StatePending
	case s.awaitingResync:
		return StateResyncing
	}
	return StateActive
}

// Stats returns the subscription's counters.
func (s *Subscription) Stats() Stats {
	st := Stats{
		Events:    s.events.Load(),
		Resyncs:   s.resyncs.Load(),
		Errors:    s.errors.Load(),
		Overflows: s.overflows.Load(),
	}
	if ns := s.lastEvent.Load(); ns != 0 {
		st.LastEvent = time.Unix(0, ns)
	}
	return st
}

// event builds this subscription's copy of a frame's event.
func (s *Subscription) event(kind handlers.Kind, data, meta json.RawMessage, received time.Time) handlers.Event {
	return handlers.Event{
		Kind: kind, UID: s.uid, Collection: s.opts.Collection, Item: s.item,
		Data: data, Meta: meta, Received: received,
	}
}

// deliverInit queues an init. It follows whatever is queued: events before
// it still reach a handler that wants every event, and the init then
// replaces the state they built. Resync is set when the handler saw an init
// before. It reports whether events that overtook the init were lost, in
// which case another resync must be asked for.
func (s *Subscription) deliverInit(ev handlers.Event) (again bool) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended {
		return false
	}
	ev.Resync = s.gotInit
	s.gotInit = true
	s.awaitingResync = false
	s.failed = false
	s.pushLocked(ev)
	s.initAt = s.pushed
	if s.earlyLost {
		// The events kept are superseded by the next init anyway.
		s.early, s.earlyLost = nil, false
		again = true
	}
	for _, e := range s.early {
		s.pushLocked(e)
	}
	s.early = nil
	s.markReadyLocked(nil)
	s.signalInitLocked()
	return again
}

func (s *Subscription) signalInitLocked() {
	close(s.initSig)
	s.initSig = make(chan struct{})
}

// delivery is the outcome of tryDeliver.
type delivery int

const (
	delivered delivery = iota // queued, or held for the awaited init, or dropped because it ended
	queueFull                 // the queue is full: wait for room, then try again or overflow
)

// tryDeliver queues a create, update, delete or error event without
// waiting. Events of the attempt whose init is awaited are held to follow
// it (route drops those of replaced attempts).
func (s *Subscription) tryDeliver(ev handlers.Event) delivery {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended {
		return delivered
	}
	if !s.gotInit || s.awaitingResync {
		if len(s.early) < s.queueSize {
			s.early = append(s.early, ev)
		} else if !s.earlyLost {
			s.overflows.Add(1)
			s.earlyLost = true
		}
		return delivered
	}
	if len(s.queue)-s.head >= s.queueSize {
		return queueFull
	}
	s.pushLocked(ev)
	return delivered
}

// overflow discards the queue of a subscription whose handler made no room
// in time; a resync must be asked for.
func (s *Subscription) overflow() {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended || s.awaitingResync {
		return
	}
	s.overflows.Add(1)
	s.discardLocked()
	s.awaitingResync = true
}

// waitRoom waits until the queue is a quarter free, the subscription ends
// or the deadline passes, and reports whether there is room. It is called
// without any lock: a handler that calls the manager meanwhile is not held
// up by the wait.
func (s *Subscription) waitRoom(deadline time.Time) bool {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	for len(s.queue)-s.head >= s.queueSize && !s.ended {
		wait := time.Until(deadline)
		if wait <= 0 {
			return false
		}
		if s.roomSig == nil {
			// Woken when the queue is down to a quarter free, not at every
			// event taken: one wake-up per burst, not one per event.
			s.roomSig = make(chan struct{})
			s.roomAt = s.queueSize - max(s.queueSize/4, 1)
		}
		sig := s.roomSig
		s.dmu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-sig:
		case <-t.C:
		}
		t.Stop()
		s.dmu.Lock()
	}
	return true
}

// markResyncing records that a fresh init was asked for.
func (s *Subscription) markResyncing() {
	s.dmu.Lock()
	if s.gotInit {
		s.awaitingResync = true
	}
	s.early, s.earlyLost = nil, false // they belonged to the attempt being replaced
	s.dmu.Unlock()
}

// fail records a refused subscribe. A subscription that never had an init
// fails its Subscribe call; one that had gets an error event and stays.
func (s *Subscription) fail(err error, ev handlers.Event) (firstSubscribe bool) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if !s.gotInit {
		s.markReadyLocked(err)
		return true
	}
	s.failed = true
	s.awaitingResync = false
	s.pushLocked(ev)
	s.signalInitLocked()
	return false
}

func (s *Subscription) markReadyLocked(err error) {
	select {
	case <-s.ready:
	default:
		s.readyErr = err
		close(s.ready)
	}
}

// discardLocked drops the queued events, counting them as consumed.
func (s *Subscription) discardLocked() {
	s.advanceLocked(uint64(len(s.queue) - s.head))
	s.emptyQueueLocked()
}

// idleQueueCap is the largest backing array an empty queue keeps: a burst
// may grow the array to the queue's size, and an idle subscription should
// not hold that memory.
const idleQueueCap = 64

// emptyQueueLocked empties the queue, releasing a large backing array.
func (s *Subscription) emptyQueueLocked() {
	if cap(s.queue) > idleQueueCap {
		s.queue = nil
	} else {
		clear(s.queue)
		s.queue = s.queue[:0]
	}
	s.head = 0
}

func (s *Subscription) advanceLocked(n uint64) {
	if n == 0 {
		return
	}
	s.consumed += n
	if s.consumedSig != nil {
		close(s.consumedSig)
		s.consumedSig = nil
	}
}

// waitConsumed waits until the handler has handled (or the subscription
// discarded) the first n events queued.
func (s *Subscription) waitConsumed(ctx context.Context, n uint64) error {
	for {
		s.dmu.Lock()
		if s.consumed >= n || s.ended {
			ended := s.ended
			s.dmu.Unlock()
			if ended {
				return s.Err()
			}
			return nil
		}
		if s.consumedSig == nil {
			s.consumedSig = make(chan struct{})
		}
		sig := s.consumedSig
		s.dmu.Unlock()
		select {
		case <-sig:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Subscription) pushLocked(ev handlers.Event) {
	s.pushed++
	if len(s.queue) == cap(s.queue) && s.head >= cap(s.queue)/4 {
		// Reuse the slots already handled rather than let append grow the
		// array: a queue that never empties during a long burst would
		// otherwise reach the size of the whole burst, not of QueueSize.
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue, s.head = s.queue[:n], 0
	}
	s.queue = append(s.queue, ev)
	if !s.running {
		s.running = true
		s.m.drains.Add(1)
		go s.drain()
	}
}

// drain runs the handler over the queue, one event at a time, and exits
// when the queue is empty: idle subscriptions cost no goroutine.
func (s *Subscription) drain() {
	defer s.m.drains.Done()
	handled := uint64(0)
	for {
		s.dmu.Lock()
		s.advanceLocked(handled)
		handled = 1
		if s.ended || s.head == len(s.queue) {
			s.emptyQueueLocked()
			s.running = false
			s.dmu.Unlock()
			return
		}
		ev := s.queue[s.head]
		s.queue[s.head] = handlers.Event{}
		s.head++
		if s.roomSig != nil && len(s.queue)-s.head <= s.roomAt {
			close(s.roomSig)
			s.roomSig = nil
		}
		s.dmu.Unlock()

		// Counted before the call, so that a handler sees its own event
		// in Stats.
		s.events.Add(1)
		s.lastEvent.Store(ev.Received.UnixNano())
		if ev.Kind == handlers.KindInit && ev.Resync {
			s.resyncs.Add(1)
		}
		if ev.Kind == handlers.KindError {
			s.errors.Add(1)
		}
		err := s.handler.Handle(ev)
		if err != nil {
			s.errors.Add(1)
			s.m.reportError(&HandlerError{UID: s.uid, Kind: ev.Kind, Err: err})
		}
	}
}

// finish marks the subscription ended and drops its queue. It reports false
// if it had ended already.
func (s *Subscription) finish(cause error) bool {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended {
		return false
	}
	s.ended = true
	s.endErr = cause
	s.discardLocked()
	s.queue, s.early = nil, nil
	if s.consumedSig != nil {
		close(s.consumedSig)
		s.consumedSig = nil
	}
	if s.roomSig != nil {
		close(s.roomSig)
		s.roomSig = nil
	}
	s.markReadyLocked(cause)
	close(s.done)
	return true
}

// serverErr rewrites a server error frame for this subscription: its uid
// becomes the local one, which is the one the caller knows.
func (s *Subscription) serverErr(e *protocol.ServerError) *protocol.ServerError {
	c := *e
	c.UID = protocol.UID(s.uid)
	return &c
}
