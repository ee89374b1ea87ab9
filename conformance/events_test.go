package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// R1, R5, R6, R8, R9, P4: events of REST writes, batches included, and
// delete keys as strings (URL path) and numbers (JSON body), normalised by
// handlers and applied by a store.
func TestEvents(t *testing.T) { run(t, scenarioEvents) }

func scenarioEvents(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	rest := srv.REST()
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})

	raw := newRecorder()
	_, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Limit: -1}, UID: "raw"}, raw)
	must(t, err)
	raw.expect(ctx, t, handlers.KindInit)
	// The replica's query equals raw's: they share one server
	// subscription, the replica reads its own init, and raw sees nothing of
	// it.
	posts := newPosts(t)
	subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts"})

	// R5: a batch create of three is three create events, in key order.
	created, err := rest.CreatePosts(ctx,
		Post{Title: "b1", Status: "draft", Views: 1},
		Post{Title: "b2", Status: "draft", Views: 2},
		Post{Title: "b3", Status: "published", Views: 3})
	must(t, err)
	if len(created) != 3 {
		t.Fatalf("batch create returned %d posts", len(created))
	}
	for _, want := range created {
		ev := raw.expect(ctx, t, handlers.KindCreate)
		items, err := handlers.Items[Post](ev)
		if err != nil || len(items) != 1 || items[0] != want {
			t.Fatalf("create event %s, want one item %+v", ev.Data, want)
		}
	}
	// R6: a batch update of three keys is one update event with three items.
	ids := []int64{created[0].ID, created[1].ID, created[2].ID}
	must(t, rest.UpdatePosts(ctx, ids, map[string]any{"status": "published", "views": 9}))
	ev := raw.expect(ctx, t, handlers.KindUpdate)
	items, err := handlers.Items[Post](ev)
	if err != nil || len(items) != 3 {
		t.Fatalf("batch update event %s, want three items", ev.Data)
	}
	for i, it := range items {
		if it.ID != ids[i] || it.Status != "published" || it.Views != 9 {
			t.Fatalf("batch update item %d: %+v", i, it)
		}
	}

	// R8: DELETE /items/posts/:id sends the key as a string.
	must(t, rest.DeletePost(ctx, ids[0]))
	ev = raw.expect(ctx, t, handlers.KindDelete)
	if want := fmt.Sprintf(`["%d"]`, ids[0]); string(ev.Data) != want {
		t.Fatalf("delete by URL: data %s, want %s", ev.Data, want)
	}
	checkKeys(t, ev, ids[0])

	// R9: DELETE /items/posts with a JSON array sends numbers.
	must(t, rest.DeletePosts(ctx, ids[1], ids[2]))
	ev = raw.expect(ctx, t, handlers.KindDelete)
	if want := fmt.Sprintf(`[%d,%d]`, ids[1], ids[2]); string(ev.Data) != want {
		t.Fatalf("delete by body: data %s, want %s", ev.Data, want)
	}
	checkKeys(t, ev, ids[1], ids[2])

	// A delete that names no key sends nothing: Directus skips events whose
	// data is an empty array. The next event is the next write's.
	must(t, rest.DeletePosts(ctx))
	// R1: a single create.
	single, err := rest.CreatePost(ctx, Post{Title: "single", Status: "published", Views: 4})
	must(t, err)
	ev = raw.expect(ctx, t, handlers.KindCreate)
	if items, _ := handlers.Items[Post](ev); len(items) != 1 || items[0] != single {
		t.Fatalf("single create event %s, want %+v", ev.Data, single)
	}

	// The store applied all of it: only "single" is left.
	rows, err := rest.Posts(ctx)
	must(t, err)
	if len(rows) != 1 || rows[0] != single {
		t.Fatalf("server rows %+v, want only %+v", rows, single)
	}
	if d := converge(ctx, posts, rows, postKey); d != "" {
		t.Fatalf("replica of posts: %s", d)
	}
	if n := raw.pending(); n != 0 {
		t.Fatalf("%d unexpected events", n)
	}

	// P4: uuid keys are strings in every form.
	tags := newTags(t)
	subscribe(ctx, t, tags, c, manager.SubscribeOptions{Collection: "tags"})
	tag, err := rest.CreateTag(ctx, "uuid keyed")
	must(t, err)
	if d := converge(ctx, tags, []Tag{tag}, tagKey); d != "" {
		t.Fatalf("replica of tags after create: %s", d)
	}
	must(t, rest.DeleteTag(ctx, tag.ID))
	if d := converge(ctx, tags, nil, tagKey); d != "" {
		t.Fatalf("replica of tags after delete: %s", d)
	}
}

