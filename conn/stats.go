package conn

import (
	"errors"
	"io"
	"net"
	"sort"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/protocol"
)

// Stats are a Conn's counters since New, for metrics, probes and status
// pages. Counters only grow.
type Stats struct {
	// State is the current state, entered at StateSince.
	State      State
	StateSince time.Time
	// Sessions counts sessions that came up (connected and authenticated):
	// the first one and every reconnect. Reconnects counts those that
	// replaced a lost session.
	Sessions   uint64
	Reconnects uint64
	// ConnectFailures counts failed connect attempts (dial, upgrade or
	// authentication).
	ConnectFailures uint64
	// Reauths counts re-authentications after TOKEN_EXPIRED, Refreshes
	// the token refreshes before a known expiry.
	Reauths   uint64
	Refreshes uint64
	// FramesIn and BytesIn count the frames read from the server (every
	// session, the handshake included) and their payload bytes; FramesOut
	// and BytesOut those written to it.
	FramesIn, BytesIn   uint64
	FramesOut, BytesOut uint64
	// RateLimited counts REQUESTS_EXCEEDED frames of the server's rate
	// limiter.
	RateLimited uint64
	// LastFrame is when the last frame was read from the server (zero
	// before the first).
	LastFrame time.Time
	// RetryAt is when the next connect attempt is due while the Conn waits
	// out a backoff; zero otherwise.
	RetryAt time.Time
	// Transitions counts state changes by from, to and cause, sorted.
	Transitions []TransitionCount
}

// TransitionCount is how often the Conn went From → To for a Cause.
type TransitionCount struct {
	From, To State
	Cause    string
	Count    uint64
}

// The causes of StateChange.Cause: a small fixed set, fit for a metric label.
const (
	CauseNone               = "none" // no error: Connect, a session up, Close
	CauseClosed             = "closed"
	CauseReconnectRequested = "reconnect_requested"
	CauseHeartbeatTimeout   = "heartbeat_timeout"
	CauseFrameTooLarge      = "frame_too_large"
	CauseServerClose        = "server_close"   // a close frame from the server
	CauseAbnormalClose      = "abnormal_close" // 1006, EOF, a network error: the connection broke
	CauseUpgradeRejected    = "upgrade_rejected"
	CauseDial               = "dial"
	CauseAuth               = "auth" // refused credentials, auth timeout, credentials expired
	CauseProtocol           = "protocol"
	CauseOther              = "other"
)

// Cause classifies the change's Err into one of the Cause* constants.
func (sc StateChange) Cause() string { return causeOf(sc.Err) }

func causeOf(err error) string {
	var ce *CloseError
	var ue *UpgradeError
	var de *DialError
	var se *protocol.ServerError
	var pe *protocol.ProtocolError
	var ne net.Error
	switch {
	case err == nil:
		return CauseNone
	case errors.Is(err, ErrClosed):
		return CauseClosed
	case errors.Is(err, errReconnectRequested):
		return CauseReconnectRequested
	case errors.Is(err, ErrHeartbeatTimeout):
		return CauseHeartbeatTimeout
	case errors.Is(err, ErrFrameTooLarge):
		return CauseFrameTooLarge
	case errors.Is(err, ErrCredentialsExpired), errors.Is(err, ErrAuthRequired), errors.As(err, &se):
		return CauseAuth
	case errors.As(err, &ue):
		return CauseUpgradeRejected
	case errors.As(err, &de):
		return CauseDial
	case errors.As(err, &ce):
		if ce.Code == 1006 {
			return CauseAbnormalClose
		}
		return CauseServerClose
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne):
		return CauseAbnormalClose // the socket ended without a close frame
	case errors.As(err, &pe):
		return CauseProtocol
	}
	return CauseOther
}

type transitionKey struct {
	from, to State
	cause    string
}

// counters are the Conn's Stats counters.
type counters struct {
	sessions, reconnects, connectFailures, reauths, refreshes atomic.Uint64
	framesIn, bytesIn, framesOut, bytesOut                    atomic.Uint64
	lastFrame                                                 atomic.Int64
}

// Stats returns the counters.
func (c *Conn) Stats() Stats {
	st := Stats{
		Sessions: c.stats.sessions.Load(), Reconnects: c.stats.reconnects.Load(),
		ConnectFailures: c.stats.connectFailures.Load(),
		Reauths:         c.stats.reauths.Load(), Refreshes: c.stats.refreshes.Load(),
		FramesIn: c.stats.framesIn.Load(), BytesIn: c.stats.bytesIn.Load(),
		FramesOut: c.stats.framesOut.Load(), BytesOut: c.stats.bytesOut.Load(),
		RateLimited: c.rateLimits.Load(),
	}
	if ns := c.stats.lastFrame.Load(); ns != 0 {
		st.LastFrame = time.Unix(0, ns)
	}
	if ns := c.retryAt.Load(); ns != 0 {
		st.RetryAt = time.Unix(0, ns)
	}
	c.mu.Lock()
	st.State, st.StateSince = c.state, c.stateSince
	for k, n := range c.transitions {
		st.Transitions = append(st.Transitions, TransitionCount{From: k.from, To: k.to, Cause: k.cause, Count: n})
	}
	c.mu.Unlock()
	sort.Slice(st.Transitions, func(i, j int) bool {
		a, b := st.Transitions[i], st.Transitions[j]
		if a.From != b.From {
			return a.From < b.From
		}
		if a.To != b.To {
			return a.To < b.To
		}
		return a.Cause < b.Cause
	})
	return st
}
