package conformance

import (
	"errors"
	"net/url"
	"strconv"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/items"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Typed items requests over the WebSocket (docs/PROTOCOL.md §6): what each
// action returns decodes into the row type, and refusals are typed.
func TestTypedItems(t *testing.T) { run(t, scenarioTypedItems) }

func scenarioTypedItems(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})

	a, err := items.Create(ctx, c, "posts", Post{Title: "typed a", Status: "draft", Views: 1})
	must(t, err)
	if a.ID == 0 || a.Title != "typed a" {
		t.Fatalf("Create returned %+v", a)
	}
	more, err := items.CreateMany(ctx, c, "posts", []Post{{Title: "typed b", Status: "published"}, {Title: "typed c", Status: "published"}})
	must(t, err)
	if len(more) != 2 || more[0].ID == 0 || more[1].ID == 0 {
		t.Fatalf("CreateMany returned %+v", more)
	}
	one, err := items.ReadOne[Post](ctx, c, "posts", a.ID, nil)
	must(t, err)
	if one != a {
		t.Fatalf("ReadOne returned %+v, want %+v", one, a)
	}
	up, err := items.Update[Post](ctx, c, "posts", a.ID, map[string]any{"views": 5})
	must(t, err)
	if up.Views != 5 || up.Title != a.Title {
		t.Fatalf("Update returned %+v", up)
	}
	ups, err := items.UpdateMany[Post](ctx, c, "posts", []any{more[0].ID, more[1].ID}, map[string]any{"views": 9})
	must(t, err)
	if len(ups) != 2 || ups[0].Views != 9 || ups[1].Views != 9 {
		t.Fatalf("UpdateMany returned %+v", ups)
	}
	must(t, items.Delete(ctx, c, "posts", more[0].ID))
	published, err := items.Read[Post](ctx, c, "posts", &protocol.Query{Filter: map[string]any{"status": map[string]any{"_eq": "published"}}, Sort: []string{"id"}, Limit: -1})
	must(t, err)
	if len(published) != 1 || published[0].ID != more[1].ID || published[0].Views != 9 {
		t.Fatalf("Read published returned %+v", published)
	}
	rows, err := srv.REST().Posts(ctx)
	must(t, err)
	all, err := items.Read[Post](ctx, c, "posts", &protocol.Query{Sort: []string{"id"}, Limit: -1})
	must(t, err)
	if d := diff(postsByID(all), rows, postKey); d != "" {
		t.Fatalf("items read differs from REST: %s", d)
	}
	// A missing id reads as FORBIDDEN, not as not found.
	if _, err := items.ReadOne[Post](ctx, c, "posts", more[0].ID, nil); !isForbidden(err) {
		t.Fatalf("ReadOne of a deleted id: %v, want FORBIDDEN", err)
	}
	// Rows that do not decode into the type are a DecodeError.
	var de *items.DecodeError
	if _, err := items.Read[int](ctx, c, "posts", nil); !errors.As(err, &de) {
		t.Fatalf("posts read as ints: %v, want a DecodeError", err)
	}
	if tg.Creds().ReaderToken != "" {
		r := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().ReaderToken}, clientOpts{})
		if _, err := items.Create(ctx, r, "posts", Post{Title: "by the reader"}); !isForbidden(err) {
			t.Fatalf("Create as the reader: %v, want FORBIDDEN", err)
		}
	}
}

// A filter value of the wrong type for its field is refused with
// INVALID_QUERY, on a subscription and on an items read alike.
func TestInvalidQuery(t *testing.T) { run(t, scenarioInvalidQuery) }

func scenarioInvalidQuery(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
	bad := &protocol.Query{Filter: map[string]any{"id": map[string]any{"_eq": "notanumber"}}}
	_, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Query: bad}, handlers.HandlerFunc(func(handlers.Event) error { return nil }))
	if !errors.Is(err, protocol.ErrInvalidQuery) {
		t.Fatalf("subscribe with id _eq \"notanumber\": %v, want INVALID_QUERY", err)
	}
	if _, err := items.Read[Post](ctx, c, "posts", bad); !errors.Is(err, protocol.ErrInvalidQuery) {
		t.Fatalf("items read with id _eq \"notanumber\": %v, want INVALID_QUERY", err)
	}
	if n := len(c.ActiveSubscriptions()); n != 0 {
		t.Fatalf("%d subscriptions left behind by the refusal", n)
	}
	// A number in a string is a number: REST query strings carry them so.
	seeded := seedPost(ctx, t, srv, "invalid query")
	id := strconv.FormatInt(seeded.ID, 10)
	rows, err := List[Post](ctx, srv.REST(), "posts", url.Values{"filter[id][_eq]": {id}})
	must(t, err)
	if len(rows) != 1 || rows[0].ID != seeded.ID {
		t.Fatalf("REST filter id _eq %q: %+v", id, rows)
	}
	got, err := items.Read[Post](ctx, c, "posts", &protocol.Query{Filter: map[string]any{"id": map[string]any{"_in": []any{id}}}})
	must(t, err)
	if len(got) != 1 || got[0].ID != seeded.ID {
		t.Fatalf("items read id _in [%q]: %+v", id, got)
	}
}
