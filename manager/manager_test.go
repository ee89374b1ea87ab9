package manager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wire counts the frames the server receives, by type.
type wire struct {
	mu     sync.Mutex
	frames []map[string]any
	signal chan struct{}
}

func newWire() *wire { return &wire{signal: make(chan struct{}, 1)} }

// on records inbound frames by their type, and the server's unsubscribe
// acknowledgements as "ack", which it sends once the subscription is gone.
func (w *wire) on(f directustest.Frame) {
	var m map[string]any
	if json.Unmarshal(f.Data, &m) != nil {
		return
	}
	if !f.Inbound {
		if m["type"] != "subscription" || m["event"] != "unsubscribe" {
			return
		}
		m = map[string]any{"type": "ack"}
	}
	w.mu.Lock()
	w.frames = append(w.frames, m)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *wire) count(typ string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, f := range w.frames {
		if f["type"] == typ {
			n++
		}
	}
	return n
}

// waitCount waits until the server received n frames of type typ.
func (w *wire) waitCount(t *testing.T, typ string, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for w.count(typ) < n {
		select {
		case <-w.signal:
		case <-deadline:
			t.Fatalf("server received %d %s frames, want %d", w.count(typ), typ, n)
		}
	}
}

type env struct {
	srv  *directustest.Server
	m    *manager.Manager
	wire *wire
	errs chan error
}

func setup(t *testing.T, opts *manager.Options, auth conn.Auth) *env {
	t.Helper()
	w := newWire()
	srv := directustest.NewServer(&directustest.Options{OnFrame: w.on})
	t.Cleanup(srv.Close)
	if auth.Token == "" && auth.Email == "" {
		auth = conn.Auth{Token: directustest.AdminToken}
	}
	e := &env{srv: srv, wire: w, errs: make(chan error, 1024)}
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: auth, PingInterval: -1,
		Backoff: conn.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		OnError: func(err error) {
			select {
			case e.errs <- err:
			default:
			}
		}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// recorder is a handler that records events and signals each one.
type recorder struct {
	mu     sync.Mutex
	events []handlers.Event
	ch     chan handlers.Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan handlers.Event, 4096)} }

func (r *recorder) Handle(ev handlers.Event) error {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.ch <- ev
	return nil
}

func (r *recorder) next(t *testing.T) handlers.Event {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
		return handlers.Event{}
	}
}

func (r *recorder) nextKind(t *testing.T, k handlers.Kind) handlers.Event {
	t.Helper()
	for {
		if ev := r.next(t); ev.Kind == k {
			return ev
		}
	}
}

func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-r.ch:
		t.Fatalf("unexpected event %s %s", ev.Kind, ev.Data)
	default:
	}
}

func posts(opts manager.SubscribeOptions) manager.SubscribeOptions {
	opts.Collection = "posts"
	return opts
}

func TestSubscribeDeliversInOrder(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	r := newRecorder()
	sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "feed", Persistent: true, Query: &protocol.Query{Fields: []string{"id", "title"}}}), r)
	if err != nil {
		t.Fatal(err)
	}
	if ev := r.next(t); ev.Kind != handlers.KindInit || ev.Resync || ev.UID != "feed" || ev.Collection != "posts" {
		t.Fatalf("first event %+v", ev)
	}
	for i := 0; i < 100; i++ {
		if _, err := e.srv.Create("posts", map[string]any{"title": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		ev := r.nextKind(t, handlers.KindCreate)
		items, err := handlers.Items[struct{ Title string }](ev)
		if err != nil || items[0].Title != fmt.Sprint(i) {
			t.Fatalf("event %d: %v %v", i, items, err)
		}
	}
	if sub.State() != manager.StateActive || sub.Stats().Events != 101 {
		t.Fatalf("state %v stats %+v", sub.State(), sub.Stats())
	}
}

func TestDuplicateUIDUnder100ConcurrentCallers(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	var wg sync.WaitGroup
	var created, dups atomic.Int64
	handles := make(chan *manager.Subscription, 100)
	recorders := make([]*recorder, 100)
	for i := range recorders {
		recorders[i] = newRecorder()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "dup", Persistent: true}), recorders[i])
			switch {
			case err == nil:
				created.Add(1)
			case errors.Is(err, manager.ErrDuplicate):
				var de *manager.DuplicateError
				if !errors.As(err, &de) || de.UID != "dup" {
					t.Errorf("err %v", err)
				}
				dups.Add(1)
			default:
				t.Errorf("Subscribe: %v", err)
			}
			handles <- sub
		}()
	}
	wg.Wait()
	close(handles)
	if created.Load() != 1 || dups.Load() != 99 {
		t.Fatalf("created %d, duplicates %d", created.Load(), dups.Load())
	}
	var first *manager.Subscription
	for h := range handles {
		if first == nil {
			first = h
		}
		if h != first {
			t.Fatal("duplicates got different handles")
		}
	}
	if n := len(e.srv.Subscriptions()); n != 1 {
		t.Fatalf("%d server subscriptions", n)
	}
	if n := e.wire.count("subscribe"); n != 1 {
		t.Fatalf("%d subscribe frames", n)
	}
	// Exactly one handler is attached: once the handle is flushed, one
	// recorder holds the init, and a create reaches it and no other.
	attached := func() (owner *recorder, n int) {
		if err := first.Flush(ctx(t)); err != nil {
			t.Fatal(err)
		}
		for _, r := range recorders {
			r.mu.Lock()
			if len(r.events) > 0 {
				owner = r
				n++
			}
			r.mu.Unlock()
		}
		return owner, n
	}
	owner, n := attached()
	if n != 1 {
		t.Fatalf("%d handlers attached", n)
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	owner.nextKind(t, handlers.KindCreate)
	if _, n := attached(); n != 1 {
		t.Fatalf("%d handlers attached after the create", n)
	}
}

