package graphql

import (
	"encoding/json"
	"runtime/debug"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/queue"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Subscription is one live subscription. Its methods are safe for
// concurrent use. Its handler runs on the subscription's own goroutine, one
// event at a time, in the order the server sent them.
type Subscription struct {
	m       *Manager
	uid     string
	opts    SubscribeOptions
	fields  []string
	h       handlers.Handler
	done    chan struct{}
	wake    chan struct{}
	replica *replicaState // nil for a plain subscription

	// Guarded by m.mu.
	stopScope  func() bool
	wireID     string
	sentOn     *session
	ended      bool
	err        error
	q          *queue.Queue[handlers.Event]
	queueBytes int64 // the queue's byte bound, also the bound of a replica's buffer
	overflowed bool  // reported once per episode
}

// UID returns the subscription's local uid.
func (s *Subscription) UID() string { return s.uid }

// Collection returns the subscribed collection.
func (s *Subscription) Collection() string { return s.opts.Collection }

// Persistent reports whether the subscription outlives its context.
func (s *Subscription) Persistent() bool { return s.opts.Persistent }

// Done is closed when the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err says why an ended subscription ended: nil after Unsubscribe or its
// context, a *SubscribeError when the server refused it,
// protocol.ErrClosed after Close.
func (s *Subscription) Err() error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.err
}

// Unsubscribe ends the subscription.
func (s *Subscription) Unsubscribe() error {
	s.m.end(s, nil)
	return nil
}

func (s *Subscription) subscribeFrame() frame {
	p, _ := json.Marshal(map[string]string{"query": subscriptionQuery(s.opts.Collection, s.opts.Event, s.fields)})
	return frame{Type: "subscribe", ID: s.wireID, Payload: p}
}

// attachedLocked runs when the subscription is (re)sent on a session.
func (s *Subscription) attachedLocked(ready <-chan struct{}) {
	if s.replica != nil {
		s.replica.startAfterLocked(ready)
	}
}

// next handles one next message (reader goroutine).
func (s *Subscription) next(payload json.RawMessage) {
	now := time.Now()
	kind, key, data, err := parseNext(payload, s.opts.Collection)
	if err != nil {
		if se, ok := err.(*SubscribeError); ok {
			s.enqueue(handlers.Event{Kind: handlers.KindError, UID: s.uid, Collection: s.opts.Collection, Err: se, Received: now}, 64)
			return
		}
		s.m.reportError(err)
		return
	}
	ev := handlers.Event{Kind: kind, UID: s.uid, Collection: s.opts.Collection, Received: now}
	if kind == handlers.KindDelete {
		ev.Data = wrap(key)
	} else {
		if len(data) == 0 || string(data) == "null" {
			// An update re-read that yields nothing: the row is no
			// longer readable. Directus sends nothing in that case; a
			// replica's reconcile corrects it.
			return
		}
		ev.Data = wrap(data)
	}
	if s.replica != nil {
		s.replica.event(ev)
		return
	}
	s.enqueue(ev, int64(len(ev.Data)))
}

// refused handles an error message: the server refused the subscribe.
func (s *Subscription) refused(payload json.RawMessage) {
	var errs []struct {
		Message string `json:"message"`
	}
	se := &SubscribeError{Collection: s.opts.Collection}
	if json.Unmarshal(payload, &errs) == nil {
		for _, e := range errs {
			se.Messages = append(se.Messages, protocol.Truncate(e.Message, 300))
		}
	}
	s.m.reportError(se)
	s.m.end(s, se)
}

// enqueue queues ev for the handler. A full queue is the handler's
// overflow: the queue is discarded and a plain subscription gets a
// KindError event with ErrOverflow in its place (a replica re-reads).
func (s *Subscription) enqueue(ev handlers.Event, size int64) {
	s.m.mu.Lock()
	s.pushLocked(ev, size)
	s.m.mu.Unlock()
}

func (s *Subscription) pushLocked(ev handlers.Event, size int64) {
	if s.ended {
		return
	}
	if !s.q.Fits(size) {
		s.q.Discard()
		first := !s.overflowed
		s.overflowed = true
		if first {
			s.m.reportError(&OverflowError{UID: s.uid})
		}
		if s.replica != nil {
			s.replica.startLocked()
			return
		}
		s.q.Push(handlers.Event{Kind: handlers.KindError, UID: s.uid, Collection: s.opts.Collection, Err: ErrOverflow, Received: time.Now()}, 64)
	} else {
		s.q.Push(ev, size)
	}
	s.wakeLocked()
}

// wakeLocked tells the handler goroutine that events are queued.
func (s *Subscription) wakeLocked() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// OverflowError reports, once per episode, a subscription whose handler
// fell a whole queue behind.
type OverflowError struct{ UID string }

func (e *OverflowError) Error() string {
	return "directus graphql: subscription " + e.UID + ": handler fell behind, queued events discarded"
}

// Is makes errors.Is(err, ErrOverflow) match.
func (e *OverflowError) Is(target error) bool { return target == ErrOverflow }

// work runs the handler until the subscription ends.
func (s *Subscription) work() {
	defer s.m.workers.Done()
	defer s.m.own()()
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		for {
			s.m.mu.Lock()
			if s.ended {
				s.m.mu.Unlock()
				return
			}
			ev, ok := s.q.Pop()
			if !ok {
				s.overflowed = false
				s.m.mu.Unlock()
				break
			}
			s.m.mu.Unlock()
			s.call(ev)
			s.m.mu.Lock()
			s.q.Done(1)
			s.m.mu.Unlock()
		}
	}
}

func (s *Subscription) call(ev handlers.Event) {
	defer func() {
		if r := recover(); r != nil {
			s.m.reportError(&protocol.PanicError{Callback: "handler of " + s.uid, Value: r, Stack: debug.Stack()})
			if s.replica != nil {
				// What the handler holds is unknown now: re-read.
				s.m.mu.Lock()
				if !s.ended {
					s.q.Discard()
					s.replica.failures++
					s.replica.startLocked()
				}
				s.m.mu.Unlock()
			}
		}
	}()
	if err := s.h.Handle(ev); err != nil {
		s.m.reportError(err)
	}
}
