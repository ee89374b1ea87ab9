package manager

// SubscriptionState is the live state of a subscription.
type SubscriptionState int

const (
	// StatePending: waiting for the first init.
	StatePending SubscriptionState = iota + 1
	// StateActive: the server delivers events.
	StateActive
	// StateResyncing: waiting for a fresh init (after a reconnect,
	// re-authentication, queue overflow, a handler panic or Resync), or the
	// connection is down and the subscription will be restored with the
	// next session.
	StateResyncing
	// StateFailed: the server refused the subscription when it was restored
	// or resynced (for instance FORBIDDEN after a change of identity, or a
	// single item that no longer exists). It is retried with the next
	// session or Resync.
	StateFailed
	// StateEnded: unsubscribed, scope ended or manager closed.
	StateEnded
	// StateStalled: the handler fell behind its queue, which was
	// discarded; it gets a fresh init once it returns from the event it is
	// on, and events are dropped until then (see StallError).
	StateStalled
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
	case StateStalled:
		return "stalled"
	}
	return "unknown"
}

// MarshalText writes the state's name, so that Info encodes to readable
// JSON ("active", not 2).
func (s SubscriptionState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ResyncCause tells why a subscription received a fresh init.
type ResyncCause int

const (
	// CauseReconnect: a new session replaced a lost one (or Reconnect).
	CauseReconnect ResyncCause = iota
	// CauseReauth: re-authentication after TOKEN_EXPIRED; events between
	// the expiry and the re-authentication were lost.
	CauseReauth
	// CauseOverflow: the handler fell behind and its queue was discarded.
	CauseOverflow
	// CausePanic: the handler panicked.
	CausePanic
	// CauseRequested: Subscription.Resync (a store's reconcile, for one).
	CauseRequested
	// CauseLostEarly: events that overtook an init overflowed.
	CauseLostEarly
	// CauseInitTimeout: a subscribe got no init in time and was sent again.
	CauseInitTimeout
	// CauseAggregate: events changed the rows of an Aggregate or GroupBy
	// subscription; the aggregate was read again.
	CauseAggregate
	// NumResyncCauses is the number of causes, the length of
	// Stats.ResyncsByCause.
	NumResyncCauses
)

func (c ResyncCause) String() string {
	switch c {
	case CauseReconnect:
		return "reconnect"
	case CauseReauth:
		return "reauth"
	case CauseOverflow:
		return "overflow"
	case CausePanic:
		return "panic"
	case CauseRequested:
		return "requested"
	case CauseLostEarly:
		return "lost_early"
	case CauseInitTimeout:
		return "init_timeout"
	case CauseAggregate:
		return "aggregate"
	}
	return "unknown"
}
