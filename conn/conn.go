package conn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/internal/goid"
	"github.com/e41af43e/directus-realtime/protocol"
	"golang.org/x/sync/semaphore"
)

// ConnectReason tells OnConnect why it runs.
type ConnectReason int

const (
	// ReasonConnected: the first session is up.
	ReasonConnected ConnectReason = iota + 1
	// ReasonReconnected: a new session replaced a lost one. The server
	// forgot every subscription of the old session.
	ReasonReconnected
	// ReasonReauthenticated: the session re-authenticated after
	// TOKEN_EXPIRED. Its subscriptions stayed registered but events between
	// expiry and re-auth were replaced by FORBIDDEN errors, so they are lost.
	ReasonReauthenticated
)

func (r ConnectReason) String() string {
	switch r {
	case ReasonConnected:
		return "connected"
	case ReasonReconnected:
		return "reconnected"
	case ReasonReauthenticated:
		return "reauthenticated"
	}
	return "unknown"
}

// Conn is one logical connection to the Directus realtime endpoint that stays
// up: it dials, authenticates, answers the server's heartbeat, detects a dead
// link with its own JSON pings, re-authenticates on TOKEN_EXPIRED (and before
// a known expiry), and replaces a lost session with a new one after a
// jittered backoff, without giving up unless Backoff.MaxAttempts says so.
//
// All methods are safe for concurrent use. Callbacks of Config run as
// documented there.
type Conn struct {
	cfg      Config
	wsURL    *url.URL
	log      *slog.Logger
	creds    *credentials
	upgrader *upgrader

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervisor has returned

	notify       callbacks
	watchers     stateWatchers
	pendingSlots *semaphore.Weighted
	uidSeq       atomic.Uint64
	rateLimits   atomic.Uint64 // REQUESTS_EXCEEDED frames received
	sessionSeq   atomic.Uint64
	reconnectCh  chan struct{} // wakes the supervisor for a Reconnect; coalesced
	// reconnectReqs counts Reconnect calls. A session records its value
	// when its dial starts: requests up to it are answered by that session.
	reconnectReqs atomic.Uint64

	firstOnce sync.Once
	first     chan error

	// supervisorGoid is the id of the supervisor's goroutine, which runs
	// OnConnect: a Close from there must not wait for itself.
	supervisorGoid atomic.Uint64

	// retryAt is when the supervisor will next try to connect (unix nanos;
	// 0 while connected), for Stats and status pages.
	retryAt atomic.Int64

	stats counters // see Stats

	// final is closed once StateClosed has been published, which ends
	// every WatchState channel after it delivered that change.
	final     chan struct{}
	finalOnce sync.Once

	mu        sync.Mutex
	state     State
	started   bool
	closeOnce sync.Once
	sess      *Session
	changed   chan struct{} // closed and replaced when sess or state changes
	lastErr   error
	// stateSince and transitions feed Stats (c.mu).
	stateSince  time.Time
	transitions map[transitionKey]uint64
}

// New checks cfg and returns an idle Conn; Connect starts it.
func New(cfg *Config) (*Conn, error) {
	if cfg == nil {
		return nil, &protocol.ConfigError{Field: "Config", Reason: "nil"}
	}
	u, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	d := cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		cfg:          d,
		wsURL:        u,
		log:          d.Logger.With("component", "directus-conn"),
		upgrader:     newUpgrader(&d, u),
		ctx:          ctx,
		cancel:       cancel,
		done:         make(chan struct{}),
		pendingSlots: semaphore.NewWeighted(int64(d.MaxPendingRequests)),
		reconnectCh:  make(chan struct{}, 1),
		first:        make(chan error, 1),
		final:        make(chan struct{}),
		changed:      make(chan struct{}),
		stateSince:   time.Now(),
	}
	c.startCallbacks()
	auth := d.Auth
	auth.TokenSource = c.guardedSource(auth.TokenSource)
	c.creds = newCredentials(auth)
	return c, nil
}

// Connect starts the Conn and returns once the first session is connected,
// authenticated and OnConnect has run. Network failures are retried with
// backoff until ctx is done; a rejection of the credentials or of the client
// (AUTH_FAILED, HTTP 401 or 403 at upgrade) is returned at once. When Connect
// returns an error the Conn is closed. After Connect succeeds the Conn keeps
// itself connected until Close.
func (c *Conn) Connect(ctx context.Context) error {
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.started {
		c.mu.Unlock()
		return errors.New("directus: Connect called twice")
	}
	c.started = true
	c.mu.Unlock()
	c.setState(StateConnecting, nil)
	go c.run()
	select {
	case err := <-c.first:
		if err != nil {
			_ = c.Close()
		}
		return err
	case <-ctx.Done():
		last := c.lastError()
		_ = c.Close()
		if last != nil {
			return errors.Join(ctx.Err(), last)
		}
		return ctx.Err()
	}
}

