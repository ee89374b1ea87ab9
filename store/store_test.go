package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int    `json:"views"`
}

func newPosts(opts store.Options[int64, Post]) *store.Collection[int64, Post] {
	opts.Key = func(p Post) int64 { return p.ID }
	return testutil.Must(store.New(opts))
}

func ev(kind handlers.Kind, data string) handlers.Event {
	e := handlers.Event{Kind: kind, Collection: "posts", UID: "u"}
	if data != "" {
		e.Data = json.RawMessage(data)
	}
	return e
}

func apply(t *testing.T, c handlers.Handler, events ...handlers.Event) {
	t.Helper()
	for _, e := range events {
		if err := c.Handle(e); err != nil {
			t.Fatalf("%s %s: %v", e.Kind, e.Data, err)
		}
	}
}

func ids(c *store.Collection[int64, Post]) []int64 {
	keys := c.Keys()
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

func TestEventSemantics(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	if c.Synced() {
		t.Fatal("synced before init")
	}
	apply(t, c,
		ev(handlers.KindInit, `[{"id":1,"title":"a"},{"id":2,"title":"b"}]`),
		ev(handlers.KindCreate, `[{"id":3,"title":"c"}]`),
		ev(handlers.KindUpdate, `[{"id":2,"title":"B"},{"id":7,"title":"entered the filter"}]`),
		ev(handlers.KindDelete, `["1"]`),    // key from a URL path
		ev(handlers.KindDelete, `[3, 999]`), // from a JSON body; 999 was never here
		ev(handlers.KindCreate, `[{"id":1,"title":"back"}]`),
	)
	if !c.Synced() || fmt.Sprint(ids(c)) != "[1 2 7]" {
		t.Fatalf("synced %v rows %v", c.Synced(), ids(c))
	}
	if p, _ := c.Get(2); p.Title != "B" {
		t.Fatalf("row 2 = %+v", p)
	}
	// A resync init replaces everything.
	apply(t, c, handlers.Event{Kind: handlers.KindInit, Resync: true, Data: json.RawMessage(`[{"id":7,"title":"x"},{"id":8,"title":"y"}]`)})
	if fmt.Sprint(ids(c)) != "[7 8]" {
		t.Fatalf("after resync: %v", ids(c))
	}
	st := c.Stats()
	if st.Inits != 2 || st.Resyncs != 1 || st.Events != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSingleItemAndStringKeys(t *testing.T) {
	type Tag struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	tags := testutil.Must(store.New(store.Options[string, Tag]{Key: func(t Tag) string { return t.ID }}))
	defer tags.Close()
	apply(t, tags,
		ev(handlers.KindInit, `{"id":"7103850d","name":"one"}`), // single-item init: an object
		ev(handlers.KindUpdate, `{"id":"7103850d","name":"renamed"}`),
	)
	if tag, ok := tags.Get("7103850d"); !ok || tag.Name != "renamed" {
		t.Fatalf("tag %+v %v", tag, ok)
	}
	apply(t, tags, ev(handlers.KindDelete, `"7103850d"`)) // a bare key
	if tags.Len() != 0 {
		t.Fatal("not deleted")
	}
	// Numeric keys into a string-keyed collection normalise too.
	apply(t, tags, ev(handlers.KindCreate, `[{"id":"12","name":"n"}]`), ev(handlers.KindDelete, `[12]`))
	if tags.Len() != 0 {
		t.Fatal("numeric delete key not matched")
	}
}

func TestBadInputLosesOnlyItself(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	apply(t, c, ev(handlers.KindInit, `[]`))
	err := c.Handle(ev(handlers.KindCreate, `[{"id":1,"title":"ok"},{"id":"not a number"},{"id":3,"title":"ok too"}]`))
	var se *handlers.ShapeError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v", err)
	}
	if fmt.Sprint(ids(c)) != "[1 3]" {
		t.Fatalf("rows %v", ids(c))
	}
	err = c.Handle(ev(handlers.KindDelete, `["7103850d-uuid", 1]`))
	var ke *store.KeyError
	if !errors.As(err, &ke) || fmt.Sprint(ids(c)) != "[3]" {
		t.Fatalf("err %v rows %v", err, ids(c))
	}
	for _, bad := range []string{`"x"`, `{"id":`, `12`} {
		if err := c.Handle(ev(handlers.KindUpdate, bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if c.Stats().BadRows != 5 || c.Len() != 1 {
		t.Fatalf("stats %+v len %d", c.Stats(), c.Len())
	}
}

func TestStaleGuard(t *testing.T) {
	type Row struct {
		ID      int64     `json:"id"`
		V       string    `json:"v"`
		Updated time.Time `json:"date_updated"`
	}
	c := testutil.Must(store.New(store.Options[int64, Row]{Key: func(r Row) int64 { return r.ID }, Stale: store.ByTime(func(r Row) time.Time { return r.Updated })}))
	defer c.Close()
	apply(t, c,
		ev(handlers.KindInit, `[{"id":1,"v":"new","date_updated":"2026-11-23T10:00:00Z"}]`),
		ev(handlers.KindUpdate, `[{"id":1,"v":"old","date_updated":"2026-11-23T09:00:00Z"}]`),
	)
	if r, _ := c.Get(1); r.V != "new" || c.Stats().StaleSkipped != 1 {
		t.Fatalf("row %+v stats %+v", r, c.Stats())
	}
	// The init is authoritative about membership, not about age.
	apply(t, c, handlers.Event{Kind: handlers.KindInit, Resync: true, Data: json.RawMessage(`[{"id":2,"v":"x"}]`)})
	if fmt.Sprint(c.Keys()) != "[2]" {
		t.Fatalf("keys %v", c.Keys())
	}
}

func TestListenersHearExactChangesInOrder(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	apply(t, c, ev(handlers.KindInit, `[{"id":1,"title":"a"},{"id":2,"title":"b"}]`))

	got := make(chan store.Change[int64, Post], 100)
	remove := c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		// A change is delivered after the rows show it.
		if v, ok := c.Get(ch.Key); ch.Op != store.OpDelete && (!ok || v != ch.New) && ch.Op != store.OpReset {
			t.Errorf("row %d not visible for %v", ch.Key, ch.Op)
		}
		got <- ch
	}))
	next := func() store.Change[int64, Post] { return <-got }
	// The rows present come first, as initial adds.
	seen := map[int64]bool{}
	for i := 0; i < 2; i++ {
		ch := next()
		if ch.Op != store.OpAdd || !ch.Initial {
			t.Fatalf("initial change %+v", ch)
		}
		seen[ch.Key] = true
	}
	apply(t, c,
		ev(handlers.KindUpdate, `[{"id":1,"title":"a"}]`), // unchanged: no change
		ev(handlers.KindUpdate, `[{"id":1,"title":"A"}]`),
		ev(handlers.KindDelete, `[2]`),
		handlers.Event{Kind: handlers.KindInit, Resync: true, Data: json.RawMessage(`[{"id":1,"title":"A"},{"id":3,"title":"c"}]`)},
	)
	want := []string{"update 1 a->A", "delete 2 b", "add 3 c resync"}
	for _, w := range want {
		ch := next()
		var s string
		switch ch.Op {
		case store.OpUpdate:
			s = fmt.Sprintf("update %d %s->%s", ch.Key, ch.Old.Title, ch.New.Title)
		case store.OpDelete:
			s = fmt.Sprintf("delete %d %s", ch.Key, ch.Old.Title)
		case store.OpAdd:
			s = fmt.Sprintf("add %d %s", ch.Key, ch.New.Title)
		}
		if ch.Resync {
			s += " resync"
		}
		if s != w {
			t.Fatalf("got %q, want %q", s, w)
		}
	}
	remove()
	apply(t, c, ev(handlers.KindCreate, `[{"id":9}]`))
	select {
	case ch := <-got:
		t.Fatalf("removed listener heard %+v", ch)
	default:
	}
}

func TestSlowListenerGetsReset(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{ListenerQueue: 4})
	defer c.Close()
	apply(t, c, ev(handlers.KindInit, `[]`))
	block := make(chan struct{})
	got := make(chan store.Change[int64, Post], 100)
	c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		<-block
		got <- ch
	}))
	for i := 1; i <= 20; i++ {
		apply(t, c, ev(handlers.KindCreate, fmt.Sprintf(`[{"id":%d}]`, i)))
	}
	close(block)
	reset := false
	for !reset {
		reset = (<-got).Op == store.OpReset
	}
	if c.Len() != 20 {
		t.Fatal("the replica itself lost rows")
	}
}

