package store

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Defaults of Options.
const (
	// DefaultListenerQueue bounds the changes waiting for one listener. A
	// listener further behind gets a single OpReset instead of its backlog.
	DefaultListenerQueue = 1 << 20

	// DefaultListenerBytes bounds the rows the changes waiting for one
	// listener hold (each change counts its rows at the size they had on
	// the wire).
	DefaultListenerBytes int64 = 64 << 20
)

// DefaultRetry paces the reconciles a replica brings forward (after error
// events, a refused or undecodable init): 1 s doubling to 5 minutes, reset
// after 5 minutes without one.
var DefaultRetry = conn.Backoff{Initial: time.Second, Max: 5 * time.Minute, ResetAfter: 5 * time.Minute}

// IndexFunc returns the values under which an item is indexed.
type IndexFunc[T any] func(T) []string

// Options configure a Collection. Key is required.
type Options[K comparable, T any] struct {
	// Key returns an item's primary key.
	Key func(T) K

	// KeyField is the JSON name of the primary key, "id" when empty.
	// Subscribe refuses a query whose fields leave it out.
	KeyField string

	// Stale, when set, guards against stale data: an incoming row for
	// which Stale(incoming, current) is true does not replace the current
	// one. With a version field such as date_updated this keeps a re-read
	// that arrives late from overwriting newer data. ByTime builds one.
	Stale func(incoming, current T) bool

	// Equal decides whether a row changed; reflect.DeepEqual when nil.
	// Unchanged rows produce no listener change.
	Equal func(a, b T) bool

	// Indexers maps an index name to its function. Indexes are updated
	// atomically with the rows.
	Indexers map[string]IndexFunc[T]

	// ReconcileInterval, when positive, re-reads the subscription's query
	// that often (with ±10% jitter) and corrects the replica: rows that left
	// a filter the replica cannot follow itself (see FilterExits), missed
	// events and writes that emitted none. Error events, a refused reconcile and an init with
	// no decodable row bring the next reconcile forward, paced by Retry.
	ReconcileInterval time.Duration

	// Retry paces the reconciles brought forward: however many error
	// events arrive, at most one reconcile per backoff step runs, and a
	// condition that does not heal (permission revoked, item gone, rows that
	// do not decode) is retried at the backoff's pace, not in a loop. The
	// zero value means DefaultRetry.
	Retry conn.Backoff

	// ListenerQueue and ListenerBytes bound each listener's backlog; 0
	// means DefaultListenerQueue and DefaultListenerBytes.
	ListenerQueue int
	ListenerBytes int64

	// OnError receives, once per occurrence of a condition rather than once
	// per attempt, what the replica cannot fix by itself: a reconcile the
	// server refused, reconciles that keep failing, and recovered panics of
	// listeners and of views' comparisons (*protocol.PanicError). Errors of the events themselves
	// (rows that do not decode) are returned by Handle to the manager,
	// which reports them to its OnError. nil means they are only logged.
	OnError func(error)

	// FilterExits says whether a filtered replica removes a row at the
	// update that moves it out of the filter, which Directus sends no event
	// for (see FilterExitMode). The zero value, FilterExitsAuto, does so
	// when the filter can be evaluated on a row's own fields.
	FilterExits FilterExitMode

	// CrashOnPanic turns off the recovery of panics in listeners.
	CrashOnPanic bool

	// Logger receives warnings (bad rows, reconcile failures); nil is silent.
	Logger *slog.Logger

	// Unmarshal decodes rows: the data of an event (a JSON array of rows, or
	// one row) into a *[]T or a *T, as json.Unmarshal does, which is used
	// when nil. It lets a faster decoder be plugged in without the library
	// depending on it (bench/README.md, "Row decoders", measures some). It
	// may be called from several goroutines at once (a large init is
	// decoded in chunks on every core), and must refuse what is not JSON:
	// the rows it returns replace the replica's.
	Unmarshal func(data []byte, v any) error
}

