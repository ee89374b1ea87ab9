package graphql

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/certerr"
	"github.com/e41af43e/directus-realtime/internal/goid"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Manager keeps subscriptions to a Directus /graphql endpoint alive on one
// connection. All its methods are safe for concurrent use.
type Manager struct {
	s     *settings
	creds *credentials

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	onState *notifier[conn.StateChange]
	onError *notifier[error]

	startOnce sync.Once
	superDone chan struct{}

	// expiredReported: ErrCredentialsExpired, which the supervisor and
	// every replica's snapshot read may meet, reaches OnError once.
	expiredReported atomic.Bool

	// wmu serialises the frames written for subscriptions (subscribe,
	// complete) so that a complete never overtakes its subscribe. Lock
	// order: wmu, then mu.
	wmu sync.Mutex

	mu       sync.Mutex
	state    conn.State
	stateErr error
	stateCh  chan struct{} // closed and replaced on every state change
	watchers map[chan conn.StateChange]struct{}
	sess     *session
	subs     map[string]*Subscription // by uid
	byWireID map[string]*Subscription
	nextWire uint64
	nextUID  uint64
	closed   bool
	workers  sync.WaitGroup

	// ours holds the goroutine ids of the handler and callback
	// goroutines, so that Close called from one of them does not wait
	// for itself.
	ours sync.Map
}

// own registers the calling goroutine as one that runs user code; the
// returned func unregisters it.
func (m *Manager) own() func() {
	id := goid.Current()
	m.ours.Store(id, struct{}{})
	return func() { m.ours.Delete(id) }
}