// Readers running while batches apply never see half a batch, the index
// always agrees with the rows, and a listener hears every change in order.
func TestConsistentReadsAndIndexesUnderLoad(t *testing.T) {
	const n, rounds = 50, 200
	c := newPosts(store.Options[int64, Post]{Indexers: map[string]store.IndexFunc[Post]{
		"status": func(p Post) []string { return []string{p.Status} },
	}})
	defer c.Close()
	apply(t, c, ev(handlers.KindInit, `[]`))
	var heard []int
	var lmu sync.Mutex
	allHeard := make(chan struct{})
	c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		lmu.Lock()
		defer lmu.Unlock()
		heard = append(heard, ch.New.Views)
		if len(heard) == n*rounds {
			close(allHeard)
		}
	}))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Every batch sets all n rows to one status and views value:
				// a consistent read sees one (status, views) pair, and the
				// index holds the same n keys under that status only.
				status, views, count, mixed := "", -1, 0, false
				c.Range(func(_ int64, p Post) bool {
					if views == -1 {
						status, views = p.Status, p.Views
					}
					mixed = mixed || p.Status != status || p.Views != views
					count++
					return true
				})
				if mixed {
					t.Error("a reader saw half a batch")
					return
				}
				snap := c.Snapshot()
				for _, p := range snap {
					if p.Views != snap[1].Views {
						t.Error("a snapshot holds half a batch")
						return
					}
				}
			}
		}()
	}
	for round := 0; round < rounds; round++ {
		status := []string{"draft", "published"}[round%2]
		b := []byte{'['}
		for i := 1; i <= n; i++ {
			if i > 1 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `{"id":%d,"status":%q,"views":%d}`, i, status, round)
		}
		b = append(b, ']')
		kind := handlers.KindUpdate
		if round == 0 {
			kind = handlers.KindCreate
		}
		apply(t, c, handlers.Event{Kind: kind, Data: b})
		inStatus, _ := c.IndexKeys("status", status)
		values, _ := c.IndexValues("status")
		if len(inStatus) != n || len(values) != 1 {
			t.Fatalf("round %d: index has %d keys under %s and values %v", round, len(inStatus), status, values)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case <-allHeard:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not hear every change")
	}
	lmu.Lock()
	defer lmu.Unlock()
	for i := 1; i < len(heard); i++ {
		if heard[i] < heard[i-1] {
			t.Fatalf("listener order broken at %d", i)
		}
	}
	if _, err := c.ByIndex("nope", "x"); !errors.Is(err, store.ErrNoIndex) {
		t.Fatal("unknown index")
	}
}