// Stats are a Collection's counters.
type Stats struct {
	Inits        uint64 // inits applied, the first one included
	Resyncs      uint64 // inits applied with Resync set
	Events       uint64 // create, update and delete events applied
	Errors       uint64 // error events received (each means a lost event)
	StaleSkipped uint64 // rows kept because Stale said the incoming one was older
	BadRows      uint64 // rows or keys that did not decode, skipped
	Reconciles   uint64 // reconciles started
	// ReconcileFailures counts reconciles that failed (refused, timed out,
	// undecodable).
	ReconcileFailures uint64
	// ReconcileChanges counts the rows reconciles added, changed or
	// removed: what events had missed.
	ReconcileChanges uint64
	// ReconcileTime is the time spent in reconciles, summed.
	ReconcileTime time.Duration
	// ListenerPanics counts recovered panics of listeners (and of the
	// comparisons of views).
	ListenerPanics uint64
	// ExitChecks counts the update events of the companion subscription
	// evaluated for filter exits, and FilterExits the rows they removed.
	ExitChecks  uint64
	FilterExits uint64
}

// Collection is an in-memory replica of the rows a subscription selects,
// keyed by primary key. It is a handlers.Handler: give it to a subscription,
// or let Subscribe do so. See the package documentation for its contract.
// All methods are safe for concurrent use.
type Collection[K comparable, T any] struct {
	opts  Options[K, T]
	log   *slog.Logger
	equal func(a, b T) bool

	// Every change takes rangeMu, then mu (lock). Range holds only rangeMu,
	// for reading: the reads f makes take mu for reading, and a change
	// waiting for Range to end waits on rangeMu, not on mu, so they never
	// queue behind it.
	rangeMu   sync.RWMutex
	mu        sync.RWMutex
	rows      map[K]T
	indexes   map[string]*index[K, T]
	listeners map[*listener[K, T]]struct{}
	views     map[*View[K, T]]struct{} // updated while events apply
	// afterUnlock runs once the lock taken for a change is released: what
	// must not run under it, such as OnError.
	afterUnlock []func()
	synced      bool
	syncedCh    chan struct{}
	closedCh    chan struct{} // closed by Close
	waitMu      sync.Mutex
	applied     chan struct{} // made by WaitFor, closed after the next applied event
	closed      bool

	// ctl guards the subscription and the reconcile loop.
	ctl       sync.Mutex
	sub       *manager.Subscription
	stopLoop  chan struct{}
	soon      chan struct{} // asks the reconcile loop to run now
	loopDone  chan struct{}
	listenWG  sync.WaitGroup
	closeOnce sync.Once

	// status is the replica's health: why it cannot follow the server, and
	// what the last reconcile did (statusMu).
	statusMu sync.Mutex
	status   Status
	// firstInit is closed once the first init was handled, well or not;
	// firstErr says why not.
	firstInit chan struct{}
	firstErr  error
	firstOnce sync.Once
	// decodeFailing is set while inits fail to decode, so that the error is
	// returned once per episode (under lock).
	decodeFailing bool
	// avgRow is the size of a row on the wire, from the last decoded event:
	// what a queued change is counted as (under lock).
	avgRow int64
	// seen is, while filter exits are followed, when the replica's own
	// subscription last showed each key, and initAt when its last init
	// arrived (under lock): a filter exit older than either is stale.
	seen   map[K]time.Time
	initAt time.Time
	// mainAt is when the last event or init of the replica's own
	// subscription that was applied arrived, and tombs the keys of exits
	// that arrived after it (in tombQ, in order): the replica's own events
	// older than such an exit show the row before it left, and are not
	// applied to it (under lock).
	mainAt time.Time
	tombs  map[K]time.Time
	tombQ  []tomb[K]
	// companion is the subscription that follows filter exits (ctl).
	companion *manager.Subscription

	inits, resyncs, events, errorEvents, staleSkipped, badRows, reconciles atomic.Uint64
	reconcileFailures, reconcileChanges, listenerPanics, exitChecks        atomic.Uint64
	filterExits                                                            atomic.Uint64
	lastResyncChanges                                                      atomic.Int64
	reconcileNanos                                                         atomic.Int64
}