// checkKeys checks that handlers normalise the keys of a delete event to
// the keys of the integers ids, whatever their JSON type.
func checkKeys(t *testing.T, ev handlers.Event, ids ...int64) {
	t.Helper()
	keys, err := handlers.Keys(ev)
	if err != nil || len(keys) != len(ids) {
		t.Fatalf("Keys(%s) = %v, %v", ev.Data, keys, err)
	}
	for i, id := range ids {
		want, _ := handlers.KeyOf(id)
		if keys[i] != want {
			t.Fatalf("key %d of %s normalised to %q, want %q", i, ev.Data, keys[i], want)
		}
	}
}

// S6, R3, R7, R10: a single-item subscription. Its data is one object, its
// delete a bare string key; and Directus never sends it updates or deletes
// whose keys arrive as JSON numbers (a batch PATCH or DELETE): the replica
// keeps the old row until a reconcile, which the library cannot avoid but
// corrects.
func TestSingleItem(t *testing.T) { run(t, scenarioSingleItem) }

func scenarioSingleItem(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	p := seedPost(ctx, t, srv, "single item")
	rest := srv.REST()
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})

	// The item subscription first: Directus serves a connection's
	// subscriptions in creation order, so whatever it sends the item
	// subscription for a write is on the wire before what it sends the
	// collection subscription made after it.
	item := newPosts(t)
	subscribe(ctx, t, item, c, manager.SubscribeOptions{Collection: "posts", Item: p.ID})
	if got, ok := item.Get(p.ID); !ok || got != p || item.Len() != 1 {
		t.Fatalf("item replica after init: %+v (%v), want %+v", got, ok, p)
	}
	itemUID := c.wireUID(t, func(f WireFrame) bool { return f.Item != nil })
	all := newPosts(t)
	subscribe(ctx, t, all, c, manager.SubscribeOptions{Collection: "posts"})
	title := func(k int64, want string) func() bool {
		return func() bool { r, ok := all.Get(k); return ok && r.Title == want }
	}

	// R3/R10: an update by URL path (string key) reaches it, as an object.
	must(t, rest.UpdatePost(ctx, p.ID, map[string]any{"title": "by url"}))
	wctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	must(t, item.WaitFor(wctx, func() bool { r, _ := item.Get(p.ID); return r.Title == "by url" }))

	// R7: a batch PATCH names the key as a JSON number; the collection
	// subscription sees it, the item subscription gets nothing.
	mark := c.wire.Len()
	must(t, rest.UpdatePosts(ctx, []int64{p.ID}, map[string]any{"title": "by batch"}))
	must(t, all.WaitFor(wctx, title(p.ID, "by batch")))
	for _, f := range c.wire.Frames(mark) {
		if !f.Out && f.UID == itemUID {
			t.Fatalf("Directus sent the item subscription %s: the numeric-key bug (R7) is gone? Update the notes.", f.Data)
		}
	}
	if r, _ := item.Get(p.ID); r.Title != "by url" {
		t.Fatalf("item replica holds %q without an event", r.Title)
	}
	t.Logf("R7: after a batch PATCH the item replica holds %q while the server has %q, until a reconcile", "by url", "by batch")
	reconcile(ctx, t, item)
	if r, _ := item.Get(p.ID); r.Title != "by batch" {
		t.Fatalf("item replica after reconcile: %+v", r)
	}

	// R10: the delete of the item is a bare string key.
	itemUID = c.wireUID(t, func(f WireFrame) bool { return f.Item != nil })
	mark = c.wire.Len()
	must(t, rest.DeletePost(ctx, p.ID))
	must(t, item.WaitFor(wctx, func() bool { return item.Len() == 0 }))
	i, err := c.wire.Wait(wctx, mark, func(f WireFrame) bool { return !f.Out && f.UID == itemUID && f.Event == protocol.EventDelete })
	must(t, err)
	var frame struct{ Data json.RawMessage }
	must(t, json.Unmarshal(c.wire.Frames(i)[0].Data, &frame))
	if want := fmt.Sprintf(`"%d"`, p.ID); !bytes.Equal(frame.Data, []byte(want)) {
		t.Fatalf("item delete data %s, want %s", frame.Data, want)
	}

	// The same bug hits deletes: a batch delete names the key as a JSON
	// number, so the item subscription never hears of it. Its reconcile is
	// then refused (FORBIDDEN: the item is gone), which empties the replica.
	p2, err := rest.CreatePost(ctx, Post{Title: "batch deleted", Status: "draft", Views: 2})
	must(t, err)
	item2 := newPosts(t)
	sub2 := subscribe(ctx, t, item2, c, manager.SubscribeOptions{Collection: "posts", Item: p2.ID})
	item2UID := c.wireUID(t, func(f WireFrame) bool { return f.Item != nil })
	after := newPosts(t) // after item2: see above
	subscribe(ctx, t, after, c, manager.SubscribeOptions{Collection: "posts"})
	mark = c.wire.Len()
	must(t, rest.DeletePosts(ctx, p2.ID))
	must(t, after.WaitFor(wctx, func() bool { _, ok := after.Get(p2.ID); return !ok }))
	for _, f := range c.wire.Frames(mark) {
		if !f.Out && f.UID == item2UID {
			t.Fatalf("Directus sent the item subscription %s for a batch delete", f.Data)
		}
	}
	if _, ok := item2.Get(p2.ID); !ok {
		t.Fatal("the item replica lost its row without an event")
	}
	if err := item2.Reconcile(wctx); !errors.Is(err, manager.ErrResyncRefused) {
		t.Fatalf("reconcile of a deleted item: %v, want ErrResyncRefused", err)
	}
	if item2.Len() != 0 || sub2.State() != manager.StateFailed {
		t.Fatalf("after the refused reconcile: replica %v, subscription %s", item2.Keys(), sub2.State())
	}
}

