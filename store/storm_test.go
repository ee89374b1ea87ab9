package store_test

// Retry storms: a condition that cannot heal by itself must cost the server
// at most the backoff's attempts, leave the client idle, and end in a
// visible state reported once. Each scenario sent thousands of frames per
// second before the fix.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/hostile"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// stormBackoff is the retry backoff of the storm scenarios: 200 ms doubling,
// no jitter, so the budget over a window is exact: within 3 s at most 4
// reconciles brought forward (at 0.2, 0.6, 1.4 and 3.0 s).
var stormBackoff = conn.Backoff{Initial: 200 * time.Millisecond, Max: time.Minute, Jitter: -1}

// stormWindow is how long each storm scenario watches its client. The
// scenarios run in parallel (each has its own server), so the package waits
// one window rather than four; the CPU bound of each holds for all of them
// together.
const stormWindow = 3 * time.Second

// frameCounter counts what clients send to a directustest server.
type frameCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *frameCounter) on(fr directustest.Frame) {
	if !fr.Inbound {
		return
	}
	var head struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(fr.Data, &head)
	f.mu.Lock()
	f.n[head.Type]++
	f.mu.Unlock()
}

// reads returns the frames that make the server read the query again.
func (f *frameCounter) reads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n["subscribe"] + f.n["items"]
}

func stormSetup(t *testing.T, token string) (*directustest.Server, *manager.Manager, *frameCounter) {
	t.Helper()
	fc := &frameCounter{n: map[string]int{}}
	srv := directustest.NewServer(&directustest.Options{OnFrame: fc.on})
	t.Cleanup(srv.Close)
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: token}, PingInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	return srv, m, fc
}

// watchStorm counts the reads a client sends over the window and the CPU it
// uses, and fails the test beyond the backoff's budget.
func watchStorm(t *testing.T, fc *frameCounter, budget int) {
	t.Helper()
	before, cpu := fc.reads(), testutil.CPUTime()
	window := time.NewTimer(stormWindow)
	<-window.C
	n := fc.reads() - before
	used := testutil.CPUTime() - cpu
	t.Logf("%d reads and %v of CPU in %v", n, used, stormWindow)
	if n > budget {
		t.Fatalf("%d reads in %v, the backoff allows %d", n, stormWindow, budget)
	}
	if used > stormWindow/3 {
		t.Fatalf("%v of CPU in %v: the client is not idle", used, stormWindow)
	}
}

// TestStormItemDeleted: the item of a single-item replica is deleted with a
// numeric key (no event reaches the item subscription, docs/PROTOCOL.md
// §5.2). Every reconcile is refused; they come at the backoff's pace, the
// replica is empty and failing with ErrRefused, reported once.
func TestStormItemDeleted(t *testing.T) {
	t.Parallel() // each watches its own server for a 3 s window
	srv, m, fc := stormSetup(t, directustest.AdminToken)
	rows, _ := srv.Create("posts", map[string]any{"title": "doomed"})
	id := rows[0]["id"].(int64)
	var reported testutil.Errors
	c := newPosts(store.Options[int64, Post]{ReconcileInterval: time.Hour, Retry: stormBackoff, OnError: reported.On})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), m, manager.SubscribeOptions{Collection: "posts", Item: id, Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Delete("posts", id); err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx(t)); !errors.Is(err, manager.ErrResyncRefused) {
		t.Fatalf("Reconcile: %v", err)
	}
	watchStorm(t, fc, 4)
	st := c.Status()
	if !errors.Is(st.Err, store.ErrRefused) || !errors.Is(st.Err, protocol.ErrForbidden) || st.Rows != 0 {
		t.Fatalf("status %+v", st)
	}
	if n := reported.Count(store.ErrRefused); n != 1 {
		t.Fatalf("refusal reported %d times", n)
	}
	if s := c.Subscription().State(); s != manager.StateFailed {
		t.Fatalf("subscription %v", s)
	}
}