// New returns an empty Collection, or a *protocol.ConfigError for options it
// cannot work with (Key is required).
func New[K comparable, T any](opts Options[K, T]) (*Collection[K, T], error) {
	if opts.Key == nil {
		return nil, &protocol.ConfigError{Field: "Key", Reason: "required"}
	}
	if opts.KeyField == "" {
		opts.KeyField = "id"
	}
	if opts.ListenerQueue < 0 || opts.ListenerBytes < 0 || opts.ReconcileInterval < 0 {
		return nil, &protocol.ConfigError{Field: "ListenerQueue", Reason: "negative"}
	}
	if opts.FilterExits >= filterExitModes {
		return nil, &protocol.ConfigError{Field: "FilterExits", Reason: "not a FilterExitMode"}
	}
	if opts.ListenerQueue == 0 {
		opts.ListenerQueue = DefaultListenerQueue
	}
	if opts.ListenerBytes == 0 {
		opts.ListenerBytes = DefaultListenerBytes
	}
	if opts.Retry == (conn.Backoff{}) {
		opts.Retry = DefaultRetry
	}
	if err := opts.Retry.Validate("Retry"); err != nil {
		return nil, err
	}
	if opts.Retry.ResetAfter == 0 {
		opts.Retry.ResetAfter = DefaultRetry.ResetAfter
	}
	c := &Collection[K, T]{
		opts:      opts,
		log:       slog.New(slog.DiscardHandler),
		equal:     opts.Equal,
		rows:      make(map[K]T),
		indexes:   make(map[string]*index[K, T], len(opts.Indexers)),
		listeners: make(map[*listener[K, T]]struct{}),
		views:     make(map[*View[K, T]]struct{}),
		syncedCh:  make(chan struct{}),
		closedCh:  make(chan struct{}),
		soon:      make(chan struct{}, 1),
		firstInit: make(chan struct{}),
		avgRow:    128,
	}
	if opts.Logger != nil {
		c.log = opts.Logger.With("component", "directus-store")
	}
	if c.equal == nil {
		c.equal = func(a, b T) bool { return reflect.DeepEqual(a, b) }
	}
	for name, fn := range opts.Indexers {
		c.indexes[name] = newIndex[K](fn)
	}
	return c, nil
}

// lock takes the collection for a change; see rangeMu.
func (c *Collection[K, T]) lock() {
	c.rangeMu.Lock()
	c.mu.Lock()
}

func (c *Collection[K, T]) unlock() {
	after := c.afterUnlock
	c.afterUnlock = nil
	c.mu.Unlock()
	c.rangeMu.Unlock()
	for _, f := range after {
		f()
	}
}

// Get returns the row with key k.
func (c *Collection[K, T]) Get(k K) (T, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.rows[k]
	return v, ok
}

// Len returns the number of rows.
func (c *Collection[K, T]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.rows)
}

// Range calls f for each row, in no particular order, until f returns
// false. It sees one consistent state: no event is applied while it runs,
// so f must not take long and must not call methods that write, nor Range
// itself. It may call the other read methods, which answer from the same
// state.
func (c *Collection[K, T]) Range(f func(K, T) bool) {
	c.rangeMu.RLock()
	defer c.rangeMu.RUnlock()
	for k, v := range c.rows {
		if !f(k, v) {
			return
		}
	}
}

// Snapshot returns a copy of every row, taken from one consistent state.
func (c *Collection[K, T]) Snapshot() map[K]T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[K]T, len(c.rows))
	for k, v := range c.rows {
		out[k] = v
	}
	return out
}

// List returns every row, in no particular order.
func (c *Collection[K, T]) List() []T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]T, 0, len(c.rows))
	for _, v := range c.rows {
		out = append(out, v)
	}
	return out
}

// Keys returns every key, in no particular order.
func (c *Collection[K, T]) Keys() []K {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]K, 0, len(c.rows))
	for k := range c.rows {
		out = append(out, k)
	}
	return out
}

