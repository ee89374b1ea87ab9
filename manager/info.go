package manager

import (
	"sort"
	"time"
)

// Info describes a live subscription.
type Info struct {
	UID        string
	Collection string
	Options    SubscribeOptions
	Persistent bool
	Scoped     bool // ends with a Scope or a context
	State      SubscriptionState
	Stats      Stats
	Created    time.Time
}

// ActiveSubscriptions describes every subscription that has not ended, with
// its live state and counters, in creation order.
func (m *Manager) ActiveSubscriptions() []Info {
	m.mu.Lock()
	subs := make([]*Subscription, 0, len(m.locals))
	for _, s := range m.locals {
		subs = append(subs, s)
	}
	m.mu.Unlock()
	sort.Slice(subs, func(i, j int) bool { return subs[i].seq < subs[j].seq })
	infos := make([]Info, 0, len(subs))
	for _, s := range subs {
		st := s.State()
		if st == StateEnded {
			continue
		}
		infos = append(infos, Info{
			UID: s.uid, Collection: s.opts.Collection, Options: s.opts, Persistent: s.opts.Persistent,
			Scoped: !s.opts.Persistent, State: st, Stats: s.Stats(), Created: s.created,
		})
	}
	return infos
}

// HasSubscription reports whether a subscription with this uid is live.
func (m *Manager) HasSubscription(uid string) bool {
	m.mu.Lock()
	s := m.locals[uid]
	m.mu.Unlock()
	return s != nil && s.State() != StateEnded
}

// Subscription returns the live subscription with this uid, or nil.
func (m *Manager) Subscription(uid string) *Subscription {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.locals[uid]
}