func TestScopedSubscriptionEndsWithRequest(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	subs := make(chan *manager.Subscription, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, err := e.m.Subscribe(r.Context(), posts(manager.SubscribeOptions{}), newRecorder())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		subs <- sub
		fmt.Fprintln(w, sub.UID())
	})
	web := httptest.NewServer(h)
	defer web.Close()
	resp, err := http.Get(web.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sub := <-subs
	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("scoped subscription outlived its request")
	}
	if !errors.Is(sub.Err(), context.Canceled) || e.m.HasSubscription(sub.UID()) {
		t.Fatalf("err %v, has %v", sub.Err(), e.m.HasSubscription(sub.UID()))
	}
	e.wire.waitCount(t, "ack", 1)
	if n := len(e.srv.Subscriptions()); n != 0 {
		t.Fatalf("%d server subscriptions left", n)
	}
}

func TestScopeCloseEndsItsSubscriptions(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	scopeCtx, cancel := context.WithCancel(context.Background())
	sc := e.m.NewScope(scopeCtx)
	for i := 0; i < 3; i++ {
		if _, err := sc.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true, Query: &protocol.Query{Limit: i + 1}}), newRecorder()); err != nil {
			t.Fatal(err)
		}
	}
	keep, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "keep", Persistent: true}), newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	if sc.Len() != 3 || len(e.m.ActiveSubscriptions()) != 4 {
		t.Fatalf("scope %d, active %d", sc.Len(), len(e.m.ActiveSubscriptions()))
	}
	cancel() // the scope's context ends: like a component unmounting
	deadline := time.After(10 * time.Second)
	for len(e.m.ActiveSubscriptions()) != 1 {
		select {
		case <-e.wire.signal:
		case <-deadline:
			t.Fatalf("active %v", e.m.ActiveSubscriptions())
		}
	}
	if keep.State() != manager.StateActive || sc.Close() != 0 {
		t.Fatal("scope close touched others or ran twice")
	}
	if _, err := sc.Subscribe(ctx(t), posts(manager.SubscribeOptions{}), newRecorder()); !errors.Is(err, manager.ErrScopeClosed) {
		t.Fatalf("subscribe on closed scope: %v", err)
	}
}

