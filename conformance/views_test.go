package conformance

import (
	"cmp"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// Sorted windows (store.View) over a filtered replica, after random writes
// of every kind, equal the server's own sorted, limited answer:
// GET /items/posts?filter=…&sort=-views,id&limit=N for each N, and the
// same ascending. The sort is on integers with the key as the tiebreak, so
// the server's order and the comparison's are one order (string collation
// is the database's, see docs/PROTOCOL.md §5.5).
func TestSortedViews(t *testing.T) { run(t, scenarioSortedViews) }

func scenarioSortedViews(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	rest := srv.REST()
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
	const filter = `{"status":{"_eq":"published"}}`
	posts := newPosts(t)
	subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts",
		Query: &protocol.Query{Limit: -1, Filter: map[string]any{"status": map[string]any{"_eq": "published"}}}})

	byViewsDesc := func(a, b Post) int { return cmp.Or(cmp.Compare(b.Views, a.Views), cmp.Compare(a.ID, b.ID)) }
	byViewsAsc := func(a, b Post) int { return cmp.Or(cmp.Compare(a.Views, b.Views), cmp.Compare(a.ID, b.ID)) }
	type window struct {
		sort  string
		limit int
		view  *store.View[int64, Post]
	}
	var windows []window
	for _, limit := range []int{1, 5, 20} {
		windows = append(windows,
			window{"-views,id", limit, testutil.Must(store.NewView(posts, byViewsDesc, limit))},
			window{"views,id", limit, testutil.Must(store.NewView(posts, byViewsAsc, limit))})
	}
	for _, w := range windows {
		defer w.view.Close()
	}

	// Rows the writer leaves alone, so that every window is full.
	seeded := make([]Post, 30)
	for i := range seeded {
		seeded[i] = Post{Title: fmt.Sprintf("seed %d", i), Status: "published", Views: int64(i*37%50) * 20}
	}
	_, err := rest.CreatePosts(ctx, seeded...)
	must(t, err)

	w := newWriter(rest, 11)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, stop, 20) })
	wctx, cancel := within(ctx, restartTimeout)
	err = w.waitWrites(wctx, 150)
	cancel()
	close(stop)
	wg.Wait()
	must(t, err)

	// The replica first: a view is only as right as the rows under it. A
	// reconcile settles what Directus's own event races may have left
	// (store's package documentation); the windows are what is tested.
	must(t, posts.Reconcile(ctx))
	want, err := List[Post](ctx, rest, "posts", url.Values{"filter": {filter}})
	must(t, err)
	if d := converge(ctx, posts, want, postKey); d != "" {
		t.Fatalf("the replica never equalled the server's rows: %s", d)
	}
	if len(want) < 20 {
		t.Fatalf("only %d published rows: the windows are not tested full", len(want))
	}
	for _, win := range windows {
		top, err := List[Post](ctx, rest, "posts", url.Values{"filter": {filter}, "sort": {win.sort}, "limit": {strconv.Itoa(win.limit)}})
		must(t, err)
		if got := win.view.Rows(); fmt.Sprint(got) != fmt.Sprint(top) {
			t.Errorf("sort %s limit %d: the view holds %v, the server answers %v", win.sort, win.limit, got, top)
		}
	}
}
