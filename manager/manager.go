package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/goid"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Defaults of Options.
const (
	// DefaultQueueSize is how many events a subscription may have waiting
	// for its handler. Beyond it (or beyond DefaultQueueBytes) the queue is
	// discarded and the subscription resynced once its handler has caught
	// up: a slow handler costs a fresh init, never silent loss.
	DefaultQueueSize = 4096

	// DefaultQueueBytes bounds the data (the frames' "data" and "meta") a
	// subscription's queue holds. A single event larger than that (a large
	// init) still passes when the queue is empty. 1 MiB of rows decodes
	// in some 10 to 20 ms into a store, so a handler that keeps up frees
	// the quarter the read loop waits for well within DefaultOverflowWait,
	// while a reader ahead of its handler holds little: with 8 MiB, a firehose of 50-row batches doubled the peak
	// memory of the process against a client with no queue (bench/README.md,
	// batches).
	DefaultQueueBytes int64 = 1 << 20

	// DefaultInitTimeout is how long a subscribe may wait for its init
	// before it is sent again. Directus answers some failures with nothing
	// at all, and drops frames over its rate limit.
	DefaultInitTimeout = 30 * time.Second

	// DefaultMaxInFlight is how many subscribes may await their answer at
	// once (Options.MaxInFlight): at a round trip of 50 ms, 1,000
	// subscribes a second.
	DefaultMaxInFlight = 50

	// DefaultOverflowWait is how long the connection's read loop waits for a
	// handler to make room in its full queue before it gives up on that
	// subscription's queue (discards it and resyncs). A handler that keeps up
	// on average rides out bursts with backpressure instead of resyncs.
	DefaultOverflowWait = 100 * time.Millisecond

	// DefaultCloseTimeout bounds how long Close waits for handlers still
	// running.
	DefaultCloseTimeout = 10 * time.Second
)

// DefaultRetry paces the manager's own retries: the resync of a
// subscription whose handler fell behind or panicked, a resync read that
// failed, a subscribe that got no init in time. 100 ms doubling to 30 s;
// reset after a minute without trouble.
var DefaultRetry = conn.Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, ResetAfter: time.Minute}

// Options tune a Manager; nil or zero fields mean the defaults. Invalid
// values are a *protocol.ConfigError from New.
type Options struct {
	// QueueSize and QueueBytes bound each subscription's queue (0 means
	// DefaultQueueSize and DefaultQueueBytes). A queue's memory stays of
	// the order of its bounds however long a burst lasts, and is given back
	// when the subscription goes idle.
	QueueSize  int
	QueueBytes int64
	// InitTimeout bounds the wait for a subscribe's init (or a resync's
	// read) before it is sent again (0 means DefaultInitTimeout).
	InitTimeout time.Duration
	// MaxInFlight bounds the subscribes sent and not yet answered (0 means
	// DefaultMaxInFlight); later ones wait their turn. A server that serves
	// subscribes slowly then never holds a pile of them unread, which its
	// rate limiter would count as a burst: keep it below
	// RATE_LIMITER_POINTS when Directus's limiter is on.
	MaxInFlight int
	// OverflowWait bounds how long the read loop waits for room in a full
	// queue (0 means DefaultOverflowWait; negative means no wait: a full
	// queue overflows at once and nothing ever waits for a handler).
	OverflowWait time.Duration
	// Retry paces the manager's retries (the zero value means DefaultRetry).
	Retry conn.Backoff
	// CloseTimeout bounds how long Close waits for handlers still running
	// (0 means DefaultCloseTimeout). Handlers still running then are
	// abandoned: their goroutine ends when they return, and they receive
	// nothing more.
	CloseTimeout time.Duration
	// CrashOnPanic turns off the recovery of panics in handlers. By default
	// a handler that panics is reported to OnError as a *protocol.PanicError
	// with its stack, its queued events are discarded and the subscription
	// is resynced (after the Retry backoff), so that the handler rebuilds
	// its state from a fresh init.
	CrashOnPanic bool
}

