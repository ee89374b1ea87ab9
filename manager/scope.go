package manager

import (
	"context"
	"sync"

	"github.com/e41af43e/directus-realtime/handlers"
)

// Scope groups subscriptions that end together, the Go form of a component
// that unmounts: Close ends every subscription made through the scope. A
// scope made with a context also closes when that context is done. A closed
// scope refuses new subscriptions with ErrScopeClosed. Safe for concurrent
// use.
type Scope struct {
	m    *Manager
	stop func() bool

	mu     sync.Mutex
	closed bool
	subs   map[*Subscription]struct{}
}

// NewScope returns a scope that closes when ctx is done (a nil ctx means
// only Close closes it).
func (m *Manager) NewScope(ctx context.Context) *Scope {
	sc := &Scope{m: m, subs: make(map[*Subscription]struct{})}
	if ctx != nil {
		sc.stop = context.AfterFunc(ctx, func() { sc.Close() })
	}
	return sc
}

// Subscribe subscribes within the scope: the subscription ends when the
// scope closes. opts.Persistent is ignored; ctx only bounds the wait for
// the init.
func (sc *Scope) Subscribe(ctx context.Context, opts SubscribeOptions, h handlers.Handler) (*Subscription, error) {
	sc.mu.Lock()
	closed := sc.closed
	sc.mu.Unlock()
	if closed {
		return nil, ErrScopeClosed
	}
	return sc.m.subscribe(ctx, opts, h, sc)
}

// Len returns the number of live subscriptions of the scope.
func (sc *Scope) Len() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return len(sc.subs)
}

// Close ends the scope's subscriptions and returns how many it ended.
func (sc *Scope) Close() int {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return 0
	}
	sc.closed = true
	subs := sc.subs
	sc.subs = nil
	sc.mu.Unlock()
	if sc.stop != nil {
		sc.stop()
	}
	n := 0
	for s := range subs {
		if sc.m.end(s, ErrUnsubscribed) == nil {
			n++
		}
	}
	return n
}

func (sc *Scope) add(s *Subscription) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		return false
	}
	sc.subs[s] = struct{}{}
	return true
}

func (sc *Scope) remove(s *Subscription) {
	sc.mu.Lock()
	delete(sc.subs, s)
	sc.mu.Unlock()
}
