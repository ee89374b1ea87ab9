package directustest

import "context"

// ConnCount returns the number of open WebSocket connections, including
// connections still in the handshake and connections being closed.
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitConns blocks until exactly n WebSocket connections are open, or ctx
// ends (it then returns ctx.Err()). It is woken by every change, it does
// not poll.
func (s *Server) WaitConns(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		count, ch := len(s.conns), s.connChanged
		s.mu.Unlock()
		if count == n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