// TestStormPermissionRevoked: the reader's read permission on posts is
// revoked while its replica runs: every event becomes a FORBIDDEN error
// frame, every reconcile is refused. Reconciles come at the backoff's pace;
// when the permission comes back the replica recovers.
func TestStormPermissionRevoked(t *testing.T) {
	t.Parallel() // each watches its own server for a 3 s window
	srv, m, fc := stormSetup(t, directustest.ReaderToken)
	var reported testutil.Errors
	c := newPosts(store.Options[int64, Post]{ReconcileInterval: time.Hour, Retry: stormBackoff, OnError: reported.On})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetUserPermissions(directustest.ReaderEmail, nil); err != nil {
		t.Fatal(err)
	}
	// Events keep coming (as error frames) while the permission is gone.
	stop := make(chan struct{})
	writes := make(chan struct{})
	go func() {
		defer close(writes)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = srv.Create("posts", map[string]any{"title": "while revoked"})
			}
		}
	}()
	watchStorm(t, fc, 4)
	close(stop)
	<-writes
	if st := c.Status(); !errors.Is(st.Err, store.ErrRefused) || st.Rows != 0 {
		t.Fatalf("status %+v", st)
	}
	if n := reported.Count(store.ErrRefused); n != 1 {
		t.Fatalf("refusal reported %d times", n)
	}
	// The permission comes back: the next reconcile heals the replica.
	if err := srv.SetUserPermissions(directustest.ReaderEmail, map[string]directustest.Permission{"posts": {Read: true}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.Err != nil || st.Rows != len(srv.Items("posts")) {
		t.Fatalf("after the permission came back: %+v (server %d rows)", st, len(srv.Items("posts")))
	}
}

// TestStormUndecodableRows: a replica whose type cannot hold the
// collection's keys fails Subscribe at once; one whose rows stop decoding
// later (schema drift) keeps its rows, fails with ErrUndecodable, and
// re-reads at the backoff's pace.
func TestStormUndecodableRows(t *testing.T) {
	t.Parallel() // each watches its own server for a 3 s window
	srv, m, fc := stormSetup(t, directustest.AdminToken)
	if _, err := srv.Create("tags", map[string]any{"name": "a"}); err != nil {
		t.Fatal(err)
	}
	// tags are keyed by uuid: not an int64.
	wrong := newPosts(store.Options[int64, Post]{})
	defer wrong.Close()
	_, err := wrong.Subscribe(ctx(t), m, manager.SubscribeOptions{Collection: "tags", Persistent: true})
	if !errors.Is(err, store.ErrUndecodable) {
		t.Fatalf("Subscribe with a key type that cannot hold uuids: %v", err)
	}
	if len(m.ActiveSubscriptions()) != 0 {
		t.Fatal("the failed replica's subscription is left")
	}

	for i := 0; i < 3; i++ {
		if _, err := srv.Create("posts", map[string]any{"title": "t", "views": i}); err != nil {
			t.Fatal(err)
		}
	}
	c := newPosts(store.Options[int64, Post]{ReconcileInterval: time.Hour, Retry: stormBackoff})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		t.Fatal(err)
	}
	// views turns into a string on the server: no row decodes into Post.
	keys := []any{}
	for _, r := range srv.Items("posts") {
		keys = append(keys, r["id"])
	}
	if _, err := srv.Quiet().Update("posts", keys, map[string]any{"views": "many"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx(t)); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if st := c.Status(); !errors.Is(st.Err, store.ErrUndecodable) || st.Rows != 3 {
		t.Fatalf("status %+v", st)
	}
	watchStorm(t, fc, 4)
}

// TestStormErrorEventAfterEveryInit: a server that answers every read with
// the rows and then an error event for the subscription: the error events
// coalesce into one reconcile per backoff step.
func TestStormErrorEventAfterEveryInit(t *testing.T) {
	t.Parallel() // each watches its own server for a 3 s window
	var reads atomic.Int64
	srv := hostile.New(t, nil, func(ctx context.Context, hc *hostile.Conn) {
		if hc.AcceptAuth(ctx) != nil {
			return
		}
		sub, err := hc.ReadType(ctx, "subscribe")
		if err != nil {
			return
		}
		uid := hostile.StringUID(sub.UID)
		forbidden := `{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access this."},"uid":%s}`
		if hc.Sendf(ctx, `{"type":"subscription","event":"init","data":[{"id":1}],"uid":%s}`, uid) != nil ||
			hc.Sendf(ctx, forbidden, uid) != nil {
			return
		}
		for {
			f, err := hc.Read(ctx)
			if err != nil {
				return
			}
			switch f.Type {
			case "items":
				reads.Add(1)
				if hc.Sendf(ctx, `{"type":"items","data":[{"id":1}],"uid":%s}`, f.UID) != nil || hc.Sendf(ctx, forbidden, uid) != nil {
					return
				}
			case "ping":
				_ = hc.Sendf(ctx, `{"type":"pong","uid":%s}`, f.UID)
			}
		}
	})
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}, PingInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	c := newPosts(store.Options[int64, Post]{ReconcileInterval: time.Hour, Retry: stormBackoff})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		t.Fatal(err)
	}
	before, cpu := reads.Load(), testutil.CPUTime()
	window := time.NewTimer(stormWindow)
	<-window.C
	if n := reads.Load() - before; n > 5 || n < 2 {
		t.Fatalf("%d reads in %v for an error event after every init; the backoff allows 2 to 5", n, stormWindow)
	}
	if used := testutil.CPUTime() - cpu; used > stormWindow/3 {
		t.Fatalf("%v of CPU", used)
	}
	if st := c.Stats(); st.Errors == 0 || !strings.Contains(c.Subscription().Stats().LastError.Error(), "FORBIDDEN") {
		t.Fatalf("stats %+v", st)
	}
}
