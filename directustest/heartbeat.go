package directustest

import "time"

// The heartbeat (docs/PROTOCOL.md §7): one global timer, running while at least
// one connection exists. On each tick every connection past the handshake
// that was pinged on the previous tick and has sent no valid non-auth frame
// since is closed (1005, no error frame); every other one gets
// {"type":"ping"}.

// hbEnsureLocked starts or stops the heartbeat timer to match the current
// period and connection count.
func (s *Server) hbEnsureLocked() {
	if s.closed || s.hbPeriod <= 0 || len(s.conns) == 0 {
		s.hbTimer.stop()
		s.hbTimer = nil
		return
	}
	if s.hbTimer != nil {
		return
	}
	s.hbTimer = s.afterFuncLocked(s.hbPeriod, func(t *stimer) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.hbTimer != t || s.closed {
			return
		}
		s.hbTimer = nil
		s.hbTickLocked()
		s.hbEnsureLocked()
	})
}

func (s *Server) hbTickLocked() {
	conns := s.connsInOrderLocked()
	if s.faults.stalled.Load() {
		// A stalled server neither pings nor judges the silence it caused.
		for _, c := range conns {
			c.hbPinged = false
		}
		return
	}
	for _, c := range conns {
		if c.state != stateOpen {
			continue
		}
		if c.hbPinged {
			s.logf("heartbeat timeout", "conn", c.id)
			c.closeLocked()
			continue
		}
		c.hbPinged = true
		c.sendLocked(framePing)
	}
}

// SetHeartbeatPeriod changes the heartbeat period at run time. Zero or a
// negative value disables the heartbeat. Pending heartbeat answers are
// forgotten and the next tick comes one new period from now.
func (s *Server) SetHeartbeatPeriod(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hbPeriod = d
	s.hbTimer.stop()
	s.hbTimer = nil
	for _, c := range s.conns {
		c.hbPinged = false
	}
	s.hbEnsureLocked()
}

// heartbeatSeconds is the value of websocket.heartbeat in /server/info.
func (s *Server) heartbeatInfoLocked() any {
	if s.hbPeriod <= 0 {
		return false
	}
	return s.hbPeriod.Seconds()
}
