package conn

import (
	"context"
	"sync"
)

// State is the state of a Conn.
type State int

const (
	// StateIdle: created, Connect not called yet.
	StateIdle State = iota
	// StateConnecting: the first connection is being established.
	StateConnecting
	// StateConnected: a session is up and authenticated.
	StateConnected
	// StateReconnecting: the session was lost; waiting or trying to reconnect.
	StateReconnecting
	// StateClosed: Close was called, Connect failed, or Backoff.MaxAttempts
	// was reached. Final.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// StateChange is one transition. Err is the cause of leaving the connected
// state or of a failed attempt, when there is one.
type StateChange struct {
	From, To State
	Err      error
}

// stateWatchBuffer is how many changes a slow watcher may fall behind by
// before the oldest are dropped; the latest one is always delivered.
const stateWatchBuffer = 16

type stateWatchers struct {
	mu   sync.Mutex
	subs map[chan StateChange]struct{}
}

func (w *stateWatchers) add(ch chan StateChange) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs == nil {
		w.subs = make(map[chan StateChange]struct{})
	}
	w.subs[ch] = struct{}{}
	return true
}

func (w *stateWatchers) remove(ch chan StateChange) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.subs[ch]; ok {
		delete(w.subs, ch)
		close(ch)
	}
}

// publish delivers sc to every watcher without blocking: a full channel
// loses its oldest change.
func (w *stateWatchers) publish(sc StateChange) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		for {
			select {
			case ch <- sc:
			default:
				select {
				case <-ch:
				default:
				}
				continue
			}
			break
		}
	}
}

func (w *stateWatchers) closeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		delete(w.subs, ch)
		close(ch)
	}
}

// watch returns a channel of state changes that is closed when ctx is done
// or the watchers are closed.
func (w *stateWatchers) watch(ctx context.Context, closed <-chan struct{}) <-chan StateChange {
	ch := make(chan StateChange, stateWatchBuffer)
	w.add(ch)
	go func() {
		select {
		case <-ctx.Done():
		case <-closed:
		}
		w.remove(ch)
	}()
	return ch
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
