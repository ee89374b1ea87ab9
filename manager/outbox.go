package manager

import (
	"time"

	"github.com/e41af43e/directus-realtime/conn"
)

// The manager's subscribe and unsubscribe frames leave through an outbox:
// they are appended in registry order with m.mu held, which never waits,
// and one sender goroutine hands them to the session, which may wait (its
// queue is bounded, its writer may be paced by Config.SendRate or paused
// by the server's rate limiter). Were they sent with m.mu held, a paced
// restore of thousands of subscriptions would hold the lock, and with it
// the routing of the inits that answer them, for as long as the writer
// takes. The outbox holds at most a frame or two per server subscription
// (its current attempt and the unsubscribe of the one it replaced), so
// its size is that of the registry.

type outFrame struct {
	sess *conn.Session
	v    any
	ss   *serverSub // the subscribe's server subscription, nil for others
	try  uint64     // the attempt it carries
}

// queueLocked appends a frame for the current session and makes sure a
// sender runs. It reports false when there is no live session (restore
// sends the registry on the next one). m.mu is held.
func (m *Manager) queueLocked(f outFrame) bool {
	s := m.sess
	if s == nil || s.Err() != nil {
		return false
	}
	f.sess = s
	m.outbox = append(m.outbox, f)
	if !m.sending {
		m.sending = true
		m.bg.Add(1)
		go m.sendOutbox()
	}
	return true
}

// sendOutbox hands the outbox's frames to their session in order, and
// exits once it is empty. A subscribe waits at the head while
// Options.MaxInFlight subscribes handed to the session are unanswered:
// Directus then never holds more than that many unread, so its rate
// limiter, which counts frames as it reads them, does not see them in
// bursts however slowly it serves them. Subscribes of attempts replaced
// before they were handed are not sent at all.
func (m *Manager) sendOutbox() {
	defer m.bg.Done()
	for {
		m.mu.Lock()
		var batch []outFrame
		for len(m.outbox) > 0 && !m.closed {
			f := m.outbox[0]
			if f.ss != nil {
				if f.ss.attempt != f.try || f.sess != m.sess {
					m.outbox = m.outbox[1:] // superseded before it left
					continue
				}
				if m.inflight >= m.opts.MaxInFlight {
					break
				}
				m.inflight++
				f.ss.inflight = true
				m.handoffs++
				f.ss.handoff = m.handoffs
				f.ss.sentAt = time.Now() // its init timeout counts from here
			}
			m.outbox[0] = outFrame{}
			m.outbox = m.outbox[1:]
			batch = append(batch, f)
		}
		if len(batch) == 0 {
			if len(m.outbox) == 0 || m.closed {
				m.outbox = nil
				m.sending = false
				m.mu.Unlock()
				return
			}
			room := m.room
			m.mu.Unlock()
			select { // a subscribe waits for an answer to make room
			case <-room:
			case <-m.ctx.Done():
			}
			continue
		}
		m.mu.Unlock()
		for _, f := range batch {
			if f.sess.Err() != nil {
				continue // the next session's restore sends what is still wanted
			}
			if err := f.sess.Send(m.ctx, f.v); err != nil {
				m.log.Debug("send failed; the next session restores the registry", "err", err)
			}
		}
	}
}

// releaseLocked gives back the in-flight slot of ss's attempt: it was
// answered, replaced, or dropped. m.mu is held.
func (m *Manager) releaseLocked(ss *serverSub) {
	if !ss.inflight {
		return
	}
	ss.inflight = false
	m.inflight--
	close(m.room)
	m.room = make(chan struct{})
}

// resetInFlightLocked forgets the slots of a lost session. m.mu is held.
func (m *Manager) resetInFlightLocked() {
	for _, ss := range m.servers {
		ss.inflight = false
	}
	m.inflight = 0
	close(m.room)
	m.room = make(chan struct{})
}