// --- against the embedded server ---

type env struct {
	srv *directustest.Server
	m   *manager.Manager
}

func setup(t *testing.T) *env {
	t.Helper()
	srv := directustest.NewServer(nil)
	t.Cleanup(srv.Close)
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, PingInterval: -1,
		Backoff: conn.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, m: m}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// serverRows returns the server's rows matching match, as Posts by id.
func serverRows(srv *directustest.Server, match func(map[string]any) bool) map[int64]Post {
	out := map[int64]Post{}
	for _, row := range srv.Items("posts") {
		if match != nil && !match(row) {
			continue
		}
		b, _ := json.Marshal(row)
		var p Post
		_ = json.Unmarshal(b, &p)
		out[p.ID] = p
	}
	return out
}

func TestQueryChecks(t *testing.T) {
	e := setup(t)
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	var qe *store.QueryError
	for _, opts := range []manager.SubscribeOptions{
		{Collection: "posts", Event: protocol.EventCreate},
		{Collection: "posts", Query: &protocol.Query{Offset: 10}},
		{Collection: "posts", Query: &protocol.Query{Page: 2}},
		{Collection: "posts", Query: &protocol.Query{Fields: []string{"title"}}},
	} {
		if _, err := c.Subscribe(ctx(t), e.m, opts); !errors.As(err, &qe) {
			t.Errorf("%+v: %v", opts.Query, err)
		}
	}
	for i := 0; i < 150; i++ {
		_, _ = e.srv.Quiet().Create("posts", map[string]any{"title": fmt.Sprint(i)})
	}
	sub, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: &protocol.Query{Fields: []string{"id", "title"}}})
	if err != nil {
		t.Fatal(err)
	}
	// Every row, not Directus's default 100.
	if c.Len() != 150 || sub.Options().Query.Limit != -1 {
		t.Fatalf("len %d limit %d", c.Len(), sub.Options().Query.Limit)
	}
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts"}); !errors.Is(err, store.ErrSubscribed) {
		t.Fatalf("second Subscribe: %v", err)
	}
}

