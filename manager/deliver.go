package manager

import (
	"context"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/goid"
	"github.com/e41af43e/directus-realtime/internal/queue"
	"github.com/e41af43e/directus-realtime/protocol"
)

// eventOverhead is counted per queued event besides its data and meta.
const eventOverhead = 160

func eventSize(ev handlers.Event) int64 {
	return int64(len(ev.Data) + len(ev.Meta) + eventOverhead)
}

// idleApplier is how long a handler goroutine waits for the next event
// before it exits: a steady stream keeps one goroutine per subscription
// parked between events (no goroutine started per event), an idle
// subscription costs none.
const idleApplier = time.Second

func (s *Subscription) newQueues(size int, bytes int64) {
	s.q = queue.New[handlers.Event](size, bytes)
	s.early = queue.New[held](size, bytes)
	s.wake = make(chan struct{}, 1)
	s.initSig = make(chan struct{})
}

// pushLocked queues ev for the handler and makes sure a handler goroutine
// runs to take it.
func (s *Subscription) pushLocked(ev handlers.Event) {
	s.q.Push(ev, eventSize(ev))
	if !s.running {
		s.running = true
		go s.apply()
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// apply runs the handler over the queue, one event at a time. It parks while
// the queue is empty and exits after idleApplier without an event.
func (s *Subscription) apply() {
	id := goid.Current()
	s.m.appliers.enter(id)
	defer s.m.appliers.leave(id)
	idle := time.NewTimer(idleApplier)
	defer idle.Stop()
	for {
		s.dmu.Lock()
		ev, ok := s.q.Pop()
		if !ok {
			if s.ended {
				s.running = false
				s.dmu.Unlock()
				return
			}
			if s.recover {
				// The handler caught up with a queue that overflowed, or
				// returned from a panic: now the resync can be asked for.
				s.recover = false
				s.stalled = false
				cause := s.cause
				s.dmu.Unlock()
				s.m.scheduleRecovery(s, cause)
				continue
			}
			s.dmu.Unlock()
			idle.Reset(idleApplier)
			select {
			case <-s.wake:
				continue
			case <-idle.C:
			}
			s.dmu.Lock()
			if s.q.Len() == 0 && !s.recover {
				s.running = false
				select {
				case <-s.wake:
				default:
				}
				s.dmu.Unlock()
				return
			}
			s.dmu.Unlock()
			continue
		}
		if s.roomSig != nil && s.q.Below(3, 4) {
			close(s.roomSig)
			s.roomSig = nil
		}
		s.dmu.Unlock()

		s.handle(ev)

		s.dmu.Lock()
		s.q.Done(1)
		s.dmu.Unlock()
	}
}

// handle runs the handler on one event, counting it and reporting its
// error; a panic is recovered (unless Options.CrashOnPanic) and turns into a
// resync.
func (s *Subscription) handle(ev handlers.Event) {
	// Counted before the call, so that a handler sees its own event in
	// Stats.
	s.events.Add(1)
	s.lastEvent.Store(ev.Received.UnixNano())
	if !ev.Received.IsZero() {
		s.m.latency.observe(time.Since(ev.Received))
	}
	if ev.Kind == handlers.KindError {
		s.errs.Add(1)
	}
	if !s.m.opts.CrashOnPanic {
		defer func() {
			if v := recover(); v != nil {
				s.panicked(v, debug.Stack())
			}
		}()
	}
	if err := s.handler.Handle(ev); err != nil {
		s.errs.Add(1)
		he := &HandlerError{UID: s.uid, Kind: ev.Kind, Err: err}
		s.dmu.Lock()
		s.noteErrorLocked(he)
		s.dmu.Unlock()
		s.m.reportError(he)
	}
}

// panicked handles a recovered handler panic: it is reported, what is
// queued is discarded, and a resync follows (after the Retry backoff) so
// that the handler rebuilds its state from a fresh init.
func (s *Subscription) panicked(v any, stack []byte) {
	s.panics.Add(1)
	pe := &protocol.PanicError{Callback: "handler of subscription " + strconv.Quote(truncate(s.uid)), Value: v, Stack: stack}
	s.dmu.Lock()
	s.noteErrorLocked(pe)
	if !s.ended {
		s.q.Discard()
		s.early.Discard()
		s.earlyLost = false
		s.recover, s.cause = true, CausePanic
	}
	s.dmu.Unlock()
	s.m.log.Error("handler panicked; recovered, resyncing", "uid", s.uid, "panic", v)
	if s.m.onError != nil {
		s.m.onError(pe)
	}
}

// deliverInit queues an init. It follows whatever is queued: events before
// it still reach a handler that wants every event, and the init then
// replaces the state they built. Resync is set when the handler saw an init
// before. It reports whether events held for the init were lost, in which
// case another resync must be asked for.
//
// The events held while the init was awaited are placed around it by where
// they stood on the wire: those of a new subscribe attempt all follow its
// init (replySeq 0: Directus registers the subscription after it read the
// init, so its events are newer); those held during a resync read and read
// from the socket before the read's reply (replySeq) precede it, the others
// follow it. A joiner's first init, read for it alone, has nothing before
// it to update: the events that preceded the reply are in the init and are
// dropped, so that every handler starts with its init.
func (s *Subscription) deliverInit(ev handlers.Event, replySeq uint64) (again bool) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended {
		return false
	}
	first := !s.gotInit
	ev.Resync = s.gotInit
	if ev.Resync {
		s.resyncs.Add(1)
		s.byCause[s.cause].Add(1)
	}
	s.gotInit = true
	s.await = awaitNone
	s.failed = false
	s.stalled = false
	if s.earlyLost {
		// The events kept are superseded by the next init anyway.
		s.early.Discard()
		s.earlyLost = false
		again = true
	}
	initQueued := false
	queueInit := func() {
		s.pushLocked(ev)
		s.initAt = s.q.Pushed()
		initQueued = true
	}
	for {
		h, ok := s.early.Pop()
		if !ok {
			break
		}
		s.early.Done(1)
		if !initQueued && (replySeq == 0 || h.seq > replySeq) {
			queueInit()
		}
		if !initQueued && first {
			continue // in the init already, and a handler starts with its init
		}
		s.pushLocked(h.ev)
	}
	if !initQueued {
		queueInit()
	}
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
	delivered delivery = iota // queued, held for the awaited init, or dropped (ended, stalled)
	queueFull                 // the queue is full: wait for room, then try again or overflow
)

// tryDeliver queues a create, update, delete or error event without
// waiting. Events that come while an init is awaited are held to follow it
// (route drops those of replaced attempts); those that come while the
// handler is stalled are dropped, since the resync that follows replaces
// them.
func (s *Subscription) tryDeliver(ev handlers.Event, seq uint64) delivery {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended || s.stalled || s.recover {
		return delivered
	}
	if ev.Kind == handlers.KindError {
		if e, ok := ev.Err.(*protocol.ServerError); ok {
			if s.codes == nil {
				s.codes = map[protocol.Code]uint64{}
			}
			s.codes[e.Code]++
			s.noteErrorLocked(e)
		}
	}
	if !s.gotInit || s.await != awaitNone {
		size := eventSize(ev)
		if s.early.Fits(size) {
			s.early.Push(held{ev: ev, seq: seq}, size)
		} else if !s.earlyLost {
			s.overflows.Add(1)
			s.earlyLost = true
		}
		return delivered
	}
	if !s.q.Fits(eventSize(ev)) {
		return queueFull
	}
	s.pushLocked(ev)
	return delivered
}

// overflow discards the queue of a subscription whose handler made no room
// in time. The subscription is stalled: events are dropped until the
// handler returns, then a resync is asked for. It reports the stall once
// per episode.
func (s *Subscription) overflow() {
	s.dmu.Lock()
	if s.ended || s.stalled || s.await != awaitNone {
		s.dmu.Unlock()
		return
	}
	s.overflows.Add(1)
	n := s.q.Discard()
	s.stalled = true
	s.recover, s.cause = true, CauseOverflow
	se := &StallError{UID: s.uid, Discarded: n}
	s.noteErrorLocked(se)
	// Wake the handler goroutine if it is parked (it then asks for the
	// resync); a running handler asks once it returns.
	if s.running {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	} else {
		s.running = true
		go s.apply()
	}
	s.dmu.Unlock()
	s.m.log.Warn("subscription handler fell behind; queue discarded, resync once it returns", "uid", s.uid, "discarded", n)
	if s.m.onError != nil {
		s.m.onError(se)
	}
}

// waitRoom waits until the queue is a quarter used, the subscription ends
// or the deadline passes, and reports whether there is room for size. It is
// called without any lock: a handler that calls the manager meanwhile is not
// held up by the wait.
func (s *Subscription) waitRoom(deadline time.Time, size int64) bool {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	for !s.q.Fits(size) && !s.ended {
		wait := time.Until(deadline)
		if wait <= 0 {
			return false
		}
		if s.roomSig == nil {
			// Woken when the queue is down to a quarter used, not at every
			// event taken: one wake-up per burst, not one per event.
			s.roomSig = make(chan struct{})
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

// markAwaiting records that a fresh init was asked for (await says which),
// and why. Events held for the attempt being replaced go.
func (s *Subscription) markAwaiting(await awaiting, cause ResyncCause) uint64 {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.await = await
	s.failed = false
	if s.gotInit {
		s.cause = cause
	}
	s.readSeq++
	s.early.Discard()
	s.earlyLost = false
	return s.readSeq
}

// currentRead reports whether the resync read numbered seq is still the
// one awaited.
func (s *Subscription) currentRead(seq uint64) bool {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return !s.ended && s.await == awaitRead && s.readSeq == seq
}

// fail records a refused subscribe or resync read. A subscription that never
// had an init fails its Subscribe call; one that had gets an error event and
// stays, failed.
func (s *Subscription) fail(err error, ev handlers.Event) (firstSubscribe bool) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.noteErrorLocked(err)
	if !s.gotInit {
		s.markReadyLocked(err)
		return true
	}
	s.failed = true
	s.await = awaitNone
	s.early.Discard()
	s.earlyLost = false
	if e, ok := err.(*protocol.ServerError); ok {
		if s.codes == nil {
			s.codes = map[protocol.Code]uint64{}
		}
		s.codes[e.Code]++
	}
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

// waitConsumed waits until the handler has handled (or the subscription
// discarded) the first n events queued.
func (s *Subscription) waitConsumed(ctx context.Context, n uint64) error {
	for {
		s.dmu.Lock()
		if s.q.DoneCount() >= n || s.ended {
			ended := s.ended
			s.dmu.Unlock()
			if ended {
				return s.Err()
			}
			return nil
		}
		sig := s.q.Progress()
		s.dmu.Unlock()
		select {
		case <-sig:
		case <-ctx.Done():
			return ctx.Err()
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
	s.q.Close()
	s.early.Discard()
	if s.retryTimer != nil {
		s.retryTimer.Stop()
		s.retryTimer = nil
	}
	if s.roomSig != nil {
		close(s.roomSig)
		s.roomSig = nil
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.markReadyLocked(cause)
	close(s.done)
	return true
}