func (o Options) withDefaults() (Options, error) {
	if o.QueueSize < 0 {
		return o, &protocol.ConfigError{Field: "QueueSize", Reason: "negative"}
	}
	if o.QueueBytes < 0 {
		return o, &protocol.ConfigError{Field: "QueueBytes", Reason: "negative"}
	}
	if o.MaxInFlight < 0 {
		return o, &protocol.ConfigError{Field: "MaxInFlight", Reason: "negative"}
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.InitTimeout < 0 {
		return o, &protocol.ConfigError{Field: "InitTimeout", Reason: "negative"}
	}
	if o.CloseTimeout < 0 {
		return o, &protocol.ConfigError{Field: "CloseTimeout", Reason: "negative"}
	}
	if o.Retry == (conn.Backoff{}) {
		o.Retry = DefaultRetry
	}
	if err := o.Retry.Validate("Retry"); err != nil {
		return o, err
	}
	if o.Retry.ResetAfter == 0 {
		o.Retry.ResetAfter = DefaultRetry.ResetAfter
	}
	if o.QueueSize == 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.QueueBytes == 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.InitTimeout == 0 {
		o.InitTimeout = DefaultInitTimeout
	}
	if o.OverflowWait == 0 {
		o.OverflowWait = DefaultOverflowWait
	}
	if o.CloseTimeout == 0 {
		o.CloseTimeout = DefaultCloseTimeout
	}
	return o, nil
}

// Manager keeps a set of subscriptions alive on one connection. See the
// package documentation for its guarantees. All methods are safe for
// concurrent use.
type Manager struct {
	conn    *conn.Conn
	opts    Options
	log     *slog.Logger
	onError func(error)

	ctx    context.Context // canceled by Close: ends resync reads and timers
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	sess      *conn.Session               // the session the registry was last restored on
	locals    map[string]*Subscription    // by local uid
	servers   map[string]*serverSub       // by subscription spec
	wire      map[protocol.UID]*serverSub // by the uid of the current subscribe frame
	limited   *time.Timer                 // checks subscribes the rate limiter may have dropped
	limitedAt time.Time                   // the last REQUESTS_EXCEEDED
	outbox    []outFrame                  // frames for the sender (outbox.go)
	sending   bool                        // a sender goroutine runs
	progress  time.Time                   // when a subscribe or resync read was last answered
	handoffs  uint64                      // subscribes handed to a session so far, numbering them
	inflight  int                         // subscribes handed to the session and not answered
	room      chan struct{}               // closed and replaced when an in-flight slot frees
	answered  uint64                      // the highest handoff number of an answered subscribe
	wireSeq   uint64
	autoSeq   uint64
	createSeq uint64

	appliers tracker        // handler goroutines, by goroutine id
	bg       sync.WaitGroup // resync reads and other helpers
	latency  histogram      // frame received → handler called
}

// New builds a Manager on a connection configured by cfg. The manager adds
// its own OnSubscription, OnConnect and OnRateLimited to cfg (any set there
// still run, after the manager's); cfg.OnError also receives handler errors
// and recovered handler panics, from the subscriptions' handler goroutines.
// Nothing is dialed before Connect.
func New(cfg *conn.Config, opts *Options) (*Manager, error) {
	if cfg == nil {
		return nil, &protocol.ConfigError{Field: "Config", Reason: "nil"}
	}
	m := &Manager{
		locals:  make(map[string]*Subscription),
		servers: make(map[string]*serverSub),
		wire:    make(map[protocol.UID]*serverSub),
		room:    make(chan struct{}),
		onError: cfg.OnError,
	}
	if opts != nil {
		m.opts = *opts
	}
	o, err := m.opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m.opts = o
	m.log = slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		m.log = cfg.Logger.With("component", "directus-manager")
	}
	c := *cfg
	userSub, userConnect, userLimited := cfg.OnSubscription, cfg.OnConnect, cfg.OnRateLimited
	c.OnSubscription = func(msg *protocol.Message) {
		m.route(msg)
		if userSub != nil {
			userSub(msg)
		}
	}
	c.OnConnect = func(s *conn.Session, reason conn.ConnectReason) {
		m.restore(s, reason)
		if userConnect != nil {
			userConnect(s, reason)
		}
	}
	c.OnRateLimited = func(d time.Duration) {
		m.rateLimited(d)
		if userLimited != nil {
			userLimited(d)
		}
	}
	cn, err := conn.New(&c)
	if err != nil {
		return nil, err
	}
	m.conn = cn
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Connect connects (see conn.Conn.Connect). Subscriptions made before
// Connect are sent once the first session is up.
func (m *Manager) Connect(ctx context.Context) error {
	return m.conn.Connect(ctx)
}

// Close ends every subscription (cause ErrClosed), closes the connection and
// waits until no handler runs and no goroutine of the manager is left, with
// two exceptions: a handler that calls Close is not waited for (its
// goroutine ends when it returns), and handlers still running after
// Options.CloseTimeout are abandoned (they receive nothing more); Close then
// returns an error matching ErrCloseTimeout that says how many. Close is
// idempotent; later calls return nil.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	subs := make([]*Subscription, 0, len(m.locals))
	for _, s := range m.locals {
		subs = append(subs, s)
	}
	for _, ss := range m.servers {
		ss.stopTimer()
	}
	if m.limited != nil {
		m.limited.Stop()
	}
	m.locals = map[string]*Subscription{}
	m.servers = map[string]*serverSub{}
	m.wire = map[protocol.UID]*serverSub{}
	m.mu.Unlock()
	m.cancel()
	for _, s := range subs {
		s.unbind()
		s.finish(ErrClosed)
	}
	deadline := time.Now().Add(m.opts.CloseTimeout)
	err := m.conn.Close()
	m.bg.Wait()
	if n := m.appliers.wait(deadline, goid.Current()); n > 0 {
		m.log.Warn("handlers still running at close; abandoned", "handlers", n)
		err = errors.Join(err, fmt.Errorf("%w: %d handlers still running", ErrCloseTimeout, n))
	}
	return err
}

