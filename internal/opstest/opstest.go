// Package opstest sets up what the tests of ops and of the metrics
// packages observe: an embedded Directus, a manager connected to it, a
// replica of posts registered in an ops.Source, with the ways to make
// every figure change (events, resyncs, errors, a stuck handler).
package opstest

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/ops"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// Post is a row of the seeded posts collection.
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
}

// Env is a running setup.
type Env struct {
	Srv   *directustest.Server
	M     *manager.Manager
	Posts *store.Collection[int64, Post]
	Src   *ops.Source
}

// Secret is a filter value the pages must never show.
const Secret = "hunter2-filter-secret"

// Start starts the server, connects a manager as the seeded reader, subscribes a replica of
// posts (registered as "posts") with a filter holding Secret, and
// reconciles it once. Everything is closed at the test's end.
func Start(t *testing.T, opts *ops.Options) *Env {
	t.Helper()
	srv := directustest.NewServer(nil)
	t.Cleanup(srv.Close)
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Email: directustest.ReaderEmail, Password: directustest.ReaderPassword},
		Backoff: conn.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Connect(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	// Filter exits off: the pages' and metrics' expected figures count this
	// replica's subscription alone, without the companion that follows
	// exits (store.Options.FilterExits, tested in store).
	posts, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }, FilterExits: store.FilterExitsOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = posts.Close() })
	if _, err := posts.Subscribe(Ctx(t), m, manager.SubscribeOptions{Collection: "posts", Persistent: true, UID: "posts-replica",
		Query: &protocol.Query{Filter: map[string]any{"_or": []any{
			map[string]any{"title": map[string]any{"_neq": Secret}},
			map[string]any{"status": map[string]any{"_in": []any{"published", "draft", Secret}}},
		}}}}); err != nil {
		t.Fatal(err)
	}
	if err := posts.Reconcile(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	src := ops.NewSource(m, opts)
	if _, err := src.AddReplica("posts", posts); err != nil {
		t.Fatal(err)
	}
	return &Env{Srv: srv, M: m, Posts: posts, Src: src}
}

// Ctx is a context bounded for one step of a test.
func Ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Create writes a post and waits until the replica holds it.
func (e *Env) Create(t *testing.T, title string) int64 {
	t.Helper()
	rows, err := e.Srv.Create("posts", map[string]any{"title": title, "status": "published"})
	if err != nil {
		t.Fatal(err)
	}
	id := toInt(rows[0]["id"])
	if err := e.Posts.WaitFor(Ctx(t), func() bool { _, ok := e.Posts.Get(id); return ok }); err != nil {
		t.Fatalf("the replica never got post %d: %v", id, err)
	}
	return id
}

// Blocker is a handler that blocks on every event until released.
type Blocker struct {
	Entered chan struct{} // receives once per event the handler starts
	release chan struct{}
	once    sync.Once
}

// NewBlocker returns a blocking handler.
func NewBlocker() *Blocker {
	return &Blocker{Entered: make(chan struct{}, 1024), release: make(chan struct{})}
}

// Handle blocks, except on the first init, until Release.
func (b *Blocker) Handle(ev handlers.Event) error {
	if ev.Kind == handlers.KindInit && !ev.Resync {
		return nil
	}
	b.Entered <- struct{}{}
	<-b.release
	return nil
}

// Release lets every event through from now on.
func (b *Blocker) Release() { b.once.Do(func() { close(b.release) }) }

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	}
	return -1
}

// Revoke takes the reader's permission to read posts away.
func (e *Env) Revoke(t *testing.T) {
	t.Helper()
	if err := e.Srv.SetUserPermissions(directustest.ReaderEmail, map[string]directustest.Permission{}); err != nil {
		t.Fatal(err)
	}
}

