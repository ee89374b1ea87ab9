package directustest

import (
	"sync"
	"sync/atomic"
	"time"
)

// faults holds the settings of the outbound fault controls. Writers read
// them without taking Server.mu.
type faults struct {
	stalled atomic.Bool
	reorder atomic.Int64

	mu     sync.Mutex
	delay  time.Duration
	change chan struct{} // closed (and replaced) whenever a setting changes
}

func (f *faults) init() { f.change = make(chan struct{}) }

func (f *faults) snapshot() (stalled bool, change chan struct{}, delay time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stalled.Load(), f.change, f.delay
}

func (f *faults) changed() {
	close(f.change)
	f.change = make(chan struct{})
}

// DropConnections cuts every WebSocket abruptly, without a close frame, as a
// crash would: clients see 1006. Upgrades under way are cut too, even if
// their client already got the 101. The listener stays up. It returns when
// the sockets are gone (ConnCount is then 0 unless new ones came in).
func (s *Server) DropConnections() {
	s.mu.Lock()
	// An upgrade whose 101 is written but whose connection is not yet
	// registered checks the epoch and closes itself.
	s.epoch++
	conns := s.connsInOrderLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.abort()
	}
	for _, c := range conns {
		<-c.gone
	}
	s.dropGraphQL()
}

// RefuseConnections closes the listener, so new dials get ECONNREFUSED, and
// reopens it on the same port after d. It returns at once; existing sockets
// are untouched. Start ends the refusal early.
func (s *Server) RefuseConnections(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.reopen.stop()
	s.reopen = nil
	if s.listening {
		_ = s.ln.Close()
		s.ln, s.listening = nil, false
	}
	s.reopen = s.afterFuncLocked(d, func(t *stimer) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.reopen != t || s.closed {
			return
		}
		s.reopen = nil
		s.listenLocked()
	})
}

// Stop takes the server down like a stopped process: the listener is closed
// (dials get ECONNREFUSED), every socket is cut without a close frame
// (1006), and pending HTTP requests are aborted. It returns when the
// sockets are gone. Data, users, refresh tokens
// and the JWT secret survive. Start brings it back on the same port.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.reopen.stop()
	s.reopen = nil
	s.epoch++
	close(s.hangCh)
	s.hangCh = make(chan struct{})
	srv := s.httpSrv
	s.httpSrv, s.ln, s.listening = nil, nil, false
	conns := s.connsInOrderLocked()
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	for _, c := range conns {
		c.abort()
	}
	for _, c := range conns {
		<-c.gone
	}
	s.dropGraphQL()
}

// Start reopens the listener on the same port after Stop or during
// RefuseConnections. It does nothing when the server is listening.
func (s *Server) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reopen.stop()
	s.reopen = nil
	s.listenLocked()
}

// Restart is a process restart: every socket is dropped (1006), dials are
// refused for a short while, and the server comes back on the same port.
// Data, users, refresh tokens and the JWT secret survive; subscriptions,
// which belong to connections, do not. It returns when the server accepts
// connections again.
func (s *Server) Restart() {
	s.Stop()
	t := time.NewTimer(restartDowntime)
	select {
	case <-t.C:
	case <-s.closeCh:
		t.Stop()
		return
	}
	s.Start()
}

// Inject sends a raw text frame, any bytes at all (even invalid JSON), to
// every open connection.
func (s *Server) Inject(frame []byte) {
	data := append([]byte(nil), frame...)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.connsInOrderLocked() {
		c.sendLocked(data)
	}
}

// SetFrameDelay delays every outgoing frame by d from the moment it is
// produced; the order is kept. Zero turns it off.
func (s *Server) SetFrameDelay(d time.Duration) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.delay = d
	s.faults.changed()
}

// SetReorder shuffles the outgoing frames of each connection within windows
// of up to window frames (frames produced within a few milliseconds of each
// other are grouped). 0 or 1 turns it off. Close frames are never moved.
func (s *Server) SetReorder(window int) {
	s.faults.reorder.Store(int64(window))
	s.faults.mu.Lock()
	s.faults.changed()
	s.faults.mu.Unlock()
}

// Stall makes the server silent while on: it sends nothing at all (no
// replies, events, pings or pongs; the heartbeat neither pings nor closes)
// but keeps the sockets open and keeps reading and processing requests.
// Frames produced while stalled are lost; frames queued before are held
// and, like closes requested meanwhile, go out after Stall(false).
func (s *Server) Stall(on bool) {
	s.faults.mu.Lock()
	s.faults.stalled.Store(on)
	s.faults.changed()
	s.faults.mu.Unlock()
}