// Close ends the session with a normal close frame (waiting at most a
// second for the server's answer, then closing the socket) and stops every
// goroutine of the Conn before it returns, with two exceptions: a callback
// that calls Close (OnConnect, OnSubscription, OnStateChange, …) is not
// waited for, its goroutine ends when it returns; and user callbacks still
// running after Config.CloseTimeout are abandoned: Close then returns an
// error matching ErrCloseTimeout that names them, and they receive nothing
// more. Pending requests fail with ErrClosed. Close is idempotent; later
// calls return nil.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.cancel()
		c.mu.Lock()
		started := c.started
		c.mu.Unlock()
		t := time.NewTimer(c.cfg.CloseTimeout)
		defer t.Stop()
		deadline := t.C
		var stuck []string
		me := goid.Current()
		if started && me != c.supervisorGoid.Load() && !c.onReadLoop(me) {
			select {
			case <-c.done:
			case <-deadline:
				// The supervisor is inside a callback it runs itself (the
				// OnConnect hook, a TokenSource): it ends when that returns,
				// and delivers nothing more.
				stuck = append(stuck, "OnConnect or TokenSource")
				passed := make(chan time.Time)
				close(passed)
				deadline = passed
			}
		}
		c.setState(StateClosed, nil)
		c.finalOnce.Do(func() { close(c.final) })
		c.watchers.closeAll()
		if abandoned := append(stuck, c.stopCallbacks(deadline)...); len(abandoned) > 0 {
			c.log.Warn("callbacks still running at close; abandoned", "callbacks", abandoned)
			err = fmt.Errorf("%w: %s still running", ErrCloseTimeout, strings.Join(abandoned, ", "))
		}
	})
	return err
}

// onReadLoop reports whether goroutine id is the read loop of the current
// session, which runs OnSubscription.
func (c *Conn) onReadLoop(id uint64) bool {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	return s != nil && s.readGoid.Load() == id
}

// Reconnect replaces the current session with a new one at once, skipping
// any backoff wait, and returns when a session dialed after the call is
// connected. A session being dialed or authenticated when Reconnect is
// called does not count: it is replaced in turn.
func (c *Conn) Reconnect(ctx context.Context) error {
	if c.State() == StateIdle {
		return errors.New("directus: Reconnect before Connect")
	}
	req := c.reconnectReqs.Add(1)
	select {
	case c.reconnectCh <- struct{}{}:
	default: // one is pending already; it stands for this request too
	}
	for {
		c.mu.Lock()
		s, state, ch := c.sess, c.state, c.changed
		c.mu.Unlock()
		if s != nil && s.dialReq >= req && state == StateConnected {
			return nil
		}
		if state == StateClosed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}

// State returns the current state.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// WatchState returns a channel that receives every state change from now on
// and is closed when ctx is done or the Conn is closed. A receiver that falls
// more than 16 changes behind loses the oldest ones; the latest is always
// delivered.
func (c *Conn) WatchState(ctx context.Context) <-chan StateChange {
	return c.watchers.watch(ctx, c.final)
}

// Session returns the current session, or nil between sessions.
func (c *Conn) Session() *Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// Send queues one frame (see Session.Send) on the current session, waiting
// for a session while the Conn reconnects, as long as ctx allows.
func (c *Conn) Send(ctx context.Context, v any) error {
	s, err := c.waitSession(ctx)
	if err != nil {
		return err
	}
	return s.Send(ctx, v)
}

// Items performs an items request and returns its reply: Data holds the
// items (an array, an object or keys, per docs/PROTOCOL.md §6). A server error is
// returned as *ServerError; a request without reply in time as ErrTimeout.
// The UID of msg is replaced by a fresh one.
func (c *Conn) Items(ctx context.Context, msg protocol.ItemsMessage) (*protocol.Message, error) {
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	s, err := c.waitSession(ctx)
	if err != nil {
		return nil, c.timeoutErr(ctx, err)
	}
	return s.request(ctx, protocol.TypeItems, func(uid protocol.UID) any {
		msg.UID = uid
		return msg
	})
}

// Request sends a custom frame with a fresh uid and returns the server's
// reply, the frame that echoes that uid. msg is any value that marshals to
// a JSON object with a string "type"; its own "uid", if any, is replaced.
// A server error is returned as *ServerError; no reply in time as
// ErrTimeout (ctx's deadline, else the Config's RequestTimeout). Frames the
// server answers without echoing the uid never get a reply: use Send for
// them. An auth frame is refused with a *protocol.ConfigError: the Conn
// authenticates its sessions itself.
func (c *Conn) Request(ctx context.Context, msg any) (*protocol.Message, error) {
	b, typ, err := protocol.EncodeClientFrame(msg)
	if err != nil {
		return nil, err
	}
	if typ == protocol.TypeAuth {
		return nil, &protocol.ConfigError{Field: "message", Reason: "auth frames are the Conn's own: credentials go in Config.Auth"}
	}
	// The fields by name, so that the fresh uid replaces one msg may have
	// (a duplicate key would leave the server to pick one).
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, &protocol.ConfigError{Field: "message", Reason: err.Error()}
	}
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	s, err := c.waitSession(ctx)
	if err != nil {
		return nil, c.timeoutErr(ctx, err)
	}
	return s.request(ctx, "", func(uid protocol.UID) any {
		fields["uid"], _ = json.Marshal(uid)
		return fields
	})
}

