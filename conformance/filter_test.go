package conformance

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/filter"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// filterRows are seeded for the evaluator's oracle: nulls, an empty string,
// case variants, LIKE wildcards in the data, a number as text.
var filterRows = []map[string]any{
	{"title": "Hello World", "status": "published", "views": 12},
	{"title": "hello world", "status": "draft", "views": 5},
	{"title": nil, "status": "archived", "views": nil},
	{"title": "", "status": nil, "views": 0},
	{"title": "a_b%c", "status": "published", "views": 100},
	{"title": "10", "status": "draft", "views": 7},
	{"title": "Zeta", "status": "Published", "views": -3},
}

// filterCases are filters over filterRows. sure: the evaluator must decide
// every row (no Unknown); the others may leave rows to the server, where
// databases differ (LIKE's case folding, its wildcards).
var filterCases = []struct {
	filter string
	sure   bool
}{
	{`{"status":{"_eq":"published"}}`, true},
	{`{"status":"published"}`, true}, // a bare value is _eq
	{`{"views":{"_eq":null}}`, true},
	{`{"views":{"_neq":null}}`, true},
	{`{"status":{"_neq":"draft"}}`, true},
	{`{"views":{"_gt":"5"}}`, true},
	{`{"views":{"_gte":5}}`, true},
	{`{"views":{"_lt":7}}`, true},
	{`{"views":{"_lte":"0"}}`, true},
	{`{"views":{"_eq":"12"}}`, true},
	{`{"views":{"_neq":12}}`, true},
	{`{"views":{"_in":[5,"12",100]}}`, true},
	{`{"views":{"_nin":[5,7]}}`, true},
	{`{"views":{"_between":[0,"12"]}}`, true},
	{`{"views":{"_nbetween":[1,99]}}`, true},
	{`{"views":{"_null":true}}`, true},
	{`{"title":{"_nnull":true}}`, true},
	{`{"status":{"_null":false}}`, true},
	{`{"title":{"_empty":true}}`, true},
	{`{"title":{"_nempty":true}}`, true},
	{`{"title":{"_eq":"10"}}`, true},
	{`{"title":{"_contains":"xyz"}}`, true},
	{`{"title":{"_contains":"World"}}`, false},
	{`{"title":{"_ncontains":"o W"}}`, false},
	{`{"title":{"_icontains":"WORLD"}}`, true},
	{`{"title":{"_starts_with":"Hello"}}`, false},
	{`{"title":{"_nstarts_with":"Z"}}`, true},
	{`{"title":{"_istarts_with":"HELLO"}}`, true},
	{`{"title":{"_ends_with":"c"}}`, true},
	{`{"title":{"_nends_with":"d"}}`, true},
	{`{"title":{"_iends_with":"WORLD"}}`, true},
	{`{"title":{"_contains":"_b"}}`, false},
	{`{"_or":[{"status":{"_eq":"draft"}},{"views":{"_gt":50}}]}`, true},
	{`{"_and":[{"status":{"_nnull":true}},{"views":{"_lt":10}}]}`, true},
	{`{"status":{"_in":["published","archived"]},"views":{"_gte":12}}`, true},
}

// F1: the server's REST answer for a filter is the oracle of the store's
// local evaluator (internal/filter): every row it says matches is in the
// answer, every row it says does not is not. Then F2: a filtered replica,
// with no reconcile, loses a row that an update moved out of its filter at
// that update (Directus sends the replica nothing for it, docs/PROTOCOL.md
// §5.2), and gains one that an update moved in (an update event, R3).
func TestFilterExits(t *testing.T) { run(t, scenarioFilterExits) }

func scenarioFilterExits(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	rest := srv.REST()
	must(t, rest.do(ctx, http.MethodPost, "/items/posts", filterRows, nil))
	rows, err := List[map[string]json.RawMessage](ctx, rest, "posts", nil)
	must(t, err)
	if len(rows) != len(filterRows) {
		t.Fatalf("seeded %d rows, read %d", len(filterRows), len(rows))
	}
	idOf := func(row map[string]json.RawMessage) int64 {
		var id int64
		if err := json.Unmarshal(row["id"], &id); err != nil {
			t.Fatalf("id of %v: %v", row, err)
		}
		return id
	}
	decided := 0
	for _, fc := range filterCases {
		f, err := filter.ParseJSON([]byte(fc.filter))
		if err != nil {
			t.Fatalf("%s: %v", fc.filter, err)
		}
		answer, err := List[map[string]json.RawMessage](ctx, rest, "posts", url.Values{"filter": {fc.filter}})
		if err != nil {
			t.Fatalf("REST read with %s: %v", fc.filter, err)
		}
		in := map[int64]bool{}
		for _, r := range answer {
			in[idOf(r)] = true
		}
		for _, row := range rows {
			id := idOf(row)
			switch got := f.MatchFields(row); {
			case got == filter.Unknown && fc.sure:
				t.Errorf("%s on row %d %s: the evaluator cannot tell; it should", fc.filter, id, rowText(row))
			case got == filter.Unknown:
				t.Logf("%s on row %d %s: left to the server, which says %v", fc.filter, id, rowText(row), in[id])
			case (got == filter.Yes) != in[id]:
				t.Errorf("%s on row %d %s: the evaluator says %v, the server's answer %v", fc.filter, id, rowText(row), got, in[id])
			default:
				decided++
			}
		}
	}
	if decided == 0 {
		t.Fatal("the evaluator decided no row")
	}

	// F2. A filter with a number given as a string, as REST carries them.
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
	q := &protocol.Query{Limit: -1, Filter: map[string]any{"views": map[string]any{"_gt": "5"}}}
	posts := newPosts(t) // no reconcile interval
	subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts", Query: q})
	if st := posts.Status(); !st.FilterExits {
		t.Fatalf("filter exits not followed: %+v", st)
	}
	filtered := url.Values{"filter": {`{"views":{"_gt":"5"}}`}}
	want, err := List[Post](ctx, rest, "posts", filtered)
	must(t, err)
	mustEqual(t, "the filtered replica", posts, want, postKey)
	var leaving, entering int64
	for _, p := range want {
		if p.Title == "Hello World" {
			leaving = p.ID
		}
	}
	for _, row := range rows {
		if string(row["title"]) == `"hello world"` {
			entering = idOf(row)
		}
	}
	exits := make(chan store.Change[int64, Post], 16)
	defer posts.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		if ch.Op == store.OpDelete {
			exits <- ch
		}
	}))()
	must(t, rest.UpdatePost(ctx, leaving, map[string]any{"views": 1}))
	wctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	select {
	case ch := <-exits:
		if ch.Key != leaving || !ch.FilterExit {
			t.Fatalf("delete %+v, want the filter exit of %d", ch, leaving)
		}
	case <-wctx.Done():
		t.Fatalf("row %d left the filter and is still held: %+v", leaving, posts.Snapshot())
	}
	must(t, rest.UpdatePost(ctx, entering, map[string]any{"views": 6}))
	want, err = List[Post](ctx, rest, "posts", filtered)
	must(t, err)
	if d := converge(ctx, posts, want, postKey); d != "" {
		t.Fatalf("the replica never equalled the server's filtered rows: %s", d)
	}
	if st := posts.Stats(); st.Reconciles != 0 || st.FilterExits != 1 {
		t.Fatalf("stats %+v, want one filter exit and no reconcile", st)
	}
}

func rowText(row map[string]json.RawMessage) string {
	return fmt.Sprintf("(title %s, status %s, views %s)", row["title"], row["status"], row["views"])
}