// Synced reports whether the first init has been applied.
func (c *Collection[K, T]) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// WaitSynced waits until the first init has been applied.
func (c *Collection[K, T]) WaitSynced(ctx context.Context) error {
	select {
	case <-c.syncedCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitFor waits until cond returns true. cond is evaluated now, after
// every event the collection applies and whenever Status().Err changes; it
// may read the collection.
func (c *Collection[K, T]) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		c.waitMu.Lock()
		if c.applied == nil {
			c.applied = make(chan struct{})
		}
		next := c.applied
		c.waitMu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns the counters.
func (c *Collection[K, T]) Stats() Stats {
	return Stats{
		Inits: c.inits.Load(), Resyncs: c.resyncs.Load(), Events: c.events.Load(),
		Errors: c.errorEvents.Load(), StaleSkipped: c.staleSkipped.Load(), BadRows: c.badRows.Load(),
		Reconciles: c.reconciles.Load(), ReconcileFailures: c.reconcileFailures.Load(),
		ReconcileChanges: c.reconcileChanges.Load(), ListenerPanics: c.listenerPanics.Load(),
		ReconcileTime: time.Duration(c.reconcileNanos.Load()),
		ExitChecks:    c.exitChecks.Load(), FilterExits: c.filterExits.Load(),
	}
}

// rowSize is what one row of a queued change is counted as. c.mu is held.
func (c *Collection[K, T]) rowSize() int64 { return c.avgRow }

// reportPanic reports a recovered panic of a listener.
func (c *Collection[K, T]) reportPanic(where string, v any, stack []byte) {
	c.listenerPanics.Add(1)
	pe := &protocol.PanicError{Callback: where, Value: v, Stack: stack}
	c.log.Error("listener panicked; recovered", "panic", v)
	if c.opts.OnError != nil {
		c.opts.OnError(pe)
	}
}

// ErrNoIndex is returned for an index name Options.Indexers does not have.
var ErrNoIndex = errors.New("directus: no such index")

// ByIndex returns the rows indexed under value in the named index.
func (c *Collection[K, T]) ByIndex(name, value string) ([]T, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ix := c.indexes[name]
	if ix == nil {
		return nil, ErrNoIndex
	}
	keys := ix.byValue[value]
	out := make([]T, 0, len(keys))
	for k := range keys {
		out = append(out, c.rows[k])
	}
	return out, nil
}

// IndexKeys returns the keys indexed under value in the named index.
func (c *Collection[K, T]) IndexKeys(name, value string) ([]K, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ix := c.indexes[name]
	if ix == nil {
		return nil, ErrNoIndex
	}
	out := make([]K, 0, len(ix.byValue[value]))
	for k := range ix.byValue[value] {
		out = append(out, k)
	}
	return out, nil
}

// IndexValues returns the values the named index holds.
func (c *Collection[K, T]) IndexValues(name string) ([]string, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ix := c.indexes[name]
	if ix == nil {
		return nil, ErrNoIndex
	}
	out := make([]string, 0, len(ix.byValue))
	for v := range ix.byValue {
		out = append(out, v)
	}
	return out, nil
}

// index maps values to keys and keys to the values they were indexed under,
// so that an update removes exactly the old entries.
type index[K comparable, T any] struct {
	fn      IndexFunc[T]
	byValue map[string]map[K]struct{}
	byKey   map[K][]string
}

func newIndex[K comparable, T any](fn IndexFunc[T]) *index[K, T] {
	return &index[K, T]{fn: fn, byValue: make(map[string]map[K]struct{}), byKey: make(map[K][]string)}
}

func (ix *index[K, T]) remove(k K) {
	for _, v := range ix.byKey[k] {
		set := ix.byValue[v]
		delete(set, k)
		if len(set) == 0 {
			delete(ix.byValue, v)
		}
	}
	delete(ix.byKey, k)
}

func (ix *index[K, T]) add(k K, item T) {
	values := ix.fn(item)
	if len(values) == 0 {
		return
	}
	ix.byKey[k] = values
	for _, v := range values {
		set := ix.byValue[v]
		if set == nil {
			set = make(map[K]struct{}, 1)
			ix.byValue[v] = set
		}
		set[k] = struct{}{}
	}
}