func TestUnsubscribeCollectionAndAllSparePersistent(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	mk := func(uid, coll string, persistent bool) {
		t.Helper()
		if _, err := e.m.Subscribe(context.Background(), manager.SubscribeOptions{Collection: coll, UID: uid, Persistent: persistent}, newRecorder()); err != nil {
			t.Fatal(err)
		}
	}
	mk("p-posts", "posts", true)
	mk("s-posts-1", "posts", false)
	mk("s-posts-2", "posts", false)
	mk("p-tags", "tags", true)
	mk("s-tags", "tags", false)
	if n := e.m.UnsubscribeCollection("posts"); n != 2 {
		t.Fatalf("UnsubscribeCollection ended %d", n)
	}
	if !e.m.HasSubscription("p-posts") || e.m.HasSubscription("s-posts-1") || !e.m.HasSubscription("s-tags") {
		t.Fatal("wrong subscriptions ended")
	}
	if n := e.m.UnsubscribeAll(); n != 1 {
		t.Fatalf("UnsubscribeAll ended %d", n)
	}
	var uids []string
	for _, info := range e.m.ActiveSubscriptions() {
		uids = append(uids, info.UID)
		if !info.Persistent {
			t.Errorf("%s survived but is not persistent", info.UID)
		}
	}
	if fmt.Sprint(uids) != "[p-posts p-tags]" {
		t.Fatalf("left %v", uids)
	}
	if err := e.m.Unsubscribe("p-posts"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Unsubscribe("p-posts"); !errors.Is(err, manager.ErrNotFound) {
		t.Fatalf("second Unsubscribe: %v", err)
	}
	// Joins read their own init and left the server subscriptions alone:
	// the only unsubscribe is p-posts', the last on its server subscription
	// (p-tags still holds tags').
	e.wire.waitCount(t, "unsubscribe", 1)
	e.wire.mu.Lock()
	for _, f := range e.wire.frames {
		if f["type"] == "unsubscribe" && f["uid"] == nil {
			t.Error("unsubscribe without uid sent")
		}
	}
	e.wire.mu.Unlock()
}

func TestRestoreExactlyOnceAfterDrop(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	recs := map[string]*recorder{}
	var plain *recorder // the subscription without query, which "shared" joins
	for _, q := range []*protocol.Query{nil, {Fields: []string{"id"}}, {Filter: map[string]any{"status": map[string]any{"_eq": "published"}}}} {
		r := newRecorder()
		sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Query: q, Persistent: true}), r)
		if err != nil {
			t.Fatal(err)
		}
		recs[sub.UID()] = r
		r.nextKind(t, handlers.KindInit)
		if q == nil {
			plain = r
		}
	}
	// Two identical ones share a server subscription; the newcomer reads
	// its own init, and the first one sees nothing of it.
	shared := newRecorder()
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "shared", Persistent: true}), shared); err != nil {
		t.Fatal(err)
	}
	shared.nextKind(t, handlers.KindInit)
	plain.none(t)
	before := e.wire.count("subscribe")
	if len(e.srv.Subscriptions()) != 3 {
		t.Fatalf("%d server subscriptions, want 3 (one shared)", len(e.srv.Subscriptions()))
	}
	states := e.m.WatchState(ctx(t))
	e.srv.DropConnections()
	for sc := range states {
		if sc.To == conn.StateConnected {
			break
		}
	}
	for uid, r := range recs {
		ev := r.nextKind(t, handlers.KindInit)
		if !ev.Resync {
			t.Errorf("%s: init after reconnect not marked resync", uid)
		}
	}
	if ev := shared.nextKind(t, handlers.KindInit); !ev.Resync {
		t.Error("shared: no resync")
	}
	if got := e.wire.count("subscribe") - before; got != 3 {
		t.Fatalf("%d subscribe frames after the drop, want exactly 3", got)
	}
	if err := e.m.Reconnect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		r.nextKind(t, handlers.KindInit)
	}
	shared.nextKind(t, handlers.KindInit)
	if got := e.wire.count("subscribe") - before; got != 6 {
		t.Fatalf("%d subscribe frames after Reconnect, want 6", got)
	}
	for _, info := range e.m.ActiveSubscriptions() {
		// The drop and Reconnect resynced every subscription, the join none.
		want := uint64(2)
		if info.State != manager.StateActive || info.Stats.Resyncs != want {
			t.Errorf("%s: %v %+v, want %d resyncs", info.UID, info.State, info.Stats, want)
		}
	}
}