// NewPosts returns a replica of posts that is not subscribed.
func NewPosts(t *testing.T) *store.Collection[int64, Post] {
	t.Helper()
	c, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// InjectError sends an error frame of code for the replica's server
// subscription, as Directus sends FORBIDDEN in place of an event the
// identity may not read, and waits until the replica counted it.
func (e *Env) InjectError(t *testing.T, code string) {
	t.Helper()
	before := e.Posts.Stats().Errors
	for _, sub := range e.Srv.Subscriptions() {
		if sub.Collection != "posts" {
			continue
		}
		frame, _ := json.Marshal(map[string]any{"type": "subscribe", "status": "error",
			"error": map[string]any{"code": code, "message": "injected"}, "uid": sub.UID})
		e.Srv.Inject(frame)
	}
	// The pong comes after the injected frame: once it is read, the frame
	// was routed, and Flush waits until the replica handled it.
	if _, err := e.M.Conn().Ping(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := e.Posts.Subscription().Flush(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if e.Posts.Stats().Errors == before {
		t.Fatal("the error event never reached the replica")
	}
}

// Overflow makes a subscription named name overflow: its handler blocks
// on the second event while a third finds its queue of one full. It
// returns the subscription, overflowed, and the handler to release.
func (e *Env) Overflow(t *testing.T, name string) (*manager.Subscription, *Blocker) {
	t.Helper()
	b := NewBlocker()
	t.Cleanup(b.Release)
	sub, err := e.M.Subscribe(Ctx(t), manager.SubscribeOptions{Collection: "posts", Persistent: true, QueueSize: 1,
		Query: &protocol.Query{Fields: []string{"id", "title"}}}, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Src.AddSubscription(name, sub); err != nil {
		t.Fatal(err)
	}
	e.Create(t, "blocks the handler")
	<-b.Entered
	for i := 0; sub.Stats().Overflows == 0; i++ {
		if i > 100 {
			t.Fatal("no overflow after 100 events")
		}
		e.Create(t, "overflows the queue")
	}
	return sub, b
}

// Steps are the stages of a test that makes every metric change, shared by
// the Prometheus and the OpenTelemetry tests.
type Steps struct {
	T   *testing.T
	Env *Env
}

// Late registers an unsynced replica "late", to be subscribed by Subscribe.
func (s Steps) Late() *store.Collection[int64, Post] {
	late := NewPosts(s.T)
	if _, err := s.Env.Src.AddReplica("late", late); err != nil {
		s.T.Fatal(err)
	}
	return late
}

// Subscribe subscribes the late replica.
func (s Steps) Subscribe(late *store.Collection[int64, Post]) {
	if _, err := late.Subscribe(Ctx(s.T), s.Env.M, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		s.T.Fatal(err)
	}
}

// Activity writes (an event), injects two error events (FORBIDDEN and an
// unknown code), changes a row without an event and reconciles (which
// corrects it), and lets the token expire (a re-authentication and its
// resync).
func (s Steps) Activity() {
	t, e := s.T, s.Env
	id := e.Create(t, "an event")
	e.InjectError(t, "FORBIDDEN")
	e.InjectError(t, "SOMETHING_NEW")
	if _, err := e.Srv.Quiet().Update("posts", []any{id}, map[string]any{"title": "no event"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Posts.Reconcile(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if e.Posts.Status().LastReconcileChanges != 1 {
		t.Fatalf("the reconcile changed %d rows, want 1", e.Posts.Status().LastReconcileChanges)
	}
	e.resyncAfter(t, func() { e.Srv.ExpireTokens() })
	if e.M.Conn().Stats().Reauths == 0 {
		t.Fatal("no re-authentication after TOKEN_EXPIRED")
	}
}

// Outage stops the server until a connect attempt failed, calls during
// (a scrape), starts it again and waits for the replica's resync.
func (s Steps) Outage(during func() map[string]float64) (seen map[string]float64) {
	e := s.Env
	e.resyncAfter(s.T, func() {
		states := e.M.WatchState(Ctx(s.T))
		e.Srv.Stop()
		for sc := range states {
			if sc.To == conn.StateReconnecting {
				break
			}
		}
		for e.M.Conn().Stats().ConnectFailures == 0 {
			time.Sleep(2 * time.Millisecond) // polling a counter: no signal for a failed attempt
		}
		seen = during()
		e.Srv.Start()
	})
	return seen
}

// Overflow makes a subscription "slow" overflow.
func (s Steps) Overflow() { s.Env.Overflow(s.T, "slow") }

// Refuse revokes the reader's permission and reconciles: refused, the
// replica fails.
func (s Steps) Refuse() {
	s.Env.Revoke(s.T)
	if err := s.Env.Posts.Reconcile(Ctx(s.T)); err == nil {
		s.T.Fatal("the reconcile was not refused")
	}
}

// resyncAfter runs f and waits until the replica applied a resync init.
func (e *Env) resyncAfter(t *testing.T, f func()) {
	t.Helper()
	n := e.Posts.Stats().Resyncs
	f()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.Posts.WaitFor(ctx, func() bool { return e.Posts.Stats().Resyncs > n }); err != nil {
		t.Fatalf("no resync of the replica: %v", err)
	}
}

// Run takes the steps, reading the metrics with scrape (flattened to
// "prometheus_name{label=value,...}" → value, labels sorted by name,
// histograms as _count and _sum) before, during the outage, after and
// after the refusal, and checks that every metric the issue names
// changed.
func (s Steps) Run(scrape func() map[string]float64) {
	t := s.T
	t.Helper()
	late := s.Late()
	before := scrape()
	s.Activity()
	down := s.Outage(scrape)
	s.Subscribe(late)
	s.Overflow()
	after := scrape()
	s.Refuse()
	final := scrape()

	rep := "collection=posts,name=posts"
	sub := rep
	for _, k := range []string{
		"directus_connection_transitions_total{cause=abnormal_close,from=connected,to=reconnecting}",
		"directus_connection_transitions_total{cause=none,from=reconnecting,to=connected}",
		"directus_connection_sessions_total{}", "directus_connection_reconnects_total{}",
		"directus_connection_connect_failures_total{}", "directus_connection_reauths_total{}",
		"directus_connection_frames_received_total{}", "directus_connection_frames_sent_total{}",
		"directus_connection_received_bytes_total{}", "directus_connection_sent_bytes_total{}",
		"directus_events_handled_total{}", "directus_handler_latency_seconds_count{}", "directus_handler_latency_seconds_sum{}",
		"directus_subscription_events_total{" + sub + "}",
		"directus_subscription_resyncs_total{cause=reauth," + sub + "}",
		"directus_subscription_resyncs_total{cause=reconnect," + sub + "}",
		"directus_subscription_resyncs_total{cause=requested," + sub + "}",
		"directus_subscription_errors_total{" + sub + "}",
		"directus_subscription_error_events_total{code=FORBIDDEN," + sub + "}",
		"directus_subscription_error_events_total{code=other," + sub + "}",
		"directus_subscription_overflows_total{collection=posts,name=slow}",
		"directus_subscriptions{collection=posts,state=stalled}",
		"directus_replica_rows{" + rep + "}", "directus_replica_rows{collection=posts,name=late}",
		"directus_replica_synced{collection=posts,name=late}",
		"directus_replica_events_applied_total{" + rep + "}", "directus_replica_inits_applied_total{" + rep + "}",
		"directus_replica_resyncs_total{" + rep + "}", "directus_replica_error_events_total{" + rep + "}",
		"directus_replica_reconciles_total{" + rep + "}",
		"directus_replica_reconcile_duration_seconds_count{" + rep + "}", "directus_replica_reconcile_duration_seconds_sum{" + rep + "}",
		"directus_replica_reconcile_changed_rows_total{" + rep + "}",
		"directus_replica_last_reconcile_timestamp_seconds{" + rep + "}",
	} {
		if after[k] <= before[k] {
			t.Errorf("%s did not grow: %v before, %v after", k, before[k], after[k])
		}
	}
	for k, want := range map[string]float64{
		"directus_connection_up{}": 1, "directus_connection_state{state=connected}": 1, "directus_connection_state{state=reconnecting}": 0,
		"directus_replica_synced{" + rep + "}": 1, "directus_replica_synced{collection=,name=late}": 0, // not subscribed yet
		"directus_replica_failing{" + rep + "}": 0, "directus_subscriptions{collection=posts,state=active}": 1,
	} {
		if got, ok := before[k]; !ok || got != want {
			t.Errorf("before: %s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	for k, want := range map[string]float64{
		"directus_connection_up{}": 0, "directus_connection_state{state=connected}": 0, "directus_connection_state{state=reconnecting}": 1,
	} {
		if got := down[k]; got != want {
			t.Errorf("while down: %s = %v, want %v", k, got, want)
		}
	}
	if age, ok := after["directus_subscription_last_event_age_seconds{"+sub+"}"]; !ok || age < 0 || age > 60 {
		t.Errorf("last event age %v (present %v)", age, ok)
	}
	for _, k := range []string{"directus_replica_failing{" + rep + "}", "directus_replica_reconcile_failures_total{" + rep + "}"} {
		if final[k] != 1 {
			t.Errorf("after the refusal: %s = %v, want 1", k, final[k])
		}
	}
	if t.Failed() {
		keys := make([]string, 0, len(after))
		for k := range after {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Logf("scraped after:\n%s", strings.Join(keys, "\n"))
	}
}
