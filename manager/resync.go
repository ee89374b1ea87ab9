package manager

import (
	"context"
	"errors"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// A resync of one local subscription (a join, Resync, the recovery after an
// overflow or a panic) reads the subscription's query with an items request
// rather than subscribing again: the server subscription stays, the others
// sharing it see nothing, and the reply is an init for this subscription
// alone. Events that arrive while the read is under way are held and follow
// its reply, as events that overtake a subscribe's init do. After a
// reconnect the server knows no subscription, so restore subscribes again
// instead, for every local subscription at once.

// scheduleRecovery asks for a resync of s after the Retry backoff: the
// handler fell behind, panicked, or events that overtook an init were lost.
// Consecutive troubles make the wait grow; a minute (Retry.ResetAfter)
// without trouble resets it.
func (m *Manager) scheduleRecovery(s *Subscription, cause ResyncCause) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.locals[s.uid] != s {
		return
	}
	seq := s.markAwaiting(awaitRead, cause)
	s.dmu.Lock()
	if time.Since(s.lastTrouble) >= m.opts.Retry.ResetAfter {
		s.retryStep = 0
	}
	s.lastTrouble = time.Now()
	wait := m.opts.Retry.Delay(s.retryStep)
	s.retryStep++
	if s.retryTimer != nil {
		s.retryTimer.Stop()
	}
	s.retryTimer = time.AfterFunc(wait, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if !s.currentRead(seq) {
			return // superseded: a reconnect's init serves, or it ended
		}
		m.readLocked(s, seq)
	})
	s.dmu.Unlock()
}

// localResyncLocked starts a resync of s at once. m.mu is held.
func (m *Manager) localResyncLocked(s *Subscription, cause ResyncCause) {
	ss := s.ss
	if ss == nil {
		return
	}
	if ss.awaiting || m.sess == nil || m.sess.Err() != nil {
		// A subscribe is under way (or will be, by restore): its init
		// serves this subscription too.
		s.markAwaiting(awaitWire, cause)
		return
	}
	seq := s.markAwaiting(awaitRead, cause)
	m.readLocked(s, seq)
}

// readLocked sends the resync read of s, numbered seq, and handles its reply
// on a goroutine of its own. m.mu is held.
func (m *Manager) readLocked(s *Subscription, seq uint64) {
	ss := s.ss
	if ss == nil {
		return
	}
	if ss.eventOnly {
		// Nothing to read: the event-only init carries no data.
		if s.deliverInit(s.event(handlers.KindInit, nil, nil, time.Now()), 0) {
			go m.scheduleRecovery(s, CauseLostEarly)
		}
		return
	}
	if ss.awaiting || m.sess == nil || m.sess.Err() != nil {
		s.markAwaiting(awaitWire, s.cause)
		return
	}
	attempt := ss.attempt
	msg := protocol.ItemsMessage{Collection: ss.msg.Collection, Action: protocol.ActionRead, Query: ss.msg.Query, ID: ss.msg.Item}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		ctx, cancel := context.WithTimeout(m.ctx, m.opts.InitTimeout)
		reply, err := m.conn.Items(ctx, msg)
		cancel()
		m.mu.Lock()
		defer m.mu.Unlock()
		if err == nil {
			m.noteProgressLocked()
		}
		if m.closed || m.locals[s.uid] != s || s.ss != ss || ss.attempt != attempt || !s.currentRead(seq) {
			return // superseded by a new subscribe attempt, or ended
		}
		var se *protocol.ServerError
		switch {
		case err == nil:
			if s.deliverInit(s.event(handlers.KindInit, reply.Data, reply.Meta, reply.Received), max(reply.Seq, 1)) {
				go m.scheduleRecovery(s, CauseLostEarly)
			}
			m.recomputeIfDueLocked(s)
		case errors.As(err, &se) && se.Type == protocol.TypeItems:
			// Refused: the identity may not read the query any more, or
			// the single item is gone.
			m.refuseLocked(s, se)
		default:
			// No reply in time, the connection went, the rate limiter:
			// try again after the backoff, unless a reconnect serves.
			m.log.Debug("resync read failed; retrying", "uid", s.uid, "err", err)
			go m.scheduleRecovery(s, s.cause)
		}
	}()
}

// refuseLocked handles the server's refusal of a resync read of s. m.mu is
// held.
func (m *Manager) refuseLocked(s *Subscription, se *protocol.ServerError) {
	e := s.serverErr(&protocol.ServerError{Type: protocol.TypeSubscribe, Code: se.Code, Message: se.Message})
	ev := s.event(handlers.KindError, nil, nil, time.Now())
	ev.Err = e
	if s.fail(e, ev) {
		// A join that never had an init: its Subscribe returns the error
		// and removes it.
		m.detachLocked(s)
	}
}

// resync asks for a fresh init of s and waits until its handler has handled
// it.
func (m *Manager) resync(ctx context.Context, s *Subscription) error {
	m.mu.Lock()
	if m.locals[s.uid] != s {
		m.mu.Unlock()
		return ErrNotFound
	}
	m.localResyncLocked(s, CauseRequested)
	m.mu.Unlock()
	for {
		s.dmu.Lock()
		await, failed, ended, sig, initAt := s.await, s.failed, s.ended, s.initSig, s.initAt
		s.dmu.Unlock()
		switch {
		case ended:
			return s.Err()
		case failed:
			return ErrResyncRefused
		case await == awaitNone:
			return s.waitConsumed(ctx, initAt)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
		case <-sig:
		}
	}
}

// recomputeLocked answers an event of an aggregate subscription: the
// event's data is the aggregate of the changed rows alone, so the whole
// aggregate is read again and delivered as an init. One read at a time:
// events during a read ask for one more after it, since that read may
// have been answered before their write. m.mu is held.
func (m *Manager) recomputeLocked(s *Subscription) {
	s.dmu.Lock()
	if s.failed || s.ended {
		s.dmu.Unlock()
		return // a refused subscription waits for its owner's resync
	}
	if s.await != awaitNone {
		s.recomputeAgain = true
		s.dmu.Unlock()
		return
	}
	s.dmu.Unlock()
	m.localResyncLocked(s, CauseAggregate)
}

// recomputeIfDueLocked starts the read that events during the last one
// asked for. m.mu is held.
func (m *Manager) recomputeIfDueLocked(s *Subscription) {
	s.dmu.Lock()
	due := s.recomputeAgain && s.await == awaitNone
	s.recomputeAgain = false
	s.dmu.Unlock()
	if due {
		m.recomputeLocked(s)
	}
}