func TestSlowHandlerForcesResyncWhileOthersFlow(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	block := make(chan struct{})
	var slowEvents []handlers.Event
	var smu sync.Mutex
	slowGot := make(chan handlers.Event, 100)
	slow := handlers.HandlerFunc(func(ev handlers.Event) error {
		if ev.Kind == handlers.KindCreate {
			<-block
		}
		smu.Lock()
		slowEvents = append(slowEvents, ev)
		smu.Unlock()
		slowGot <- ev
		return nil
	})
	slowSub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "slow", Persistent: true, QueueSize: 8, Query: &protocol.Query{Limit: -1}}), slow)
	if err != nil {
		t.Fatal(err)
	}
	<-slowGot // its init
	fastRec := newRecorder()
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "fast", Persistent: true, Query: &protocol.Query{Fields: []string{"id"}}}), fastRec); err != nil {
		t.Fatal(err)
	}
	fastRec.nextKind(t, handlers.KindInit)
	for i := 0; i < 50; i++ {
		if _, err := e.srv.Create("posts", map[string]any{"title": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The fast subscription gets every event while the slow one is stuck.
	for i := 0; i < 50; i++ {
		fastRec.nextKind(t, handlers.KindCreate)
	}
	if slowSub.Stats().Overflows == 0 {
		t.Fatalf("no overflow: %+v", slowSub.Stats())
	}
	close(block)
	// After the event it was stuck on, the slow handler receives a resync
	// init that holds all 50 rows.
	for {
		ev := <-slowGot
		if ev.Kind == handlers.KindInit {
			if !ev.Resync {
				t.Fatal("init after overflow not marked resync")
			}
			items, _ := handlers.Items[map[string]any](ev)
			if len(items) != 50 {
				t.Fatalf("resync init has %d rows", len(items))
			}
			break
		}
	}
	if slowSub.State() != manager.StateActive {
		t.Fatalf("state %v", slowSub.State())
	}
}

func TestErrorsRoutedByUID(t *testing.T) {
	e := setup(t, nil, conn.Auth{Token: directustest.ReaderToken})
	// The reader cannot read tags: the refusal comes back with the local uid.
	_, err := e.m.Subscribe(ctx(t), manager.SubscribeOptions{Collection: "tags", UID: "my-tags"}, newRecorder())
	var se *protocol.ServerError
	if !errors.Is(err, protocol.ErrForbidden) || !errors.As(err, &se) || se.UID != "my-tags" {
		t.Fatalf("err = %v", err)
	}
	if e.m.HasSubscription("my-tags") {
		t.Fatal("failed subscription left behind")
	}
	// An event-only subscription skips the check; every event becomes a
	// FORBIDDEN frame for it alone, and it stays.
	tagEvents := newRecorder()
	tagSub, err := e.m.Subscribe(ctx(t), manager.SubscribeOptions{Collection: "tags", Event: protocol.EventCreate, UID: "tag-creates", Persistent: true}, tagEvents)
	if err != nil {
		t.Fatal(err)
	}
	postEvents := newRecorder()
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "posts", Persistent: true}), postEvents); err != nil {
		t.Fatal(err)
	}
	tagEvents.nextKind(t, handlers.KindInit)
	postEvents.nextKind(t, handlers.KindInit)
	if _, err := e.srv.Create("tags", map[string]any{"name": "x"}); err != nil {
		t.Fatal(err)
	}
	ev := tagEvents.nextKind(t, handlers.KindError)
	if !errors.Is(ev.Err, protocol.ErrForbidden) || ev.UID != "tag-creates" {
		t.Fatalf("error event %+v", ev)
	}
	if tagSub.State() != manager.StateActive || tagSub.Stats().Errors != 1 {
		t.Fatalf("state %v stats %+v", tagSub.State(), tagSub.Stats())
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "p"}); err != nil {
		t.Fatal(err)
	}
	postEvents.nextKind(t, handlers.KindCreate)
	postEvents.none(t)
	// An error without uid goes to OnError.
	e.srv.Inject([]byte(`{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Unable to parse the incoming message."}}`))
	for err := range e.errs {
		if errors.Is(err, protocol.ErrInvalidPayload) {
			break
		}
	}
	// A handler's error is counted and reported, and delivery goes on.
	boom := errors.New("boom")
	failing, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "failing", Persistent: true}),
		handlers.HandlerFunc(func(handlers.Event) error { return boom }))
	if err != nil {
		t.Fatal(err)
	}
	for err := range e.errs {
		var he *manager.HandlerError
		if errors.As(err, &he) && he.UID == "failing" && errors.Is(err, boom) {
			break
		}
	}
	if failing.Stats().Errors == 0 {
		t.Fatal("handler error not counted")
	}
}