// R2, R3, R4, R8: a filtered replica. An item leaving the filter sends no
// event (there is no leave event); with filter exits off, the replica keeps
// it and Reconcile removes it (TestFilterExits has the default, which
// removes it at once). Entering sends an update; deletes reach the filtered
// subscription even for rows it never held.
func TestFilterExit(t *testing.T) { run(t, scenarioFilterExit) }

func scenarioFilterExit(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	rest := srv.REST()
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})

	pub := testutil.Must(store.New(store.Options[int64, Post]{Key: postKey, Logger: logger(t), FilterExits: store.FilterExitsOff}))
	defer pub.Close()
	subscribe(ctx, t, pub, c, manager.SubscribeOptions{Collection: "posts", Query: published})
	pubUID := c.wireUID(t, func(f WireFrame) bool { return f.Coll == "posts" })
	all := newPosts(t) // after pub: see TestSingleItem
	subscribe(ctx, t, all, c, manager.SubscribeOptions{Collection: "posts"})
	has := func(k int64, status string) func() bool {
		return func() bool { r, ok := all.Get(k); return ok && r.Status == status }
	}
	wctx, cancel := within(ctx, eventTimeout)
	defer cancel()

	p, err := rest.CreatePost(ctx, Post{Title: "in", Status: "published", Views: 1})
	must(t, err)
	must(t, pub.WaitFor(wctx, func() bool { _, ok := pub.Get(p.ID); return ok }))

	// R2: a draft is not sent to the filtered subscription.
	mark := c.wire.Len()
	d, err := rest.CreatePost(ctx, Post{Title: "draft", Status: "draft", Views: 2})
	must(t, err)
	must(t, all.WaitFor(wctx, has(d.ID, "draft")))
	noFrame(t, c, mark, pubUID, "a draft's create")

	// R4: leaving the filter sends nothing; the replica holds the row.
	mark = c.wire.Len()
	must(t, rest.UpdatePost(ctx, p.ID, map[string]any{"status": "draft"}))
	must(t, all.WaitFor(wctx, has(p.ID, "draft")))
	noFrame(t, c, mark, pubUID, "an update out of the filter")
	if r, ok := pub.Get(p.ID); !ok || r.Status != "published" {
		t.Fatalf("filtered replica: %+v (%v); without an event it should still hold the published row", r, ok)
	}
	reconcile(ctx, t, pub)
	if _, ok := pub.Get(p.ID); ok || pub.Len() != 0 {
		t.Fatalf("filtered replica after reconcile holds %v", pub.Keys())
	}

	// R3: entering the filter is an update.
	must(t, rest.UpdatePost(ctx, p.ID, map[string]any{"status": "published"}))
	must(t, pub.WaitFor(wctx, func() bool { r, ok := pub.Get(p.ID); return ok && r.Status == "published" }))

	// R8: deletes ignore the filter: the draft's delete reaches pub too,
	// and the store ignores the key it does not hold.
	pubUID = c.wireUID(t, func(f WireFrame) bool { return f.Coll == "posts" && bytes.Contains(f.Data, []byte("_eq")) })
	mark = c.wire.Len()
	must(t, rest.DeletePost(ctx, d.ID))
	if _, err := c.wire.Wait(wctx, mark, func(f WireFrame) bool {
		return !f.Out && f.UID == pubUID && f.Event == protocol.EventDelete
	}); err != nil {
		t.Fatalf("the filtered subscription got no delete for a row it never held: %v", err)
	}
	must(t, all.WaitFor(wctx, func() bool { _, ok := all.Get(d.ID); return !ok }))
	rows, err := List[Post](ctx, rest, "posts", map[string][]string{"filter[status][_eq]": {"published"}})
	must(t, err)
	mustEqual(t, "filtered replica", pub, rows, postKey)
}

