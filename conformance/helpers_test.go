package conformance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Timeouts suit a real Directus on a loaded two-core machine: an event
// takes about 10 ms there, a REST write 10-25 ms, a restart 5-45 s. They
// bound waits for signals; nothing waits for them to pass.
const (
	eventTimeout    = 30 * time.Second  // something that normally takes milliseconds
	scenarioTimeout = 3 * time.Minute   // one scenario, restarts included
	restartTimeout  = 150 * time.Second // a real server's stop and start
)

// scenarioCtx bounds a scenario.
func scenarioCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), scenarioTimeout)
	t.Cleanup(cancel)
	return ctx
}

// within bounds one wait.
func within(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

func logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CONFORMANCE_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// client is a manager with what a test observes of it.
type client struct {
	*manager.Manager
	wire *Wire

	mu       sync.Mutex
	errs     []error
	connects []conn.ConnectReason
	changed  chan struct{} // closed and replaced when errs or connects grow
}

type clientOpts struct {
	// URL overrides the server's URL (a fault proxy in front of it).
	URL string
	// PingInterval and PingTimeout of the conn; 0 means the defaults.
	PingInterval, PingTimeout time.Duration
	// OnRefreshToken, when set, receives rotated refresh tokens.
	OnRefreshToken func(string)
	// QueueSize of the manager; 0 means the default.
	QueueSize int
	// SendRate and SendBurst of the conn; 0 means no pacing.
	SendRate  float64
	SendBurst int
	// MaxInFlight of the manager; 0 means the default.
	MaxInFlight int
}

// newClient builds a manager for srv with auth; the auth mode defaults to
// the server's. It is not connected yet and is closed when the test ends.
func newClient(t testing.TB, srv Server, auth conn.Auth, o clientOpts) *client {
	t.Helper()
	if auth.Mode == "" {
		auth.Mode = srv.Settings().Mode
	}
	c := &client{wire: newWire(), changed: make(chan struct{})}
	u := o.URL
	if u == "" {
		u = srv.URL()
	}
	cfg := &conn.Config{
		URL:          u,
		Auth:         auth,
		HTTPClient:   c.wire.HTTPClient(),
		PingInterval: o.PingInterval,
		PingTimeout:  o.PingTimeout,
		SendRate:     o.SendRate,
		SendBurst:    o.SendBurst,
		// Reconnect soon after a restart: the default backoff grows to 30 s.
		Backoff:        conn.Backoff{Initial: 200 * time.Millisecond, Max: 2 * time.Second},
		Logger:         logger(t),
		OnRefreshToken: o.OnRefreshToken,
		OnError: func(err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.signalLocked()
			c.mu.Unlock()
		},
		OnConnect: func(_ *conn.Session, r conn.ConnectReason) {
			c.mu.Lock()
			c.connects = append(c.connects, r)
			c.signalLocked()
			c.mu.Unlock()
		},
	}
	m, err := manager.New(cfg, &manager.Options{QueueSize: o.QueueSize, MaxInFlight: o.MaxInFlight})
	if err != nil {
		t.Fatal(err)
	}
	c.Manager = m
	t.Cleanup(func() {
		_ = m.Close()
		c.wire.Close()
		c.wire.dump(t)
	})
	return c
}

// connect builds a client and connects it.
func connect(ctx context.Context, t testing.TB, srv Server, auth conn.Auth, o clientOpts) *client {
	t.Helper()
	c := newClient(t, srv, auth, o)
	cctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	if err := c.Connect(cctx); err != nil {
		t.Fatalf("connect to %s (%s): %v", srv.URL(), auth, err)
	}
	return c
}

func (c *client) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Errors returns the errors OnError received.
func (c *client) Errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// Connects returns the reasons OnConnect ran with, in order.
func (c *client) Connects() []conn.ConnectReason {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.connects)
}

