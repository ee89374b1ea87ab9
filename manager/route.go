package manager

import (
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// route hands one subscription frame to the local subscriptions of its
// server subscription. It runs on the connection's read loop, the only
// caller, which keeps each subscription's events in order. Each local
// subscription has its own bounded queue; when one is full, route waits
// (without holding the manager's lock) up to Options.OverflowWait for its
// handler to make room before it overflows that queue.
func (m *Manager) route(msg *protocol.Message) {
	m.mu.Lock()
	ss, waiting, ev := m.routeLocked(msg)
	if len(waiting) == 0 {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	deadline := time.Now().Add(m.opts.OverflowWait)
	size := eventSize(ev)
	roomy := make([]bool, len(waiting))
	for i, s := range waiting {
		roomy[i] = m.opts.OverflowWait > 0 && s.waitRoom(deadline, size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wire[msg.UID] != ss {
		return // a newer attempt replaced this one meanwhile; its init supersedes the event
	}
	for i, s := range waiting {
		if s.ss != ss {
			continue // unsubscribed meanwhile
		}
		if !roomy[i] || s.tryDeliver(s.event(ev.Kind, ev.Data, ev.Meta, ev.Received), msg.Seq) == queueFull {
			s.overflow()
		}
	}
}

// routeLocked does the part of route that needs no waiting. It returns the
// subscriptions whose queue was full for the event ev.
func (m *Manager) routeLocked(msg *protocol.Message) (ss *serverSub, waiting []*Subscription, ev handlers.Event) {
	ss = m.wire[msg.UID]
	if ss == nil {
		// An unsubscribe acknowledgement, or a frame of an attempt that a
		// newer one replaced: the newer init supersedes it.
		return nil, nil, ev
	}
	if msg.Err != nil {
		m.routeErrorLocked(ss, msg)
		return ss, nil, ev
	}
	if msg.Type != protocol.TypeSubscription {
		return ss, nil, ev
	}
	kind, ok := handlers.ParseKind(msg.Event)
	if !ok {
		if msg.Event != protocol.EventUnsubscribe {
			m.log.Warn("subscription frame with an unknown event", "event", protocol.Truncate(msg.Event, 64))
		}
		return ss, nil, ev
	}
	ev = handlers.Event{Kind: kind, Data: msg.Data, Meta: msg.Meta, Received: msg.Received}
	if kind == handlers.KindInit {
		if !ss.awaiting {
			// A second init for an attempt that has one (a hostile or
			// confused server): the subscription already follows it.
			return ss, nil, ev
		}
		ss.awaiting = false
		ss.timeouts = 0
		ss.stopTimer()
		m.noteAnswerLocked(ss)
		for _, s := range ss.locals {
			s.dmu.Lock()
			wire := s.await == awaitWire || !s.gotInit
			s.dmu.Unlock()
			if !wire {
				continue // it reads its own init
			}
			if s.deliverInit(s.event(kind, msg.Data, msg.Meta, msg.Received), 0) {
				go m.scheduleRecovery(s, CauseLostEarly)
			}
			m.recomputeIfDueLocked(s)
		}
		return ss, nil, ev
	}
	if ss.recompute {
		for _, s := range ss.locals {
			m.recomputeLocked(s)
		}
		return ss, nil, ev
	}
	for _, s := range ss.locals {
		if s.tryDeliver(s.event(kind, msg.Data, msg.Meta, msg.Received), msg.Seq) == queueFull {
			waiting = append(waiting, s)
		}
	}
	return ss, waiting, ev
}

// routeErrorLocked handles an error frame with the uid of ss's current
// attempt. While an init is awaited it is the refusal of the subscribe;
// afterwards it is a per-event error (Directus sends FORBIDDEN instead of an
// event the identity may not read), which does not end the subscription.
func (m *Manager) routeErrorLocked(ss *serverSub, msg *protocol.Message) {
	if !ss.awaiting {
		for _, s := range ss.locals {
			ev := s.event(handlers.KindError, nil, nil, msg.Received)
			ev.Err = s.serverErr(msg.Err)
			if s.tryDeliver(ev, msg.Seq) == queueFull {
				// No wait for an error: it says an event was lost, and the
				// resync an overflow brings says more.
				s.overflow()
			}
		}
		return
	}
	ss.awaiting = false
	ss.stopTimer()
	m.noteAnswerLocked(ss)
	delete(m.wire, ss.wireUID)
	ss.wireUID = ""
	kept := ss.locals[:0]
	for _, s := range ss.locals {
		ev := s.event(handlers.KindError, nil, nil, msg.Received)
		ev.Err = s.serverErr(msg.Err)
		if s.fail(ev.Err, ev) {
			// Its Subscribe returns the error and removes it; take it off
			// here so that a retry does not resend it.
			s.ss = nil
			continue
		}
		kept = append(kept, s)
	}
	clear(ss.locals[len(kept):])
	ss.locals = kept
	if len(ss.locals) == 0 {
		delete(m.servers, ss.key)
	}
}