// noFrame fails if the server sent anything for uid since mark.
func noFrame(t *testing.T, c *client, mark int, uid, what string) {
	t.Helper()
	for _, f := range c.wire.Frames(mark) {
		if !f.Out && f.UID == uid {
			t.Fatalf("%s sent the filtered subscription %s", what, f.Data)
		}
	}
}

// Writes that emit no event (a Flow without "emit events", raw SQL) are
// corrected by a reconcile. A real Directus emits an event for every REST
// write, so this runs on directustest only.
func TestQuietWrites(t *testing.T) { run(t, scenarioQuietWrites) }

func scenarioQuietWrites(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	q := srv.Quiet()
	if q == nil {
		t.Skip("a real Directus emits events for every REST write; writes without events need a Flow with \"emit events\" off or raw SQL")
	}
	p := seedPost(ctx, t, srv, "loud")
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
	posts := newPosts(t)
	subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts"})

	_, err := q.Create("posts", map[string]any{"title": "quiet", "status": "draft", "views": 0})
	must(t, err)
	_, err = q.Update("posts", []any{p.ID}, map[string]any{"title": "quietly changed"})
	must(t, err)
	// A loud write after them: once its event is applied, the quiet ones
	// would have been too.
	loud, err := srv.REST().CreatePost(ctx, Post{Title: "loud again", Status: "draft"})
	must(t, err)
	wctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	must(t, posts.WaitFor(wctx, func() bool { _, ok := posts.Get(loud.ID); return ok }))
	rows, err := srv.REST().Posts(ctx)
	must(t, err)
	if diff(posts.Snapshot(), rows, postKey) == "" {
		t.Fatal("the replica saw writes that emitted no event")
	}
	reconcile(ctx, t, posts)
	mustEqual(t, "replica after reconcile", posts, rows, postKey)
}
