package store_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// changeLog records a listener's changes and signals each one.
type changeLog struct {
	mu  sync.Mutex
	chs []store.Change[int64, Post]
	sig chan struct{}
}

func newChangeLog() *changeLog { return &changeLog{sig: make(chan struct{}, 1)} }

func (l *changeLog) OnChange(ch store.Change[int64, Post]) {
	l.mu.Lock()
	l.chs = append(l.chs, ch)
	l.mu.Unlock()
	select {
	case l.sig <- struct{}{}:
	default:
	}
}

// waitFor waits until a recorded change satisfies ok, and returns it.
func (l *changeLog) waitFor(ctx context.Context, ok func(store.Change[int64, Post]) bool) (store.Change[int64, Post], error) {
	for {
		l.mu.Lock()
		for _, ch := range l.chs {
			if ok(ch) {
				l.mu.Unlock()
				return ch, nil
			}
		}
		l.mu.Unlock()
		select {
		case <-l.sig:
		case <-ctx.Done():
			return store.Change[int64, Post]{}, ctx.Err()
		}
	}
}

func (l *changeLog) all() []store.Change[int64, Post] {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]store.Change[int64, Post](nil), l.chs...)
}

func publishedOnly() *protocol.Query {
	return &protocol.Query{Filter: map[string]any{"status": map[string]any{"_eq": "published"}}}
}

// A row updated out of the filter leaves the replica at that update, with
// no reconcile: listeners hear a delete marked FilterExit.
func TestFilterExitWithinOneEvent(t *testing.T) {
	e := setup(t)
	var keys []int64
	for _, st := range []string{"published", "published", "draft"} {
		rows := testutil.Must(e.srv.Quiet().Create("posts", map[string]any{"title": "x", "status": st, "views": 1}))
		keys = append(keys, testutil.Must(jsonInt(rows[0]["id"])))
	}
	c := newPosts(store.Options[int64, Post]{}) // no reconcile interval
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: publishedOnly()}); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); !st.FilterExits || st.FilterExitsReason != "" {
		t.Fatalf("status %+v", st)
	}
	log := newChangeLog()
	defer c.AddListener(log)()

	// An update that keeps the row in the filter changes it; nothing leaves.
	testutil.Must(e.srv.Update("posts", []any{keys[1]}, map[string]any{"title": "still in"}))
	if _, err := log.waitFor(ctx(t), func(ch store.Change[int64, Post]) bool { return ch.Op == store.OpUpdate && ch.Key == keys[1] }); err != nil {
		t.Fatal(err)
	}
	testutil.Must(e.srv.Update("posts", []any{keys[0]}, map[string]any{"status": "draft"}))
	del, err := log.waitFor(ctx(t), func(ch store.Change[int64, Post]) bool { return ch.Op == store.OpDelete })
	if err != nil {
		t.Fatal(err)
	}
	if del.Key != keys[0] || !del.FilterExit || del.Old.Status != "published" || del.Resync {
		t.Fatalf("delete %+v", del)
	}
	if _, held := c.Get(keys[0]); held {
		t.Fatal("the row that left the filter is still held")
	}
	if _, held := c.Get(keys[1]); !held {
		t.Fatal("the row that stayed in the filter is gone")
	}
	// Back into the filter: the filtered subscription's own update adds it.
	testutil.Must(e.srv.Update("posts", []any{keys[0]}, map[string]any{"status": "published"}))
	if _, err := log.waitFor(ctx(t), func(ch store.Change[int64, Post]) bool {
		return ch.Op == store.OpAdd && ch.Key == keys[0] && !ch.Initial
	}); err != nil {
		t.Fatal(err)
	}
	// A row outside the filter updated, still outside: nothing happens.
	testutil.Must(e.srv.Update("posts", []any{keys[2]}, map[string]any{"views": 5}))
	testutil.Must(e.srv.Update("posts", []any{keys[1]}, map[string]any{"title": "marker"}))
	if _, err := log.waitFor(ctx(t), func(ch store.Change[int64, Post]) bool { return ch.New.Title == "marker" }); err != nil {
		t.Fatal(err)
	}
	// Every update reached the companion (five), one removed a row.
	if err := c.WaitFor(ctx(t), func() bool { return c.Stats().ExitChecks >= 5 }); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.FilterExits != 1 || st.Reconciles != 0 || st.ExitChecks != 5 {
		t.Fatalf("stats %+v", st)
	}
	want := serverRows(e.srv, func(r map[string]any) bool { return r["status"] == "published" })
	if got := c.Snapshot(); len(got) != len(want) {
		t.Fatalf("replica %v, server %v", got, want)
	}
	for _, ch := range log.all() {
		if ch.FilterExit && ch.Key != keys[0] {
			t.Fatalf("unexpected filter exit %+v", ch)
		}
	}
}

func jsonInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case float64:
		return int64(x), nil
	case int:
		return int64(x), nil
	}
	return 0, errors.New("not an integer")
}

// Two replicas whose filters read the same fields share one companion
// server subscription; the companion ends with its replica.
func TestFilterExitsShareCompanion(t *testing.T) {
	e := setup(t)
	a := newPosts(store.Options[int64, Post]{})
	defer a.Close()
	b := newPosts(store.Options[int64, Post]{})
	defer b.Close()
	q2 := &protocol.Query{Filter: map[string]any{"status": map[string]any{"_in": []string{"draft", "archived"}}}}
	if _, err := a.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: publishedOnly()}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: q2}); err != nil {
		t.Fatal(err)
	}
	// Two filtered subscriptions and one shared companion, reading only
	// the key and the filter's field.
	subs := e.srv.Subscriptions()
	var companions []string
	for _, s := range subs {
		if s.Event == "update" {
			companions = append(companions, string(s.Query))
		}
	}
	if len(subs) != 3 || len(companions) != 1 || companions[0] != `{"fields":["id","status"]}` {
		t.Fatalf("server subscriptions %+v", subs)
	}
	if n := len(e.m.ActiveSubscriptions()); n != 4 {
		t.Fatalf("%d local subscriptions, want 4", n)
	}
	_ = a.Close()
	if n := len(e.m.ActiveSubscriptions()); n != 2 {
		t.Fatalf("%d local subscriptions after one Close, want 2", n)
	}
	_ = b.Close()
	if n := len(e.m.ActiveSubscriptions()); n != 0 {
		t.Fatalf("%d local subscriptions after Close", n)
	}
}

// A filter that cannot be evaluated locally leaves exits to reconcile and
// says so once; FilterExitsRequired refuses it; FilterExitsOff says why.
func TestFilterExitsNotLocal(t *testing.T) {
	e := setup(t)
	var buf testutil.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	variable := &protocol.Query{Filter: map[string]any{"status": map[string]any{"_eq": "$CURRENT_USER"}}}

	c := newPosts(store.Options[int64, Post]{Logger: logger, ReconcileInterval: time.Hour})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: variable}); err != nil {
		t.Fatal(err)
	}
	st := c.Status()
	if st.FilterExits || !strings.Contains(st.FilterExitsReason, "$CURRENT_USER") {
		t.Fatalf("status %+v", st)
	}
	if n := strings.Count(buf.String(), "wait for the next reconcile"); n != 1 {
		t.Fatalf("said %d times:\n%s", n, buf.String())
	}

	req := newPosts(store.Options[int64, Post]{FilterExits: store.FilterExitsRequired})
	defer req.Close()
	var qe *store.QueryError
	if _, err := req.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Query: variable}); !errors.As(err, &qe) {
		t.Fatalf("required: %v", err)
	}

	off := newPosts(store.Options[int64, Post]{FilterExits: store.FilterExitsOff})
	defer off.Close()
	base := len(e.m.ActiveSubscriptions())
	if _, err := off.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: publishedOnly()}); err != nil {
		t.Fatal(err)
	}
	if st := off.Status(); st.FilterExits || !strings.Contains(st.FilterExitsReason, "FilterExitsOff") {
		t.Fatalf("off: %+v", st)
	}
	if got := len(e.m.ActiveSubscriptions()) - base; got != 1 {
		t.Fatalf("off: %d server subscriptions, want 1", got)
	}

	if _, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }, FilterExits: 7}); !errors.As(err, new(*protocol.ConfigError)) {
		t.Fatalf("bad mode: %v", err)
	}
}