func TestIdenticalSubscriptionsShareOneServerSubscription(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	q := &protocol.Query{Fields: []string{"id", "title"}, Filter: map[string]any{"status": map[string]any{"_eq": "published"}}}
	a, b := newRecorder(), newRecorder()
	subA, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "a", Query: q, Persistent: true}), a)
	if err != nil {
		t.Fatal(err)
	}
	// Same query, built separately.
	q2 := &protocol.Query{Filter: map[string]any{"status": map[string]any{"_eq": "published"}}, Fields: []string{"id", "title"}}
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "b", Query: q2, Persistent: true}), b); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Subscriptions()); n != 1 {
		t.Fatalf("%d server subscriptions", n)
	}
	if ev := a.nextKind(t, handlers.KindInit); ev.Resync {
		t.Fatal("a's first init marked resync")
	}
	if ev := b.nextKind(t, handlers.KindInit); ev.Resync || ev.UID != "b" {
		t.Fatalf("b's first init: %+v", ev)
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "shared", "status": "published"}); err != nil {
		t.Fatal(err)
	}
	if a.nextKind(t, handlers.KindCreate).UID != "a" || b.nextKind(t, handlers.KindCreate).UID != "b" {
		t.Fatal("events not delivered to both with their own uid")
	}
	if err := subA.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Subscriptions()); n != 1 {
		t.Fatalf("server subscription dropped while b uses it (%d)", n)
	}
	if err := e.m.Unsubscribe("b"); err != nil {
		t.Fatal(err)
	}
	e.wire.waitCount(t, "ack", 1)
	if n := len(e.srv.Subscriptions()); n != 0 {
		t.Fatalf("%d server subscriptions after both left", n)
	}
}

func TestReauthAfterTokenExpiryResyncsOnce(t *testing.T) {
	e := setup(t, nil, conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword})
	r := newRecorder()
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: "x", Persistent: true}), r); err != nil {
		t.Fatal(err)
	}
	r.nextKind(t, handlers.KindInit)
	before := e.wire.count("subscribe")
	e.srv.ExpireTokens()
	if ev := r.nextKind(t, handlers.KindInit); !ev.Resync {
		t.Fatal("no resync after re-auth")
	}
	if got := e.wire.count("subscribe") - before; got != 1 {
		t.Fatalf("%d subscribe frames, want 1", got)
	}
	// The replaced server subscription was unsubscribed; one is left.
	e.wire.waitCount(t, "ack", 1)
	if n := len(e.srv.Subscriptions()); n != 1 {
		t.Fatalf("%d server subscriptions", n)
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "after"}); err != nil {
		t.Fatal(err)
	}
	r.nextKind(t, handlers.KindCreate)
	r.none(t)
}

func TestSubscribeBeforeConnectAndAutoUIDs(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := make(chan *manager.Subscription)
	go func() {
		sub, err := m.Subscribe(context.Background(), posts(manager.SubscribeOptions{Persistent: true}), newRecorder())
		if err != nil {
			t.Error(err)
		}
		got <- sub
	}()
	if err := m.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	first := <-got
	if err := first.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	second, err := m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true}), newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	if first.UID() == second.UID() || first.UID() == "" {
		t.Fatalf("generated uids %q and %q", first.UID(), second.UID())
	}
	if err := first.Unsubscribe(); !errors.Is(err, manager.ErrNotFound) {
		t.Fatalf("stale handle: %v", err)
	}
}

func TestSendMessageItemsAndValidation(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	for _, msg := range []any{
		map[string]any{"type": "unsubscribe"},
		protocol.UnsubscribeMessage{UID: "x"},
		protocol.SubscribeMessage{Collection: "posts"},
	} {
		if err := e.m.SendMessage(ctx(t), msg); !errors.Is(err, manager.ErrRefused) {
			t.Errorf("%v: %v", msg, err)
		}
	}
	if err := e.m.SendMessage(ctx(t), map[string]any{"type": "ping", "uid": "custom"}); err != nil {
		t.Fatal(err)
	}
	e.wire.waitCount(t, "ping", 1)
	rep, err := e.m.Items(ctx(t), protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionCreate, Data: map[string]any{"title": "via ws"}})
	if err != nil || !bytes.Contains(rep.Data, []byte(`"via ws"`)) {
		t.Fatalf("items create: %s %v", rep.Data, err)
	}
	for _, bad := range []manager.SubscribeOptions{
		{},
		{Collection: "posts", Event: "upsert"},
		{Collection: "posts", Item: 1.5},
		{Collection: "posts", Item: []int{1}},
	} {
		var oe *protocol.ConfigError
		if _, err := e.m.Subscribe(ctx(t), bad, newRecorder()); !errors.As(err, &oe) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if e.wire.count("subscribe") != 0 {
		t.Fatal("invalid options reached the server")
	}
}

