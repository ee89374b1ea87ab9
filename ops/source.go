package ops

import (
	"sort"
	"sync"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/store"
)

// Replica is what a Source reads of a replica: a *store.Collection of any
// key and row type.
type Replica interface {
	Status() store.Status
	Stats() store.Stats
	Subscription() *manager.Subscription
}

// Source is the one place the probes, the status page and the metrics
// packages read the library's health from: a Manager and the replicas and
// subscriptions registered by name. It keeps no counter of its own; every
// figure is read from the Conn's, the Manager's and the replicas' Stats at
// the moment of the Snapshot.
//
// Names are the operator's labels: they, and the collection, are the only
// labels metrics carry, never a subscription's uid or query (which can be
// unbounded). Every method is safe for concurrent use.
type Source struct {
	m    *manager.Manager
	opts Options

	mu       sync.Mutex
	replicas []*namedReplica
	subs     map[*manager.Subscription]string
	names    map[string]bool
	progress map[string]*mark // what Live last saw
}

type namedReplica struct {
	name  string
	r     Replica
	added time.Time
}

// Options tune a Source; nil means the defaults.
type Options struct {
	// StuckAfter is how long the library may make no progress, while it
	// should make some, before Live fails (see Source.Live); 0 means
	// DefaultStuckAfter.
	StuckAfter time.Duration
	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
}

// DefaultStuckAfter is the default Options.StuckAfter: longer than any
// backoff wait of the library (30 s for reconnects, at most 10 minutes
// only when a server's Retry-After asks for it, which Live allows for).
const DefaultStuckAfter = 2 * time.Minute

// NewSource returns a Source reading m. opts may be nil.
func NewSource(m *manager.Manager, opts *Options) *Source {
	s := &Source{m: m, subs: make(map[*manager.Subscription]string), names: make(map[string]bool)}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.StuckAfter <= 0 {
		s.opts.StuckAfter = DefaultStuckAfter
	}
	if s.opts.Now == nil {
		s.opts.Now = time.Now
	}
	return s
}

// Manager returns the manager the Source reads.
func (s *Source) Manager() *manager.Manager { return s.m }

// AddReplica registers a replica under name, which labels its metrics and
// names it in probes and on the status page; readiness waits for it to be
// synced. Its subscription is reported under the same name. A name already
// taken is refused with a *protocol.ConfigError. remove unregisters it.
func (s *Source) AddReplica(name string, r Replica) (remove func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.claimLocked(name); err != nil {
		return nil, err
	}
	nr := &namedReplica{name: name, r: r, added: s.opts.Now()}
	s.replicas = append(s.replicas, nr)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, x := range s.replicas {
			if x == nr {
				s.replicas = append(s.replicas[:i:i], s.replicas[i+1:]...)
				delete(s.names, name)
			}
		}
	}, nil
}

// AddSubscription names a subscription that is not a replica's, so that
// it gets metrics of its own (others are counted only by collection and
// state). A name already taken is refused with a *protocol.ConfigError.
// The name is released when the subscription ends, or by remove.
func (s *Source) AddSubscription(name string, sub *manager.Subscription) (remove func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.claimLocked(name); err != nil {
		return nil, err
	}
	s.subs[sub] = name
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.subs[sub] == name {
			delete(s.subs, sub)
			delete(s.names, name)
		}
	}, nil
}

func (s *Source) claimLocked(name string) error {
	if name == "" {
		return configError("name", "empty")
	}
	if s.names[name] {
		return configError("name", "already registered: "+name)
	}
	s.names[name] = true
	return nil
}

// Snapshot is the library's state at one moment, as the status page shows
// it and the metrics report it. Queries are redacted (see Redact).
type Snapshot struct {
	Time time.Time `json:"time"`
	Conn ConnInfo  `json:"conn"`
	// Events counts handler calls over every subscription since the
	// manager's New (the count of Latency).
	Events uint64 `json:"events"`
	// Latency is the manager's frame → handler latency histogram.
	Latency       manager.Latency    `json:"-"`
	Subscriptions []SubscriptionInfo `json:"subscriptions"`
	Replicas      []ReplicaInfo      `json:"replicas"`
}

// ConnInfo is the connection in a Snapshot.
type ConnInfo struct {
	conn.Stats
}