// A filter exit received before the update (or the init) that showed the
// row in the filter again is stale: the two subscriptions' events are
// handled by two goroutines, so it may be applied after them.
func TestFilterExitOrdering(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	w := store.ExitWatch(c, map[string]any{"status": map[string]any{"_eq": "published"}})
	t0 := time.Now()
	at := func(d int, kind handlers.Kind, data string) handlers.Event {
		e := ev(kind, data)
		e.Received = t0.Add(time.Duration(d) * time.Millisecond)
		return e
	}
	apply(t, c, at(1, handlers.KindInit, `[{"id":1,"status":"published"},{"id":2,"status":"published"},{"id":3,"status":"published"}]`))
	// Row 1 left at t=5 and came back at t=6, the re-entry applied first.
	apply(t, c, at(6, handlers.KindUpdate, `[{"id":1,"status":"published","title":"back"}]`))
	apply(t, w, at(5, handlers.KindUpdate, `[{"id":1,"status":"draft"}]`))
	if _, ok := c.Get(1); !ok {
		t.Fatal("a stale exit removed a row that came back")
	}
	// Row 2's exit is older than the init.
	apply(t, w, at(0, handlers.KindUpdate, `[{"id":2,"status":"draft"}]`))
	if _, ok := c.Get(2); !ok {
		t.Fatal("an exit older than the init removed a row")
	}
	// Row 3 left after everything it was seen in; row 2 with an Unknown
	// answer (no status field) stays.
	apply(t, w, at(7, handlers.KindUpdate, `[{"id":3,"status":"draft"},{"id":2}]`))
	if _, ok := c.Get(3); ok {
		t.Fatal("row 3 left the filter and is still held")
	}
	if _, ok := c.Get(2); !ok {
		t.Fatal("an exit the filter could not decide removed a row")
	}
	// The other way round: row 4 came in at t=9 and left at t=10, and the
	// exit is handled before the update that brought it in. That update
	// shows the row before it left: it is not applied, nor is an init read
	// before the exit; an update after it is.
	apply(t, w, at(10, handlers.KindUpdate, `[{"id":4,"status":"draft"}]`))
	apply(t, c, at(9, handlers.KindUpdate, `[{"id":4,"status":"published","title":"in"}]`))
	if _, ok := c.Get(4); ok {
		t.Fatal("an update older than the row's exit brought it back")
	}
	apply(t, c, at(11, handlers.KindUpdate, `[{"id":4,"status":"published","title":"back"}]`))
	if p, ok := c.Get(4); !ok || p.Title != "back" {
		t.Fatalf("an update after the exit was not applied: %+v %v", p, ok)
	}
	// A key of the wrong type is reported, not fatal.
	if err := w.Handle(at(12, handlers.KindUpdate, `[{"id":"x","status":"draft"}]`)); err == nil {
		t.Fatal("a bad key was not reported")
	}
	if st := c.Stats(); st.FilterExits != 1 || st.BadRows != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A companion whose queue overflows lost filter exits: the replica
// reconciles, though it has no reconcile interval.
func TestFilterExitsCompanionOverflow(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	var keys []any
	for range 6 {
		rows := testutil.Must(srv.Quiet().Create("posts", map[string]any{"title": "x", "status": "published"}))
		keys = append(keys, rows[0]["id"])
	}
	stalls := make(chan string, 16)
	m := testutil.Must(manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, PingInterval: -1,
		OnError: func(err error) {
			var se *manager.StallError
			if errors.As(err, &se) {
				stalls <- se.UID
			}
		}}, &manager.Options{OverflowWait: time.Millisecond}))
	defer m.Close()
	if err := m.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), m, manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: publishedOnly(), QueueSize: 1}); err != nil {
		t.Fatal(err)
	}
	var compUID string
	for _, info := range m.ActiveSubscriptions() {
		if info.Options.Event == protocol.EventUpdate {
			compUID = info.UID
		}
	}
	// While Range holds the replica, the companion's first exit waits for
	// it and the next updates overflow the companion's queue of one. The
	// replica's own subscription gets nothing: the rows leave its filter.
	var stalled error
	c.Range(func(int64, Post) bool {
		for _, k := range keys {
			testutil.Must(srv.Update("posts", []any{k}, map[string]any{"status": "draft"}))
		}
		wctx := ctx(t)
		for {
			select {
			case uid := <-stalls:
				if uid != compUID {
					continue
				}
			case <-wctx.Done():
				stalled = wctx.Err()
			}
			return false
		}
	})
	if stalled != nil {
		t.Fatalf("the companion never overflowed: %v", stalled)
	}
	if err := c.WaitFor(ctx(t), func() bool { return c.Len() == 0 }); err != nil {
		t.Fatalf("rows whose exits were discarded are still held (%v): %v, stats %+v", err, c.Keys(), c.Stats())
	}
	if st := c.Stats(); st.Reconciles == 0 {
		t.Fatalf("no reconcile after the companion's overflow: %+v", st)
	}
}
