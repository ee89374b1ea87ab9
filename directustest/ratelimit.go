package directustest

import (
	"fmt"
	"time"
)

// RateLimit is Directus's rate limiter as it applies to WebSocket frames
// (docs/PROTOCOL.md §9): each socket may send Points frames per Duration,
// counted in a fixed window that opens with the first frame, after the
// handshake (the handshake's auth is not counted; every later frame is,
// pongs and auth included). A frame beyond them is dropped, unanswered,
// and the socket gets {"type":"server","status":"error","error":
// {"code":"REQUESTS_EXCEEDED","message":"Too many messages, retry after
// Nms."}} without uid; the socket stays open.
type RateLimit struct {
	Points   int
	Duration time.Duration
}

func (r RateLimit) enabled() bool { return r.Points > 0 && r.Duration > 0 }

// rateLimitedLocked counts one frame of c and reports whether the limiter
// dropped it, in which case the client has been told. s.mu is held.
func (s *Server) rateLimitedLocked(c *wsConn) bool {
	lim := s.opts.RateLimit
	if !lim.enabled() {
		return false
	}
	now := time.Now()
	if c.limitWindow.IsZero() || now.Sub(c.limitWindow) >= lim.Duration {
		c.limitWindow, c.limitUsed = now, 0
	}
	c.limitUsed++
	if c.limitUsed <= lim.Points {
		return false
	}
	s.rateLimitDrops.Add(1)
	left := lim.Duration - now.Sub(c.limitWindow)
	c.sendLocked(frameError("server", codeRequestsExceeded,
		fmt.Sprintf("Too many messages, retry after %dms.", left.Milliseconds()), uidVal{}))
	return true
}

// RateLimitDrops returns the number of frames the rate limiter dropped.
func (s *Server) RateLimitDrops() int64 { return s.rateLimitDrops.Load() }
