package manager

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/protocol"
)

// restore runs in the connection's OnConnect hook, before any frame of the
// session is routed. After a (re)connect the server knows no subscription:
// each one is sent once on the new session. After re-authentication the old
// ones are still registered but lost their events since TOKEN_EXPIRED: each
// one is replaced once. Either way every local subscription that had an
// init gets a fresh one with Resync set.
func (m *Manager) restore(s *conn.Session, reason conn.ConnectReason) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.sess = s
	if reason == conn.ReasonReauthenticated {
		for _, ss := range m.serversInOrderLocked() {
			m.resyncLocked(ss, true, CauseReauth)
		}
		return
	}
	clear(m.wire)
	m.resetInFlightLocked()
	for _, ss := range m.serversInOrderLocked() {
		ss.wireUID = ""
		ss.awaiting = false
		for _, l := range ss.locals {
			l.markAwaiting(awaitWire, CauseReconnect)
		}
		m.sendSubscribeLocked(ss)
	}
}

// serversInOrderLocked returns the server subscriptions in the order they
// were made. Restoring them in that order keeps a subscription that another
// one relies on registered first, as when it was made: a store replica's
// companion of filter exits is made before the replica's own subscription,
// so that no update after the replica's init goes unseen. m.mu is held.
func (m *Manager) serversInOrderLocked() []*serverSub {
	out := make([]*serverSub, 0, len(m.servers))
	for _, ss := range m.servers {
		out = append(out, ss)
	}
	slices.SortFunc(out, func(a, b *serverSub) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// resyncLocked replaces ss on the server by a new attempt, whose init every
// local subscription receives. Unless force is set, an attempt already
// awaiting its init serves.
func (m *Manager) resyncLocked(ss *serverSub, force bool, cause ResyncCause) {
	if ss == nil || (ss.awaiting && !force) {
		return
	}
	for _, l := range ss.locals {
		l.markAwaiting(awaitWire, cause)
	}
	if ss.wireUID != "" {
		delete(m.wire, ss.wireUID)
		m.sendLocked(protocol.UnsubscribeMessage{UID: ss.wireUID})
		ss.wireUID = ""
	}
	m.sendSubscribeLocked(ss)
}

// sendSubscribeLocked sends a new attempt of ss on the current session.
// Without a live session the attempt is only recorded: restore sends it.
func (m *Manager) sendSubscribeLocked(ss *serverSub) {
	ss.stopTimer()
	m.releaseLocked(ss) // the attempt it replaces will not be answered
	m.wireSeq++
	ss.attempt++
	ss.wireUID = protocol.UID("rt" + strconv.FormatUint(m.wireSeq, 10))
	m.wire[ss.wireUID] = ss
	ss.awaiting = true
	msg := ss.msg
	msg.UID = ss.wireUID
	ss.sentAt = time.Time{} // set by the sender when the session takes it
	if !m.queueLocked(outFrame{v: msg, ss: ss, try: ss.attempt}) {
		return
	}
	// Each attempt that times out makes the next wait longer (the Retry
	// backoff on top of InitTimeout): a server that never answers is not
	// asked again every InitTimeout for ever.
	ss.wait = m.opts.InitTimeout
	if ss.timeouts > 0 {
		ss.wait += m.opts.Retry.Delay(ss.timeouts - 1)
	}
	m.armInitTimerLocked(ss, ss.wait)
}

func (m *Manager) armInitTimerLocked(ss *serverSub, d time.Duration) {
	attempt := ss.attempt
	ss.timer = time.AfterFunc(d, func() { m.initTimedOut(ss, attempt) })
}

// sendLocked queues a frame on the current session, after the frames
// queued before it (outbox.go).
func (m *Manager) sendLocked(v any) bool {
	return m.queueLocked(outFrame{v: v})
}

// noteProgressLocked records that the server answered a subscribe or a
// resync read. m.mu is held.
func (m *Manager) noteProgressLocked() { m.progress = time.Now() }

// noteAnswerLocked records the answer (init or refusal) to ss's subscribe.
// m.mu is held.
func (m *Manager) noteAnswerLocked(ss *serverSub) {
	m.noteProgressLocked()
	m.answered = max(m.answered, ss.handoff)
	m.releaseLocked(ss)
}

// initTimedOut retries an attempt that got neither init nor error in time.
// The time counts from when the session took the frame, and from the last
// answer the server gave to any subscribe: a server that works through a
// long queue of them (a restore of thousands, paced or slow) is not asked
// again while it keeps answering, which would only lengthen its queue.
func (m *Manager) initTimedOut(ss *serverSub, attempt uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || ss.attempt != attempt || !ss.awaiting || m.servers[ss.key] != ss {
		return
	}
	since := ss.sentAt
	if since.IsZero() {
		since = time.Now() // still in the outbox or the session's queue
	}
	if m.progress.After(since) {
		since = m.progress
	}
	if left := ss.wait - time.Since(since); left > 0 {
		m.armInitTimerLocked(ss, left)
		return
	}
	ss.timeouts++
	m.log.Warn("no init in time; subscribing again", "collection", ss.msg.Collection, "uid", ss.wireUID, "attempt", ss.timeouts)
	m.resyncLocked(ss, true, CauseInitTimeout)
}

// overtaken is how many subscribes handed to the session after one must
// have been answered, during a rate-limit episode, before that one is taken
// for dropped: Directus answers subscribes about in the order it reads
// them, so one left behind by that many later ones got no answer because
// its frame was dropped, not because it waits its turn.
const overtaken = 100

// limitQuiet is how long after a rate-limit episode a server that answers
// nothing has answered all it kept: the unanswered subscribes handed to it
// before the episode were dropped.
const limitQuiet = 2 * time.Second

// rateLimited runs when the server's rate limiter dropped a frame, which
// may have been a subscribe (the REQUESTS_EXCEEDED frame does not say
// which). After the limiter's delay (and at least a second), a subscribe
// handed to the session before the drop that is still unanswered while
// `overtaken` later ones were answered, or while the server has answered
// nothing for limitQuiet, is sent again. The others are looked at again a
// second later, until each is answered or sent again. (Sending every unanswered
// subscribe again, as this once did, tripped the limiter again with each
// episode: a restore of 10,000 never finished.)
func (m *Manager) rateLimited(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.limitedAt = time.Now()
	if m.limited == nil {
		m.armLimitedCheckLocked(max(d, time.Second))
	}
}

func (m *Manager) armLimitedCheckLocked(d time.Duration) {
	m.limited = time.AfterFunc(d, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.limited = nil
		if m.closed {
			return
		}
		// Quiet: the server answered nothing for a while, the limiter
		// dropped nothing either: it has answered everything it kept.
		now := time.Now()
		quiet := now.Sub(m.progress) >= limitQuiet && now.Sub(m.limitedAt) >= limitQuiet
		resent, open := 0, 0
		for _, ss := range m.servers {
			if !ss.awaiting || ss.sentAt.IsZero() || !ss.sentAt.Before(m.limitedAt) {
				continue
			}
			if quiet || ss.handoff+overtaken <= m.answered {
				m.resyncLocked(ss, true, CauseInitTimeout)
				resent++
			} else {
				open++
			}
		}
		if resent > 0 {
			m.log.Warn("subscribes dropped by the server's rate limiter; sent again", "subscribes", resent)
		}
		if open > 0 {
			m.armLimitedCheckLocked(time.Second)
		}
	})
}