// SubscriptionInfo is one live subscription in a Snapshot.
type SubscriptionInfo struct {
	// Name is the name given to AddSubscription or AddReplica, empty for
	// subscriptions not registered.
	Name       string                    `json:"name,omitempty"`
	UID        string                    `json:"uid"`
	Collection string                    `json:"collection"`
	Persistent bool                      `json:"persistent"`
	State      manager.SubscriptionState `json:"state"`
	Query      any                       `json:"query,omitempty"` // redacted
	Item       any                       `json:"item,omitempty"`
	Event      string                    `json:"event,omitempty"`
	Created    time.Time                 `json:"created"`
	// Stats are the subscription's counters; LastError is its text.
	Stats     manager.Stats `json:"-"`
	Events    uint64        `json:"events"`
	Resyncs   uint64        `json:"resyncs"`
	Overflows uint64        `json:"overflows"`
	Errors    uint64        `json:"errors"`
	Queued    int           `json:"queued"`
	LastEvent time.Time     `json:"last_event"`
	LastError string        `json:"last_error,omitempty"`
	ErrorAt   time.Time     `json:"last_error_at"`
}

// ReplicaInfo is one registered replica in a Snapshot.
type ReplicaInfo struct {
	Name       string       `json:"name"`
	Collection string       `json:"collection,omitempty"`
	UID        string       `json:"uid,omitempty"` // of its subscription
	Status     store.Status `json:"-"`
	Stats      store.Stats  `json:"stats"`
	Added      time.Time    `json:"added"`
	// The fields of Status, readable in JSON.
	Rows                 int       `json:"rows"`
	Synced               bool      `json:"synced"`
	Failure              string    `json:"failure,omitempty"`
	FailingSince         time.Time `json:"failing_since"`
	LastReconcile        time.Time `json:"last_reconcile"`
	LastReconcileChanges int       `json:"last_reconcile_changes"`
	LastReconcileTook    float64   `json:"last_reconcile_seconds"`
	LastReconcileErr     string    `json:"last_reconcile_error,omitempty"`
	NextReconcile        time.Time `json:"next_reconcile"`
}

// Snapshot reads the state now.
func (s *Source) Snapshot() Snapshot {
	snap := Snapshot{Time: s.opts.Now(), Conn: ConnInfo{Stats: s.m.Conn().Stats()}}
	snap.Latency = s.m.Latency()
	snap.Events = snap.Latency.Count

	s.mu.Lock()
	replicas := append([]*namedReplica(nil), s.replicas...)
	names := make(map[string]string, len(s.subs)+len(replicas)) // uid → name
	for sub, name := range s.subs {
		select {
		case <-sub.Done(): // ended: its name is free again
			delete(s.subs, sub)
			delete(s.names, name)
		default:
			names[sub.UID()] = name
		}
	}
	s.mu.Unlock()

	for _, nr := range replicas {
		st := nr.r.Status()
		ri := ReplicaInfo{
			Name: nr.name, Status: st, Stats: nr.r.Stats(), Added: nr.added,
			Rows: st.Rows, Synced: st.Synced, LastReconcile: st.LastReconcile,
			LastReconcileChanges: st.LastReconcileChanges, LastReconcileTook: st.LastReconcileTook.Seconds(),
			NextReconcile: st.NextReconcile,
		}
		if sub := nr.r.Subscription(); sub != nil {
			ri.Collection, ri.UID = sub.Collection(), sub.UID()
			names[sub.UID()] = nr.name
		}
		if st.Err != nil {
			ri.Failure = st.Err.Error()
			var fe *store.FailureError
			if asFailure(st.Err, &fe) {
				ri.FailingSince = fe.Since
			}
		}
		if st.LastReconcileErr != nil {
			ri.LastReconcileErr = st.LastReconcileErr.Error()
		}
		snap.Replicas = append(snap.Replicas, ri)
	}

	for _, in := range s.m.ActiveSubscriptions() {
		si := SubscriptionInfo{
			Name: names[in.UID], UID: in.UID, Collection: in.Collection, Persistent: in.Persistent,
			State: in.State, Query: Redact(in.Options.Query), Item: in.Options.Item, Event: in.Options.Event,
			Created: in.Created, Stats: in.Stats,
			Events: in.Stats.Events, Resyncs: in.Stats.Resyncs, Overflows: in.Stats.Overflows,
			Errors: in.Stats.Errors, Queued: in.Stats.Queued, LastEvent: in.Stats.LastEvent, ErrorAt: in.Stats.LastErrorAt,
		}
		if in.Stats.LastError != nil {
			si.LastError = in.Stats.LastError.Error()
		}
		snap.Subscriptions = append(snap.Subscriptions, si)
	}
	sort.SliceStable(snap.Replicas, func(i, j int) bool { return snap.Replicas[i].Name < snap.Replicas[j].Name })
	return snap
}