// New returns a Manager for cfg. It does not connect: Connect does.
func New(cfg *Config) (*Manager, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	m := &Manager{
		s:         s,
		creds:     &credentials{s: s},
		superDone: make(chan struct{}),
		stateCh:   make(chan struct{}),
		watchers:  map[chan conn.StateChange]struct{}{},
		subs:      map[string]*Subscription{},
		byWireID:  map[string]*Subscription{},
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.onError = newNotifier("OnError", cfg.OnError, nil, m.own)
	m.onState = newNotifier("OnStateChange", cfg.OnStateChange, func(p *protocol.PanicError) { m.reportError(p) }, m.own)
	return m, nil
}

// Connect starts the connection and returns once the first session is
// acknowledged (connection_ack), or with the error that ended the Manager
// (credentials refused on the first attempt, MaxAttempts reached, Close),
// or with ctx's error; the Manager keeps trying in the background in that
// last case until Close.
func (m *Manager) Connect(ctx context.Context) error {
	m.startOnce.Do(func() { go m.supervise() })
	for {
		m.mu.Lock()
		st, err, ch := m.state, m.stateErr, m.stateCh
		m.mu.Unlock()
		switch st {
		case conn.StateConnected:
			return nil
		case conn.StateClosed:
			if err == nil {
				err = protocol.ErrClosed
			}
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// State returns the connection's state.
func (m *Manager) State() conn.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// IsConnected reports whether a session is up.
func (m *Manager) IsConnected() bool { return m.State() == conn.StateConnected }

// WatchState returns a channel of the state changes from now on, closed
// when ctx is done or the Manager closed. A watcher that does not keep up
// misses changes (the channel holds 16); State is authoritative.
func (m *Manager) WatchState(ctx context.Context) <-chan conn.StateChange {
	ch := make(chan conn.StateChange, 16)
	m.mu.Lock()
	if m.closed && m.state == conn.StateClosed {
		m.mu.Unlock()
		close(ch)
		return ch
	}
	m.watchers[ch] = struct{}{}
	m.mu.Unlock()
	context.AfterFunc(ctx, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.watchers[ch]; ok {
			delete(m.watchers, ch)
			close(ch)
		}
	})
	return ch
}

func (m *Manager) setStateLocked(to conn.State, err error) {
	if m.state == to && to != conn.StateReconnecting {
		return
	}
	sc := conn.StateChange{From: m.state, To: to, Err: err}
	m.state, m.stateErr = to, err
	close(m.stateCh)
	m.stateCh = make(chan struct{})
	for ch := range m.watchers {
		select {
		case ch <- sc:
		default:
		}
		if to == conn.StateClosed {
			delete(m.watchers, ch)
			close(ch)
		}
	}
	m.onState.send(sc)
	m.s.log.Debug("graphql: state", "from", sc.From, "to", sc.To, "err", err)
}

func (m *Manager) reportError(err error) {
	if errors.Is(err, conn.ErrCredentialsExpired) && m.expiredReported.Swap(true) {
		return
	}
	if !m.onError.send(err) {
		m.s.log.Warn("graphql: OnError is behind; error dropped", "err", err)
	}
}

// supervise dials, restores the subscriptions, reads until the session
// ends and dials again after the backoff, until Close.
func (m *Manager) supervise() {
	defer close(m.superDone)
	attempt := 0
	connected := false
	var lastKind string
	m.mu.Lock()
	m.setStateLocked(conn.StateConnecting, nil)
	m.mu.Unlock()
	for {
		ss, err := dialSession(m.ctx, m.s, m.creds)
		if m.ctx.Err() != nil {
			if ss != nil {
				ss.close()
			}
			return
		}
		if err != nil {
			var ae *authError
			if errors.As(err, &ae) && !connected {
				m.finish(ae.err)
				return
			}
			if certerr.Is(err) && !connected {
				m.finish(err) // see internal/certerr
				return
			}
			if errors.Is(err, conn.ErrCredentialsExpired) {
				// No later attempt can authenticate: end, reported once,
				// rather than be refused for ever.
				m.finish(err)
				return
			}
			if kind := fmt.Sprintf("%T", errors.Unwrap(err)) + fmt.Sprintf("%T", err); kind != lastKind {
				lastKind = kind
				m.reportError(err)
			}
			m.s.log.Warn("graphql: connect failed", "attempt", attempt+1, "err", err)
			attempt++
			if max := m.s.Backoff.MaxAttempts; max > 0 && attempt >= max {
				m.finish(fmt.Errorf("directus graphql: gave up after %d attempts: %w", attempt, err))
				return
			}
			if !m.wait(m.s.Backoff.Delay(attempt - 1)) {
				return
			}
			m.mu.Lock()
			m.setStateLocked(conn.StateReconnecting, err)
			m.mu.Unlock()
			continue
		}
		connected, lastKind = true, ""
		start := time.Now()
		m.startSession(ss)
		err = ss.run(m.route)
		m.mu.Lock()
		m.sess = nil
		if m.ctx.Err() == nil {
			m.setStateLocked(conn.StateReconnecting, err)
		}
		m.mu.Unlock()
		if m.ctx.Err() != nil {
			return
		}
		m.s.log.Info("graphql: session lost", "err", err)
		if time.Since(start) >= resetAfter(m.s.Backoff) {
			attempt = 0
		}
		attempt++
		if !m.wait(m.s.Backoff.Delay(attempt - 1)) {
			return
		}
	}
}

func resetAfter(b conn.Backoff) time.Duration {
	if b.ResetAfter > 0 {
		return b.ResetAfter
	}
	return conn.DefaultBackoffResetAfter
}

func (m *Manager) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.ctx.Done():
		return false
	}
}

// startSession makes ss current and (re)sends every subscription on it
// before any of its frames is routed: run has not started yet.
func (m *Manager) startSession(ss *session) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	m.sess = ss
	var out []frame
	ready := make(chan struct{})
	for _, sub := range m.subs {
		out = append(out, m.attachLocked(sub, ss, ready))
	}
	m.mu.Unlock()
	m.writeFrames(ss, out)
	// The state turns Connected, and the snapshots of the replicas start,
	// with the pong of this ping: the server has then read every
	// subscribe (§13.5).
	_ = ss.ping(m.ctx, ready)
	m.workers.Add(1)
	go func() {
		defer m.workers.Done()
		<-ready
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.sess == ss && !isDone(ss.done) {
			m.setStateLocked(conn.StateConnected, nil)
		}
	}()
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// attachLocked gives sub a fresh wire id on ss and returns its subscribe
// frame; a replica's snapshot waits for ready. graphql-ws forbids reusing
// an id while it is active (4409).
func (m *Manager) attachLocked(sub *Subscription, ss *session, ready <-chan struct{}) frame {
	if sub.wireID != "" {
		delete(m.byWireID, sub.wireID)
	}
	m.nextWire++
	sub.wireID = strconv.FormatUint(m.nextWire, 10)
	sub.sentOn = ss
	m.byWireID[sub.wireID] = sub
	sub.attachedLocked(ready)
	return sub.subscribeFrame()
}

func (m *Manager) writeFrames(ss *session, out []frame) {
	for _, f := range out {
		ctx, cancel := context.WithTimeout(m.ctx, m.s.PingTimeout)
		err := ss.write(ctx, f)
		cancel()
		if err != nil {
			// The session is failing; the next one resends.
			m.s.log.Debug("graphql: write failed", "type", f.Type, "err", err)
			return
		}
	}
}

// route handles one frame of the current session (reader goroutine).
func (m *Manager) route(f frame) {
	m.mu.Lock()
	sub := m.byWireID[f.ID]
	m.mu.Unlock()
	if sub == nil {
		return // a subscription ended locally; its late frames are dropped
	}
	switch f.Type {
	case "next":
		sub.next(f.Payload)
	case "error":
		sub.refused(f.Payload)
	case "complete":
		m.end(sub, errCompletedByServer)
	}
}

var errCompletedByServer = errors.New("directus graphql: the server completed the subscription")

// finish closes the Manager with a cause that no retry can mend.
func (m *Manager) finish(err error) {
	m.s.log.Warn("graphql: closed", "err", err)
	m.reportError(err)
	m.mu.Lock()
	m.setStateLocked(conn.StateClosed, err)
	m.mu.Unlock()
}

// Close ends every subscription and the connection. It waits for the
// handlers to return, at most CloseTimeout, and for the callbacks; it
// returns an error naming what it abandoned. Called from a handler or a
// callback, it ends everything the same way but does not wait for those
// goroutines, its own among them.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	ss := m.sess
	subs := make([]*Subscription, 0, len(m.subs))
	for _, s := range m.subs {
		subs = append(subs, s)
	}
	m.mu.Unlock()
	m.startOnce.Do(func() { close(m.superDone) })
	m.cancel()
	if ss != nil {
		ss.close()
	}
	<-m.superDone
	for _, s := range subs {
		m.end(s, protocol.ErrClosed)
	}
	m.mu.Lock()
	if m.state != conn.StateClosed {
		m.setStateLocked(conn.StateClosed, nil)
	}
	m.mu.Unlock()
	if _, inside := m.ours.Load(goid.Current()); inside {
		m.onState.stop()
		m.onError.stop()
		return nil
	}
	done := make(chan struct{})
	go func() { m.workers.Wait(); close(done) }()
	deadline, cancel := context.WithTimeout(context.Background(), m.s.CloseTimeout)
	defer cancel()
	var err error
	select {
	case <-done:
	case <-deadline.Done():
		err = fmt.Errorf("directus graphql: Close abandoned handlers still running after %v", m.s.CloseTimeout)
	}
	if t := m.s.ownTransport; t != nil {
		t.CloseIdleConnections()
	}
	for _, n := range []<-chan struct{}{m.onState.stop(), m.onError.stop()} {
		select {
		case <-n:
		case <-deadline.Done():
			err = fmt.Errorf("directus graphql: Close abandoned callbacks still running after %v", m.s.CloseTimeout)
		}
	}
	return err
}

var errReconnectAsked = errors.New("directus graphql: Reconnect")

// Reconnect replaces the current session, as a drop would (the
// subscriptions are restored, replicas resynced), and returns once the new
// session is Connected, or with ctx's error, or protocol.ErrClosed.
func (m *Manager) Reconnect(ctx context.Context) error {
	m.mu.Lock()
	old := m.sess
	m.mu.Unlock()
	if old != nil {
		old.fail(errReconnectAsked)
		_ = old.ws.CloseNow()
	}
	for {
		m.mu.Lock()
		st, sess, ch, closed := m.state, m.sess, m.stateCh, m.closed
		m.mu.Unlock()
		if closed || st == conn.StateClosed {
			return protocol.ErrClosed
		}
		if st == conn.StateConnected && sess != nil && sess != old {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
