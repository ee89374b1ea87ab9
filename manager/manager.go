package manager

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Defaults of Options.
const (
	// DefaultQueueSize is how many events a subscription may have waiting
	// for its handler. Beyond it the queue is emptied and the subscription
	// resynced: a slow handler costs a fresh init, never silent loss.
	DefaultQueueSize = 4096

	// DefaultInitTimeout is how long a subscribe may wait for its init
	// before it is sent again. Directus answers some failures with nothing
	// at all, and drops frames over its rate limit.
	DefaultInitTimeout = 30 * time.Second

	// DefaultOverflowWait is how long the connection's read loop waits for a
	// handler to make room in its full queue before it gives up on that
	// subscription's queue (discards it and resyncs). A handler that keeps up
	// on average rides out bursts with backpressure instead of resyncs.
	DefaultOverflowWait = 100 * time.Millisecond
)

// Options tune a Manager; nil or zero fields mean the defaults.
type Options struct {
	// QueueSize bounds each subscription's queue (0 means
	// DefaultQueueSize). A queue's memory stays of the order of QueueSize
	// events however long a burst lasts, and is given back when the
	// subscription goes idle.
	QueueSize int
	// InitTimeout bounds the wait for a subscribe's init before the
	// subscribe is sent again (0 means DefaultInitTimeout).
	InitTimeout time.Duration
	// OverflowWait bounds how long the read loop waits for room in a full
	// queue (0 means DefaultOverflowWait; negative means no wait: a full
	// queue overflows at once and nothing ever waits for a handler).
	OverflowWait time.Duration
}

// Manager keeps a set of subscriptions alive on one connection. See the
// package documentation for its guarantees. All methods are safe for
// concurrent use.
type Manager struct {
	conn    *conn.Conn
	opts    Options
	log     *slog.Logger
	onError func(error)

	mu        sync.Mutex
	closed    bool
	sess      *conn.Session               // the session the registry was last restored on
	locals    map[string]*Subscription    // by local uid
	servers   map[string]*serverSub       // by subscription spec
	wire      map[protocol.UID]*serverSub // by the uid of the current subscribe frame
	wireSeq   uint64
	autoSeq   uint64
	createSeq uint64

	drains sync.WaitGroup // delivery goroutines
}

// New builds a Manager on a connection configured by cfg. The manager adds
// its own OnSubscription and OnConnect to cfg (any set there still run,
// after the manager's); cfg.OnError also receives handler errors, from the
// subscriptions' delivery goroutines. Nothing is dialed before Connect.
func New(cfg *conn.Config, opts *Options) (*Manager, error) {
	if cfg == nil {
		return nil, &protocol.ConfigError{Field: "Config", Reason: "nil"}
	}
	m := &Manager{
		locals:  make(map[string]*Subscription),
		servers: make(map[string]*serverSub),
		wire:    make(map[protocol.UID]*serverSub),
		onError: cfg.OnError,
	}
	if opts != nil {
		m.opts = *opts
	}
	if m.opts.QueueSize <= 0 {
		m.opts.QueueSize = DefaultQueueSize
	}
	if m.opts.InitTimeout <= 0 {
		m.opts.InitTimeout = DefaultInitTimeout
	}
	if m.opts.OverflowWait == 0 {
		m.opts.OverflowWait = DefaultOverflowWait
	}
	m.log = slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		m.log = cfg.Logger.With("component", "directus-manager")
	}
	c := *cfg
	userSub, userConnect := cfg.OnSubscription, cfg.OnConnect
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
	cn, err := conn.New(&c)
	if err != nil {
		return nil, err
	}
	m.conn = cn
	return m, nil
}

// Connect connects (see conn.Conn.Connect). Subscriptions made before
// Connect are sent once the first session is up.
func (m *Manager) Connect(ctx context.Context) error {
	return m.conn.Connect(ctx)
}

// Close ends every subscription (cause ErrClosed), closes the connection and
// waits until no handler runs and no goroutine of the manager is left.
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
	m.locals = map[string]*Subscription{}
	m.servers = map[string]*serverSub{}
	m.wire = map[protocol.UID]*serverSub{}
	m.mu.Unlock()
	for _, s := range subs {
		s.unbind()
		s.finish(ErrClosed)
	}
	err := m.conn.Close()
	m.drains.Wait()
	return err
}

// IsConnected reports whether a session is up.
func (m *Manager) IsConnected() bool { return m.conn.State() == conn.StateConnected }

// State returns the connection state.
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

// SendMessage sends a custom frame: any value that marshals to a JSON object
// with a "type". Subscribe and unsubscribe frames are refused with
// ErrRefused: the server would attach their events to no subscription, or
// drop every subscription for an unsubscribe without uid.
func (m *Manager) SendMessage(ctx context.Context, msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	if head.Type == protocol.TypeSubscribe || head.Type == protocol.TypeUnsubscribe {
		return ErrRefused
	}
	return m.conn.Send(ctx, json.RawMessage(b))
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
