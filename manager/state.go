package manager

// SubscriptionState is the live state of a subscription.
type SubscriptionState int

const (
	// StatePending: waiting for the first init.
	StatePending SubscriptionState = iota + 1
	// StateActive: the server delivers events.
	StateActive
	// StateResyncing: waiting for a fresh init (after a reconnect,
	// re-authentication, queue overflow or Resync), or the connection is
	// down and the subscription will be restored with the next session.
	StateResyncing
	// StateFailed: the server refused the subscription when it was restored
	// (for instance FORBIDDEN after a change of identity). It is retried with
	// the next session or Resync.
	StateFailed
	// StateEnded: unsubscribed, scope ended or manager closed.
	StateEnded
)

func (s SubscriptionState) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateActive:
		return "active"
	case StateResyncing:
		return "resyncing"
	case StateFailed:
		return "failed"
	case StateEnded:
		return "ended"
	}
	return "unknown"
}

// MarshalText writes the state's name, so that Info encodes to readable
// JSON ("active", not 2).
func (s SubscriptionState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