func TestSingleItemAndEventOnly(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	rows, err := e.srv.Create("posts", map[string]any{"title": "one"})
	if err != nil {
		t.Fatal(err)
	}
	id := rows[0]["id"]
	one := newRecorder()
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Item: fmt.Sprint(id), Persistent: true}), one); err != nil {
		t.Fatal(err)
	}
	ev := one.nextKind(t, handlers.KindInit)
	if !ev.Item || ev.Data[0] != '{' {
		t.Fatalf("single-item init %+v %s", ev, ev.Data)
	}
	creates1, creates2 := newRecorder(), newRecorder()
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Event: protocol.EventCreate, Persistent: true}), creates1); err != nil {
		t.Fatal(err)
	}
	before := e.wire.count("subscribe")
	// A second event-only one joins without any frame: its init has no data.
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Event: protocol.EventCreate, Persistent: true}), creates2); err != nil {
		t.Fatal(err)
	}
	if e.wire.count("subscribe") != before {
		t.Fatal("event-only join sent a subscribe")
	}
	if ev := creates2.nextKind(t, handlers.KindInit); ev.Data != nil {
		t.Fatalf("event-only init has data %s", ev.Data)
	}
	if err := e.srv.Delete("posts", fmt.Sprint(id)); err != nil {
		t.Fatal(err)
	}
	keys, err := handlers.Keys(one.nextKind(t, handlers.KindDelete))
	if err != nil || len(keys) != 1 || string(keys[0]) != fmt.Sprint(id) {
		t.Fatalf("single-item delete keys %v %v", keys, err)
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "two"}); err != nil {
		t.Fatal(err)
	}
	creates1.nextKind(t, handlers.KindCreate)
	creates2.nextKind(t, handlers.KindCreate)
}

func TestCloseEndsEverything(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	block := make(chan struct{})
	running := make(chan struct{}, 1)
	sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true}), handlers.HandlerFunc(func(ev handlers.Event) error {
		if ev.Kind == handlers.KindCreate {
			running <- struct{}{}
			<-block
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	<-running
	closed := make(chan error)
	go func() { closed <- e.m.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a handler runs")
	case <-sub.Done():
	}
	close(block)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(sub.Err(), manager.ErrClosed) || e.m.IsConnected() {
		t.Fatalf("after Close: %v connected=%v", sub.Err(), e.m.IsConnected())
	}
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{}), newRecorder()); !errors.Is(err, manager.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

// After a reconnect and after a re-authentication, server subscriptions are
// sent again in the order they were made: a store replica relies on its
// companion of filter exits being registered before its own subscription.
func TestRestoreInCreationOrder(t *testing.T) {
	// Email and password: after TOKEN_EXPIRED the manager re-authenticates.
	e := setup(t, nil, conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword})
	var want []string
	for i := range 12 {
		// Distinct filters tell the subscribes apart on the wire; every
		// other one is event-only, as a companion is.
		opts := posts(manager.SubscribeOptions{UID: fmt.Sprintf("s%02d", i), Persistent: true,
			Query: &protocol.Query{Filter: map[string]any{"id": map[string]any{"_neq": -1 - i}}}})
		if i%2 == 1 {
			opts.Event = protocol.EventUpdate
		}
		if _, err := e.m.Subscribe(ctx(t), opts, newRecorder()); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprint(-1-i))
	}
	order := func(from int) []string {
		e.wire.mu.Lock()
		defer e.wire.mu.Unlock()
		var got []string
		for _, f := range e.wire.frames[from:] {
			if f["type"] != "subscribe" {
				continue
			}
			q, _ := f["query"].(map[string]any)
			flt, _ := q["filter"].(map[string]any)
			id, _ := flt["id"].(map[string]any)
			got = append(got, fmt.Sprint(id["_neq"]))
		}
		return got
	}
	for _, fault := range []string{"drop", "expire"} {
		e.wire.mu.Lock()
		from := len(e.wire.frames)
		e.wire.mu.Unlock()
		before := e.wire.count("subscribe")
		if fault == "drop" {
			e.srv.DropConnections()
		} else {
			e.srv.ExpireTokens()
		}
		e.wire.waitCount(t, "subscribe", before+len(want))
		if got := order(from); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after %s: subscribes in the order %v, want %v", fault, got, want)
		}
	}
}