// IsConnected reports whether a session is up.
func (m *Manager) IsConnected() bool { return m.conn.State() == conn.StateConnected }

// State returns the connection state (for a subscription's, see
// Subscription.State).
func (m *Manager) State() conn.State { return m.conn.State() }

// WatchState returns a channel of connection state changes (see
// conn.Conn.WatchState); cfg.OnStateChange is the callback form.
func (m *Manager) WatchState(ctx context.Context) <-chan conn.StateChange {
	return m.conn.WatchState(ctx)
}

// Reconnect replaces the session at once; every subscription is restored on
// the new one exactly once, its init delivered with Resync set.
func (m *Manager) Reconnect(ctx context.Context) error { return m.conn.Reconnect(ctx) }

// Conn returns the underlying connection, for requests this package does not
// wrap. Do not send subscribe or unsubscribe frames on it.
func (m *Manager) Conn() *conn.Conn { return m.conn }

// SendMessage sends a custom frame, fire and forget: any value that
// marshals to a JSON object with a string "type". Anything else is refused
// with a *protocol.ConfigError that says what is wrong; subscribe and
// unsubscribe frames are refused with ErrRefused: the server would attach
// their events to no subscription, or drop every subscription for an
// unsubscribe without uid.
func (m *Manager) SendMessage(ctx context.Context, msg any) error {
	b, err := customFrame(msg)
	if err != nil {
		return err
	}
	return m.conn.Send(ctx, b)
}

// Request sends a custom frame with a fresh uid and returns the server's
// reply within ctx (see conn.Conn.Request); SendMessage is its fire and
// forget form. Subscribe and unsubscribe frames are refused with
// ErrRefused, as by SendMessage.
func (m *Manager) Request(ctx context.Context, msg any) (*protocol.Message, error) {
	b, err := customFrame(msg)
	if err != nil {
		return nil, err
	}
	return m.conn.Request(ctx, b)
}

// customFrame encodes a frame of SendMessage or Request, refusing
// subscribe and unsubscribe frames, which only Subscribe and Unsubscribe
// may send.
func customFrame(msg any) (json.RawMessage, error) {
	b, typ, err := protocol.EncodeClientFrame(msg)
	if err != nil {
		return nil, err
	}
	if typ == protocol.TypeSubscribe || typ == protocol.TypeUnsubscribe {
		return nil, ErrRefused
	}
	return b, nil
}

// Items performs an items request over the WebSocket (see conn.Conn.Items).
func (m *Manager) Items(ctx context.Context, msg protocol.ItemsMessage) (*protocol.Message, error) {
	return m.conn.Items(ctx, msg)
}

func (m *Manager) reportError(err error) {
	m.log.Warn("subscription error", "err", err)
	if m.onError != nil {
		m.onError(err)
	}
}

// tracker counts running goroutines by id, so that Close can wait for all
// of them but its caller's own.
type tracker struct {
	mu      sync.Mutex
	ids     map[uint64]struct{}
	changed chan struct{}
}

func (t *tracker) enter(id uint64) {
	t.mu.Lock()
	if t.ids == nil {
		t.ids = map[uint64]struct{}{}
	}
	t.ids[id] = struct{}{}
	t.mu.Unlock()
}

func (t *tracker) leave(id uint64) {
	t.mu.Lock()
	delete(t.ids, id)
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
	t.mu.Unlock()
}

// wait waits until no goroutine but except runs, or deadline; it returns
// how many are still running.
func (t *tracker) wait(deadline time.Time, except uint64) int {
	for {
		t.mu.Lock()
		n := len(t.ids)
		if _, ok := t.ids[except]; ok {
			n--
		}
		if n == 0 {
			t.mu.Unlock()
			return 0
		}
		if t.changed == nil {
			t.changed = make(chan struct{})
		}
		ch := t.changed
		t.mu.Unlock()
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-ch:
			timer.Stop()
		case <-timer.C:
			return n
		}
	}
}

// truncate shortens what a caller or the network chose (a uid) for an error
// string.
func truncate(s string) string { return protocol.Truncate(s, 128) }
