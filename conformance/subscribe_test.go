package conformance

import (
	"bytes"
	"errors"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

var published = &protocol.Query{Limit: -1, Filter: map[string]any{"status": map[string]any{"_eq": "published"}}}

// S1-S5, U1-U3: subscribe, dedupe, sharing, unsubscribe and scopes through
// the manager. Directus silently replaces a subscription whose uid is
// reused (U2) and drops every subscription on an unsubscribe without uid:
// the wire shows that the manager never does either.
func TestSubscriptionLifecycle(t *testing.T) { run(t, scenarioSubscriptionLifecycle) }

func scenarioSubscriptionLifecycle(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	rest := srv.REST()
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})

	all := &protocol.Query{Limit: -1}
	ra := newRecorder()
	a, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Query: all, UID: "a"}, ra)
	must(t, err)
	if ev := ra.expect(ctx, t, handlers.KindInit); ev.Resync || string(ev.Data) != "[]" {
		t.Fatalf("first init: resync %v, data %s; want a first init of no rows", ev.Resync, ev.Data)
	}

	// A live uid is refused without a server subscription: with the same
	// options the first subscription is returned, with others a conflict
	// that says what differs.
	mark := c.wire.Len()
	dup, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Query: all, UID: "a"}, newRecorder())
	if !errors.Is(err, manager.ErrDuplicate) || dup != a {
		t.Fatalf("second Subscribe with uid a: %v (same subscription: %v), want ErrDuplicate and the first", err, dup == a)
	}
	var de *manager.DuplicateError
	if _, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", UID: "a"}, newRecorder()); !errors.Is(err, manager.ErrConflict) || !errors.As(err, &de) || de.Conflict != "query" {
		t.Fatalf("uid a with another query: %v, want a conflict on the query", err)
	}
	for _, f := range c.wire.Frames(mark) {
		if f.Out && f.Type == protocol.TypeSubscribe {
			t.Fatalf("a duplicate uid sent %s", f.Data)
		}
	}

	// An identical subscription shares the server subscription: the
	// newcomer reads its own init (an items read of the same query), and a
	// sees nothing of the join.
	mark = c.wire.Len()
	rb := newRecorder()
	b, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Query: all, UID: "b"}, rb)
	must(t, err)
	if ev := rb.expect(ctx, t, handlers.KindInit); ev.Resync || string(ev.Data) != "[]" {
		t.Fatalf("b's init: resync %v, data %s", ev.Resync, ev.Data)
	}
	for _, f := range c.wire.Frames(mark) {
		if f.Out && f.Type == protocol.TypeSubscribe {
			t.Fatalf("the join sent %s", f.Data)
		}
	}
	rc := newRecorder()
	_, err = c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Query: published, UID: "c"}, rc)
	must(t, err)
	rc.expect(ctx, t, handlers.KindInit)

	p, err := rest.CreatePost(ctx, Post{Title: "one", Status: "published", Views: 1})
	must(t, err)
	for name, r := range map[string]*recorder{"a": ra, "b": rb, "c": rc} {
		ev := r.expect(ctx, t, handlers.KindCreate)
		if items, err := handlers.Items[Post](ev); err != nil || len(items) != 1 || items[0] != p || ev.UID != name {
			t.Fatalf("%s: create %s for %q, want %+v", name, ev.Data, ev.UID, p)
		}
	}

	// Unsubscribing a leaves b on the shared server subscription.
	must(t, a.Unsubscribe())
	if !errors.Is(a.Err(), manager.ErrUnsubscribed) {
		t.Fatalf("a ended with %v", a.Err())
	}
	_, err = rest.CreatePost(ctx, Post{Title: "two", Status: "published", Views: 2})
	must(t, err)
	rb.expect(ctx, t, handlers.KindCreate)
	rc.expect(ctx, t, handlers.KindCreate)
	if n := ra.pending(); n != 0 {
		t.Fatalf("a got %d events after Unsubscribe", n)
	}

	// The last one unsubscribes from the server, by uid, and the server
	// acknowledges that uid.
	bUID := c.wireUID(t, func(f WireFrame) bool { return f.Coll == "posts" && !bytes.Contains(f.Data, []byte("_eq")) })
	mark = c.wire.Len()
	must(t, b.Unsubscribe())
	wctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	if _, err := c.wire.Wait(wctx, mark, func(f WireFrame) bool {
		return !f.Out && f.Type == protocol.TypeSubscription && f.Event == protocol.EventUnsubscribe && f.UID == bUID
	}); err != nil {
		t.Fatalf("no unsubscribe acknowledgement for %s: %v", bUID, err)
	}
	_, err = rest.CreatePost(ctx, Post{Title: "three", Status: "published", Views: 3})
	must(t, err)
	rc.expect(ctx, t, handlers.KindCreate)
	for _, f := range c.wire.Frames(mark) {
		if !f.Out && f.UID == bUID && f.Event == protocol.EventCreate {
			t.Fatalf("the server still delivers to %s after its unsubscribe: %s", bUID, f.Data)
		}
	}
	if n := rb.pending(); n != 0 {
		t.Fatalf("b got %d events after Unsubscribe", n)
	}

	// A scope ends its subscriptions together.
	sc := c.NewScope(ctx)
	for _, opts := range []manager.SubscribeOptions{
		{Collection: "tags"},
		{Collection: "posts", Event: protocol.EventDelete},
	} {
		r := newRecorder()
		_, err := sc.Subscribe(ctx, opts, r)
		must(t, err)
		r.expect(ctx, t, handlers.KindInit)
	}
	// A persistent subscription survives UnsubscribeAll; c does not.
	rp := newRecorder()
	_, err = c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Event: protocol.EventUpdate, UID: "persistent", Persistent: true}, rp)
	must(t, err)
	rp.expect(ctx, t, handlers.KindInit)
	if n := sc.Close(); n != 2 {
		t.Fatalf("scope closed %d subscriptions, want 2", n)
	}
	if n := c.UnsubscribeAll(); n != 1 {
		t.Fatalf("UnsubscribeAll ended %d, want 1 (c)", n)
	}
	if !c.HasSubscription("persistent") || len(c.ActiveSubscriptions()) != 1 {
		t.Fatalf("after UnsubscribeAll: %v", c.ActiveSubscriptions())
	}
	must(t, rest.UpdatePost(ctx, p.ID, map[string]any{"views": 10}))
	if ev := rp.expect(ctx, t, handlers.KindUpdate); ev.UID != "persistent" {
		t.Fatalf("update for %q", ev.UID)
	}

	// SendMessage refuses what would corrupt the registry.
	if err := c.SendMessage(ctx, protocol.UnsubscribeMessage{All: true}); !errors.Is(err, manager.ErrRefused) {
		t.Fatalf("SendMessage(unsubscribe all): %v, want ErrRefused", err)
	}

	// Wait until the unsubscribes queued above were written (the manager
	// sends them from its outbox, which frames sent through the Conn may
	// overtake), then check that nothing more went.
	wctx, cancelWait := within(ctx, eventTimeout)
	defer cancelWait()
	isUnsubscribe := func(f WireFrame) bool { return f.Out && f.Type == protocol.TypeUnsubscribe }
	for n, mark := 0, 0; n < 4; n++ {
		i, err := c.wire.Wait(wctx, mark, isUnsubscribe)
		if err != nil {
			t.Fatalf("%d unsubscribes written, want 4: %v", n, err)
		}
		mark = i + 1
	}
	if _, err := c.Conn().Ping(ctx); err != nil { // and a round trip for any extra one
		t.Fatal(err)
	}
	subs, unsubs := c.checkWire(t)
	// a+b shared one server subscription (b read its own init): 1
	// subscribe and 1 unsubscribe; c; the scope's 2; persistent.
	if subs != 5 || unsubs != 4 {
		t.Errorf("the manager sent %d subscribes and %d unsubscribes, want 5 and 4", subs, unsubs)
	}
}