// waitFor waits until cond holds; it is evaluated now and after every
// OnError and OnConnect.
func (c *client) waitFor(ctx context.Context, cond func(errs []error, connects []conn.ConnectReason) bool) error {
	for {
		c.mu.Lock()
		ok, ch := cond(c.errs, c.connects), c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// recorder is a handler that queues every event it receives.
type recorder struct{ ch chan handlers.Event }

func newRecorder() *recorder { return &recorder{ch: make(chan handlers.Event, 4096)} }

func (r *recorder) Handle(ev handlers.Event) error {
	r.ch <- ev
	return nil
}

// next returns the next event.
func (r *recorder) next(ctx context.Context, t testing.TB) handlers.Event {
	t.Helper()
	ctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	select {
	case ev := <-r.ch:
		return ev
	case <-ctx.Done():
		t.Fatalf("no event within %v", eventTimeout)
		return handlers.Event{}
	}
}

// expect returns the next event and fails unless it is of kind k.
func (r *recorder) expect(ctx context.Context, t testing.TB, k handlers.Kind) handlers.Event {
	t.Helper()
	ev := r.next(ctx, t)
	if ev.Kind != k {
		t.Fatalf("got a %s event (data %s, err %v), want %s", ev.Kind, ev.Data, ev.Err, k)
	}
	return ev
}

// pending returns the number of events received and not consumed.
func (r *recorder) pending() int { return len(r.ch) }

// newPosts returns a replica of posts, closed when the test ends.
func newPosts(t testing.TB) *store.Collection[int64, Post] {
	c := testutil.Must(store.New(store.Options[int64, Post]{Key: postKey, Logger: logger(t)}))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newTags returns a replica of tags, closed when the test ends.
func newTags(t testing.TB) *store.Collection[string, Tag] {
	c := testutil.Must(store.New(store.Options[string, Tag]{Key: tagKey, Logger: logger(t)}))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// subscribe subscribes a replica and fails the test on error. Unless
// opts.Persistent is set, the subscription lasts as long as ctx.
func subscribe[K comparable, T any](ctx context.Context, t testing.TB, c *store.Collection[K, T], m *client, opts manager.SubscribeOptions) *manager.Subscription {
	t.Helper()
	sub, err := c.Subscribe(ctx, m.Manager, opts)
	if err != nil {
		t.Fatalf("subscribe %s: %v", opts.Collection, err)
	}
	return sub
}

// diff describes how a replica differs from the server's rows ("" when
// they are equal).
func diff[K comparable, T comparable](replica map[K]T, server []T, key func(T) K) string {
	want := make(map[K]T, len(server))
	for _, r := range server {
		want[key(r)] = r
	}
	var out []string
	for k, w := range want {
		got, ok := replica[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("missing %v: %+v", k, w))
		case got != w:
			out = append(out, fmt.Sprintf("stale %v: %+v, server has %+v", k, got, w))
		}
	}
	for k, got := range replica {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("extra %v: %+v", k, got))
		}
	}
	slices.Sort(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("… %d differences in all", len(out)))
	}
	return strings.Join(out, "; ")
}

// converge waits until the replica equals rows, which the caller read from
// the server after the last write; it reports the difference left when
// eventTimeout passed first.
func converge[K comparable, T comparable](ctx context.Context, c *store.Collection[K, T], rows []T, key func(T) K) string {
	ctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	var last string
	err := c.WaitFor(ctx, func() bool {
		last = diff(c.Snapshot(), rows, key)
		return last == ""
	})
	if err == nil {
		return ""
	}
	return last
}

// mustEqual fails unless the replica equals rows right now.
func mustEqual[K comparable, T comparable](t testing.TB, what string, c *store.Collection[K, T], rows []T, key func(T) K) {
	t.Helper()
	if d := diff(c.Snapshot(), rows, key); d != "" {
		t.Fatalf("%s differs from the server (%d rows, replica %d): %s", what, len(rows), c.Len(), d)
	}
}

// reconcile runs a reconcile and fails the test on error.
func reconcile[K comparable, T any](ctx context.Context, t testing.TB, c *store.Collection[K, T]) {
	t.Helper()
	ctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	if err := c.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
}

// must fails the test on err.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// postsByID indexes posts.
func postsByID(ps []Post) map[int64]Post {
	m := make(map[int64]Post, len(ps))
	for _, p := range ps {
		m[p.ID] = p
	}
	return m
}

// wireUID returns the uid of the last subscribe frame the client sent that
// match accepts.
func (c *client) wireUID(t testing.TB, match func(WireFrame) bool) string {
	t.Helper()
	frames := c.wire.Frames(0)
	for i := len(frames) - 1; i >= 0; i-- {
		if f := frames[i]; f.Out && f.Type == protocol.TypeSubscribe && match(f) {
			return f.UID
		}
	}
	t.Fatal("no such subscribe frame on the wire")
	return ""
}

// checkWire checks what the manager sent: every unsubscribe carries a uid
// (one without would drop every subscription of the connection), and no
// subscribe reuses a uid of its connection (Directus would silently replace
// the subscription, U2). It returns the number of subscribe and
// unsubscribe frames.
func (c *client) checkWire(t testing.TB) (subscribes, unsubscribes int) {
	t.Helper()
	seen := map[int]map[string]bool{}
	for _, f := range c.wire.Frames(0) {
		if !f.Out {
			continue
		}
		switch f.Type {
		case protocol.TypeUnsubscribe:
			unsubscribes++
			if !f.HasUID || f.UID == "" {
				t.Errorf("the manager sent an unsubscribe without uid: %s", f.Data)
			}
		case protocol.TypeSubscribe:
			subscribes++
			if !f.HasUID || f.UID == "" {
				t.Errorf("the manager sent a subscribe without uid: %s", f.Data)
			}
			if seen[f.Conn] == nil {
				seen[f.Conn] = map[string]bool{}
			}
			if seen[f.Conn][f.UID] {
				t.Errorf("the manager reused subscription uid %q on one connection: %s", f.UID, f.Data)
			}
			seen[f.Conn][f.UID] = true
		}
	}
	return subscribes, unsubscribes
}

// allActive fails unless every subscription of c is active.
func allActive(t testing.TB, c *client) {
	t.Helper()
	for _, info := range c.ActiveSubscriptions() {
		if info.State != manager.StateActive {
			t.Errorf("subscription %s (%s) is %s, want active", info.UID, info.Collection, info.State)
		}
	}
}

// isForbidden reports a FORBIDDEN server error.
func isForbidden(err error) bool { return errors.Is(err, protocol.ErrForbidden) }