func TestReconcileCorrectsWhatEventsCannot(t *testing.T) {
	e := setup(t)
	published := func(row map[string]any) bool { return row["status"] == "published" }
	for i := 0; i < 5; i++ {
		_, _ = e.srv.Create("posts", map[string]any{"title": fmt.Sprint(i), "status": "published"})
	}
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true,
		Query: &protocol.Query{Filter: map[string]any{"status": map[string]any{"_eq": "published"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctx(t)); err != nil || c.Len() != 5 {
		t.Fatalf("synced %v len %d", err, c.Len())
	}
	deleted := make(chan int64, 10)
	c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		if ch.Op == store.OpDelete {
			deleted <- ch.Key
		}
	}))
	// Item 1 leaves the filter: Directus sends nothing. Item 2 is changed by
	// a write that emits no event.
	if _, err := e.srv.Update("posts", []any{"1"}, map[string]any{"status": "draft"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Quiet().Update("posts", []any{"2"}, map[string]any{"title": "quiet"}); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Get(2); p.Title == "quiet" || c.Len() != 5 {
		t.Fatal("the replica saw changes that emitted nothing")
	}
	if err := c.Reconcile(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := <-deleted; got != 1 {
		t.Fatalf("deleted %d", got)
	}
	if want := serverRows(e.srv, published); fmt.Sprint(c.Snapshot()) != fmt.Sprint(want) {
		t.Fatalf("replica %v\nserver  %v", c.Snapshot(), want)
	}
}

func TestReconcileLoopAndErrorEvents(t *testing.T) {
	e := setup(t)
	c := newPosts(store.Options[int64, Post]{ReconcileInterval: 50 * time.Millisecond})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		t.Fatal(err)
	}
	added := make(chan int64, 10)
	c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		if ch.Op == store.OpAdd && ch.Resync {
			added <- ch.Key
		}
	}))
	rows, _ := e.srv.Quiet().Create("posts", map[string]any{"title": "silent"})
	select {
	case k := <-added:
		if fmt.Sprint(k) != fmt.Sprint(rows[0]["id"]) {
			t.Fatalf("added %d", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reconcile loop did not find the silent write")
	}
	if c.Stats().Reconciles == 0 {
		t.Fatal("no reconcile counted")
	}
}

func TestReplicaSurvivesReconnectAndRestart(t *testing.T) {
	e := setup(t)
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		t.Fatal(err)
	}
	sub := c.Subscription()
	for round := 0; round < 3; round++ {
		before := c.Stats().Resyncs
		_, _ = e.srv.Create("posts", map[string]any{"title": fmt.Sprint("r", round)})
		if round%2 == 0 {
			e.srv.DropConnections()
		} else {
			e.srv.Restart()
		}
		// A write while the client is away (or already back).
		rows, _ := e.srv.Create("posts", map[string]any{"title": fmt.Sprint("away", round)})
		away := rows[0]["id"].(int64)
		err := c.WaitFor(ctx(t), func() bool {
			_, ok := c.Get(away)
			return ok && c.Stats().Resyncs > before
		})
		if err != nil || sub.State() == manager.StateEnded {
			t.Fatalf("round %d: %v, state %v", round, err, sub.State())
		}
	}
	if want := serverRows(e.srv, nil); fmt.Sprint(c.Snapshot()) != fmt.Sprint(want) {
		t.Fatalf("replica %v\nserver  %v", c.Snapshot(), want)
	}
}

func TestFlushListeners(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	apply(t, c, ev(handlers.KindInit, `[]`))
	release := make(chan struct{})
	var heard []int64
	var mu sync.Mutex
	c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		<-release
		mu.Lock()
		heard = append(heard, ch.Key)
		mu.Unlock()
	}))
	for i := 1; i <= 5; i++ {
		apply(t, c, ev(handlers.KindCreate, fmt.Sprintf(`[{"id":%d}]`, i)))
	}
	flushed := make(chan error)
	go func() { flushed <- c.FlushListeners(ctx(t)) }()
	close(release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if fmt.Sprint(heard) != "[1 2 3 4 5]" {
		t.Fatalf("heard %v when FlushListeners returned", heard)
	}
	mu.Unlock()
	_ = c.Close()
}
