package manager

import "context"

// Flush waits until the handler has handled every event queued for the
// subscription before the call: after Subscribe, it waits for the first
// init to have been handled. It must not be called from the subscription's
// own handler, which would wait for itself.
func (s *Subscription) Flush(ctx context.Context) error {
	s.dmu.Lock()
	n := s.pushed
	s.dmu.Unlock()
	return s.waitConsumed(ctx, n)
}

// MarshalText writes the state's name, so that Info encodes to readable
// JSON ("active", not 2).
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
