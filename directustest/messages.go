package directustest

import (
	"fmt"
	"runtime/debug"
)

// handleFrame handles one inbound frame. Frames of a connection are handled
// one at a time, in order, under Server.mu; a real Directus handles them
// concurrently, so its replies to pipelined requests can come back in any
// order (I9) while here they come back in request order (which is one of
// the orders a client must accept).
func (s *Server) handleFrame(c *wsConn, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		// Never let a frame crash the test binary. Like an unhandled
		// exception in Directus, the frame gets no reply.
		if r := recover(); r != nil {
			s.logError("panic while handling a frame", "conn", c.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	if s.closed || c.state >= stateClosing {
		return
	}
	m, perr := parseInbound(data)
	if c.state == stateHandshake {
		s.handleHandshakeLocked(c, m, perr)
		return
	}
	if s.rateLimitedLocked(c) {
		return
	}
	if perr != nil {
		// Invalid frames get a "server" error without uid, and do not count
		// as a heartbeat answer.
		c.sendLocked(frameDXError("server", perr, uidVal{}))
		return
	}
	if m.typ != "auth" {
		c.hbPinged = false
	}
	switch m.typ {
	case "auth":
		s.handleReauthLocked(c, m)
	case "ping":
		c.sendLocked(framePong(m.uid))
	case "subscribe":
		s.handleSubscribeLocked(c, m)
	case "unsubscribe":
		s.handleUnsubscribeLocked(c, m)
	case "items":
		s.handleItemsLocked(c, m)
	default:
		// Unknown types (including "pong") are ignored silently (M4).
	}
}
