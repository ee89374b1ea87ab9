package manager

import (
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
		for _, ss := range m.servers {
			m.resyncLocked(ss, true)
		}
		return
	}
	clear(m.wire)
	for _, ss := range m.servers {
		ss.wireUID = ""
		ss.awaiting = false
		for _, l := range ss.locals {
			l.markResyncing()
		}
		m.sendSubscribeLocked(ss)
	}
}

// resyncLocked replaces ss on the server by a new attempt, whose init every
// local subscription receives. Unless force is set, an attempt already
// awaiting its init serves.
func (m *Manager) resyncLocked(ss *serverSub, force bool) {
	if ss == nil || (ss.awaiting && !force) {
		return
	}
	for _, l := range ss.locals {
		l.markResyncing()
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
	m.wireSeq++
	ss.attempt++
	ss.wireUID = protocol.UID("rt" + strconv.FormatUint(m.wireSeq, 10))
	m.wire[ss.wireUID] = ss
	ss.awaiting = true
	msg := ss.msg
	msg.UID = ss.wireUID
	if !m.sendLocked(msg) {
		return
	}
	attempt := ss.attempt
	ss.timer = time.AfterFunc(m.opts.InitTimeout, func() { m.initTimedOut(ss, attempt) })
}

// sendLocked queues a frame on the current session. Sending with m.mu held
// keeps subscribe and unsubscribe frames on the wire in registry order.
func (m *Manager) sendLocked(v any) bool {
	s := m.sess
	if s == nil || s.Err() != nil {
		return false
	}
	if err := s.Send(s.Context(), v); err != nil {
		m.log.Debug("send failed; the next session restores the registry", "err", err)
		return false
	}
	return true
}

// initTimedOut retries an attempt that got neither init nor error in time.
func (m *Manager) initTimedOut(ss *serverSub, attempt uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || ss.attempt != attempt || !ss.awaiting || m.servers[ss.key] != ss {
		return
	}
	m.log.Warn("no init in time; subscribing again", "collection", ss.msg.Collection, "uid", ss.wireUID)
	m.resyncLocked(ss, true)
}
