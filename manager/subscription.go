package manager

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/queue"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Stats are a subscription's counters.
type Stats struct {
	// Events is the number of events handed to the handler, inits included.
	Events uint64
	// Resyncs counts inits delivered with Resync set; ResyncsByCause
	// splits them by cause (indexed by ResyncCause).
	Resyncs        uint64
	ResyncsByCause [NumResyncCauses]uint64
	// Errors counts error frames the server sent for the subscription
	// (delivered as handlers.KindError) and handler errors; ErrorCodes
	// counts the former by code.
	Errors     uint64
	ErrorCodes map[protocol.Code]uint64
	// Overflows counts queue overflows: each discarded the queued events and
	// asked for a resync, whose init replaces them.
	Overflows uint64
	// Panics counts recovered handler panics.
	Panics uint64
	// Queued and QueuedBytes are what waits for the handler now.
	Queued      int
	QueuedBytes int64
	// LastEvent is when the last delivered event was received.
	LastEvent time.Time
	// LastError is the last error of the subscription (an error event, a
	// refusal, a handler error or panic, a stall), and when it happened.
	LastError   error
	LastErrorAt time.Time
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
	// QueueSize and QueueBytes bound the events waiting for this
	// subscription's handler; 0 means Options.QueueSize and QueueBytes.
	QueueSize  int
	QueueBytes int64
}

// awaiting says which init a subscription waits for.
type awaiting uint8

const (
	awaitNone awaiting = iota
	awaitWire          // the init of a new subscribe attempt, shared by the server subscription's locals
	awaitRead          // the reply of its own resync read
)

// held is an event held for an awaited init, with its frame's place in the
// session (protocol.Message.Seq).
type held struct {
	ev  handlers.Event
	seq uint64
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
	scope      *Scope
	stopScoped func() bool // unbinds the scoping context

	ss *serverSub // guarded by m.mu

	ready    chan struct{} // closed at the first init or when Subscribe fails
	readyErr error         // set before ready is closed
	done     chan struct{} // closed when the subscription ends

	// Delivery state, guarded by dmu. Lock order: m.mu before dmu.
	dmu     sync.Mutex
	q       *queue.Queue[handlers.Event]
	running bool          // a handler goroutine exists
	wake    chan struct{} // wakes a parked handler goroutine (cap 1)
	ended   bool
	endErr  error
	gotInit bool
	await   awaiting
	// readSeq numbers the resync reads; a reply whose number is not the
	// current one is stale.
	readSeq uint64
	// cause is why the awaited init was asked for.
	cause  ResyncCause
	failed bool
	// recomputeAgain: an event of an aggregate subscription arrived while
	// its init was under way, which may predate it: read once more after.
	recomputeAgain bool
	// stalled: the queue overflowed; events are dropped until the handler
	// returns, then a resync is asked for (recover).
	stalled bool
	recover bool // a resync is due once the queue is empty
	// retry paces recoveries: step of the backoff, and when the last
	// trouble was.
	retryStep   int
	lastTrouble time.Time
	retryTimer  *time.Timer
	// initAt is the queue's pushed count at the last init, so that Resync
	// can wait until the handler has handled that init.
	initAt  uint64
	initSig chan struct{} // closed and replaced at every init and refusal
	roomSig chan struct{} // closed when the queue is down to a quarter used, if route waits for room
	// early holds events of the awaited attempt that arrived before its
	// init: Directus registers a subscription before it sends the init (and
	// a resync read runs while the server subscription delivers), so an
	// event can overtake it; events carry rows as read at dispatch, so they
	// are newer than the init and follow it.
	early *queue.Queue[held]
	// earlyLost records that early overflowed: another resync is needed.
	earlyLost bool
	lastErr   error
	lastErrAt time.Time
	codes     map[protocol.Code]uint64

	events, resyncs, errs, overflows, panics atomic.Uint64
	byCause                                  [NumResyncCauses]atomic.Uint64
	lastEvent                                atomic.Int64
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

// Resync asks the server for a fresh init of this subscription, delivered
// with Resync set, and returns once the handler has handled it. Other
// subscriptions sharing its server subscription are not disturbed: the
// init is read for this one alone. When the server refuses the read (the
// identity lost read permission, or the item of a single-item subscription
// is gone), the subscription is failed and ErrResyncRefused returned. It
// must not be called from the subscription's own handler, which would wait
// for itself.
func (s *Subscription) Resync(ctx context.Context) error {
	return s.m.resync(ctx, s)
}

// Flush waits until the handler has handled every event queued for the
// subscription before the call: after Subscribe, it waits for the first
// init to have been handled. It must not be called from the subscription's
// own handler, which would wait for itself.
func (s *Subscription) Flush(ctx context.Context) error {
	s.dmu.Lock()
	n := s.q.Pushed()
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
	case s.stalled:
		return StateStalled
	case !s.gotInit:
		return StatePending
	case s.await != awaitNone || s.recover:
		return StateResyncing
	}
	return StateActive
}

// Stats returns the counters.
func (s *Subscription) Stats() Stats {
	st := Stats{
		Events:    s.events.Load(),
		Resyncs:   s.resyncs.Load(),
		Errors:    s.errs.Load(),
		Overflows: s.overflows.Load(),
		Panics:    s.panics.Load(),
	}
	for i := range s.byCause {
		st.ResyncsByCause[i] = s.byCause[i].Load()
	}
	if ns := s.lastEvent.Load(); ns != 0 {
		st.LastEvent = time.Unix(0, ns)
	}
	s.dmu.Lock()
	st.Queued, st.QueuedBytes = s.q.Len(), s.q.Bytes()
	st.LastError, st.LastErrorAt = s.lastErr, s.lastErrAt
	if len(s.codes) > 0 {
		st.ErrorCodes = make(map[protocol.Code]uint64, len(s.codes))
		for c, n := range s.codes {
			st.ErrorCodes[c] = n
		}
	}
	s.dmu.Unlock()
	return st
}

// event builds this subscription's copy of a frame's event.
func (s *Subscription) event(kind handlers.Kind, data, meta json.RawMessage, received time.Time) handlers.Event {
	return handlers.Event{
		Kind: kind, UID: s.uid, Collection: s.opts.Collection, Item: s.item,
		Data: data, Meta: meta, Received: received,
	}
}

// noteErrorLocked records the subscription's last error.
func (s *Subscription) noteErrorLocked(err error) {
	s.lastErr, s.lastErrAt = err, time.Now()
}

// serverErr rewrites a server error frame for this subscription: its uid
// becomes the local one, which is the one the caller knows.
func (s *Subscription) serverErr(e *protocol.ServerError) *protocol.ServerError {
	c := *e
	c.UID = protocol.UID(s.uid)
	return &c
}