// Ping sends {"type":"ping"} and returns the round-trip time of its pong.
func (c *Conn) Ping(ctx context.Context) (time.Duration, error) {
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	s, err := c.waitSession(ctx)
	if err != nil {
		return 0, c.timeoutErr(ctx, err)
	}
	start := time.Now()
	_, err = s.request(ctx, protocol.TypePong, func(uid protocol.UID) any { return protocol.PingMessage{UID: uid} })
	return time.Since(start), err
}

func (c *Conn) waitSession(ctx context.Context) (*Session, error) {
	for {
		c.mu.Lock()
		s, ch := c.sess, c.changed
		c.mu.Unlock()
		if s != nil && s.ctx.Err() == nil {
			return s, nil
		}
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (c *Conn) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.RequestTimeout)
}

// timeoutErr turns a deadline into ErrTimeout and leaves other errors as they are.
func (c *Conn) timeoutErr(ctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || (err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && errors.Is(err, ctx.Err())) {
		return ErrTimeout
	}
	return err
}

func (c *Conn) nextUID() protocol.UID {
	return protocol.UID("dr-" + strconv.FormatUint(c.uidSeq.Add(1), 10))
}

func (c *Conn) deliver(m *protocol.Message) {
	if f := c.cfg.OnSubscription; f != nil {
		c.guard("OnSubscription", func() { f(m) })
	}
}

func (c *Conn) reportError(err error) {
	if f := c.cfg.OnError; f != nil {
		c.notify.errs.post(func() { f(err) })
	}
}

func (c *Conn) setState(to State, err error) {
	c.mu.Lock()
	from := c.state
	if from == to || from == StateClosed {
		c.mu.Unlock()
		return
	}
	c.state = to
	c.stateSince = time.Now()
	if c.transitions == nil {
		c.transitions = make(map[transitionKey]uint64)
	}
	c.transitions[transitionKey{from, to, causeOf(err)}]++
	c.bumpLocked()
	c.mu.Unlock()
	sc := StateChange{From: from, To: to, Err: err}
	c.log.Debug("state", "from", from, "to", to, "err", err)
	c.watchers.publish(sc)
	if f := c.cfg.OnStateChange; f != nil {
		c.notify.state.post(func() { f(sc) })
	}
	if to == StateClosed {
		c.finalOnce.Do(func() { close(c.final) })
	}
}

func (c *Conn) lastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

func (c *Conn) setLastError(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

func (c *Conn) firstResult(err error) {
	c.firstOnce.Do(func() { c.first <- err })
}

// install makes s the current session and wakes those waiting for one.
func (c *Conn) install(s *Session) {
	c.mu.Lock()
	c.sess = s
	c.bumpLocked()
	c.mu.Unlock()
}

// uninstall forgets s; later waiters block until the next install.
func (c *Conn) uninstall(s *Session) {
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
		c.bumpLocked()
	}
	c.mu.Unlock()
}

// bumpLocked wakes everyone waiting on changed. c.mu must be held.
func (c *Conn) bumpLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}
