package ops

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
)

// Health is the answer of a probe.
type Health struct {
	OK       bool      `json:"ok"`
	Time     time.Time `json:"time"`
	Problems []Problem `json:"problems,omitempty"`
}

// Problem names what is not ready (or stuck), why, and since when.
type Problem struct {
	What   string    `json:"what"` // "connection", "replica NAME", "subscription NAME-or-collection"
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// Ready reports whether the service can answer from its replicas: the
// connection is up and every registered replica is synced (its first init
// applied) and not failing (store.Status.Err). A replica is briefly behind
// the server after a reconnect, until its resync init; Ready does not wait
// for that.
func (s *Source) Ready() Health { return s.ready(s.Snapshot()) }

func (s *Source) ready(snap Snapshot) Health {
	h := Health{Time: snap.Time}
	if c := snap.Conn; c.State != conn.StateConnected {
		h.Problems = append(h.Problems, Problem{What: "connection", Reason: c.State.String(), Since: c.StateSince})
	}
	subs := make(map[string]*SubscriptionInfo, len(snap.Subscriptions))
	for i := range snap.Subscriptions {
		subs[snap.Subscriptions[i].UID] = &snap.Subscriptions[i]
	}
	for _, r := range snap.Replicas {
		sub := subs[r.UID]
		switch {
		case sub != nil && sub.State == manager.StateFailed:
			h.Problems = append(h.Problems, Problem{What: "replica " + r.Name, Reason: "subscription refused: " + sub.LastError, Since: sub.ErrorAt})
		case r.Failure != "":
			h.Problems = append(h.Problems, Problem{What: "replica " + r.Name, Reason: r.Failure, Since: r.FailingSince})
		case !r.Synced:
			h.Problems = append(h.Problems, Problem{What: "replica " + r.Name, Reason: "not synced", Since: r.Added})
		}
	}
	h.OK = len(h.Problems) == 0
	return h
}

// Live reports whether the library is stuck. It fails only when the
// library should make progress and has made none for Options.StuckAfter,
// never because Directus is down:
//
//   - the Conn is stuck when, for StuckAfter, it read no frame, finished no
//     connect attempt and changed no state, while it was not waiting out a
//     backoff (Stats.RetryAt in the future). A connected Conn reads the
//     server's heartbeat pings (Directus sends one every 30 s by default)
//     and the answers to its own pings (after PingInterval of silence; a
//     silent server ends the session, which is progress), so a connected
//     Conn that reads nothing has a read loop that does not run: a
//     handler blocking the delivery of frames. A Directus that is down
//     makes the Conn fail attempts and wait backoffs, which is progress.
//     (With the client's pings off, conn.Config.PingInterval < 0, and the
//     server's heartbeat off too, a quiet connection reads nothing: keep
//     one of them on, or StuckAfter above the longest quiet time.)
//   - the Conn gave up (closed with a cause: credentials that expired for
//     good, a rejection at the first connect, Backoff.MaxAttempts): it
//     will never make progress again.
//   - a subscription is stuck when, for StuckAfter, its handler took no
//     event while events waited for it or it was stalled (its handler has
//     not returned from one event).
//
// Live keeps the last progress it saw: it is meant to be called
// periodically, as a liveness probe does; the first call sees no problem
// but a closed Conn.
func (s *Source) Live() Health { return s.live(s.Snapshot()) }

func (s *Source) live(snap Snapshot) Health {
	h := Health{Time: snap.Time}
	c := snap.Conn
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.progress == nil {
		s.progress = make(map[string]*mark)
	}
	seen := make(map[string]bool)
	stuck := func(key string, value uint64, waiting bool) (bool, time.Time) {
		seen[key] = true
		m := s.progress[key]
		if m == nil || m.value != value || !waiting {
			s.progress[key] = &mark{value: value, since: snap.Time}
			return false, time.Time{}
		}
		return snap.Time.Sub(m.since) >= s.opts.StuckAfter, m.since
	}
	if c.State == conn.StateClosed {
		for _, tc := range c.Transitions {
			if tc.To == conn.StateClosed && tc.Cause != conn.CauseNone && tc.Cause != conn.CauseClosed {
				h.Problems = append(h.Problems, Problem{What: "connection", Reason: "gave up (" + tc.Cause + ")", Since: c.StateSince})
			}
		}
	} else {
		var transitions uint64
		for _, tc := range c.Transitions {
			transitions += tc.Count
		}
		progress := c.FramesIn + c.ConnectFailures + c.Sessions + transitions
		backingOff := !c.RetryAt.IsZero() && c.RetryAt.After(snap.Time)
		if ok, since := stuck("conn", progress, !backingOff && c.State != conn.StateIdle); ok {
			h.Problems = append(h.Problems, Problem{What: "connection",
				Reason: fmt.Sprintf("%s, no frame read and no connect attempt for %v", c.State, snap.Time.Sub(since).Round(time.Second)), Since: since})
		}
	}
	for _, sub := range snap.Subscriptions {
		waiting := sub.Queued > 0 || sub.State == manager.StateStalled
		if ok, since := stuck("sub "+sub.UID, sub.Events, waiting); ok {
			h.Problems = append(h.Problems, Problem{What: "subscription " + sub.label(),
				Reason: fmt.Sprintf("the handler took no event for %v (%s, %d queued)", snap.Time.Sub(since).Round(time.Second), sub.State, sub.Queued), Since: since})
		}
	}
	for k := range s.progress {
		if !seen[k] {
			delete(s.progress, k)
		}
	}
	h.OK = len(h.Problems) == 0
	return h
}

// mark is the last progress Live saw of one thing, and since when.
type mark struct {
	value uint64
	since time.Time
}

// label names a subscription without its uid when it has a name.
func (si SubscriptionInfo) label() string {
	if si.Name != "" {
		return si.Name
	}
	return si.Collection + " " + si.UID
}

// ReadyHandler answers readiness probes: 200 and {"ok":true} when Ready,
// 503 and a JSON body naming each problem and since when otherwise.
func (s *Source) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeHealth(w, s.Ready()) })
}

// LiveHandler answers liveness probes: 200 unless Live finds the library
// stuck, 503 and a JSON body naming what is stuck otherwise.
func (s *Source) LiveHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeHealth(w, s.Live()) })
}

func writeHealth(w http.ResponseWriter, h Health) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !h.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}
