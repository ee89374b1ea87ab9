package conformance

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// StatusCount is one group of posts counted by status.
type StatusCount struct {
	Status string `json:"status"` // "" for the group of null
	Count  int64  `json:"count"`
}

func statusKey(g StatusCount) string { return g.Status }

// A replica of an aggregate (docs/PROTOCOL.md §5.5): Directus's events of
// an aggregate subscription count only the changed rows, so the manager
// reads the aggregate again after them; the replica equals the server's
// aggregate after every write, with no reconcile.
func TestAggregateReplica(t *testing.T) { run(t, scenarioAggregateReplica) }

func scenarioAggregateReplica(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
	counts := testutil.Must(store.New(store.Options[string, StatusCount]{Key: statusKey, Logger: logger(t)}))
	t.Cleanup(func() { _ = counts.Close() })
	q := &protocol.Query{Aggregate: map[string][]string{"count": {"*"}}, GroupBy: []string{"status"}}
	sub := subscribe(ctx, t, counts, c, manager.SubscribeOptions{Collection: "posts", Query: q})

	serverCounts := func() []StatusCount {
		var out []StatusCount
		must(t, srv.REST().do(ctx, http.MethodGet, "/items/posts?"+url.Values{"aggregate[count]": {"*"}, "groupBy[]": {"status"}}.Encode(), nil, &out))
		return out
	}
	check := func(what string) {
		t.Helper()
		wctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		want := serverCounts()
		if d := converge(wctx, counts, want, statusKey); d != "" {
			t.Fatalf("%s: the aggregate replica differs from the server's: %s", what, d)
		}
	}
	check("after the init")
	_, err := srv.REST().CreatePosts(ctx, Post{Title: "p1", Status: "published"}, Post{Title: "p2", Status: "published"}, Post{Title: "d1", Status: "draft"})
	must(t, err)
	check("after a batch create")
	rows, err := srv.REST().Posts(ctx)
	must(t, err)
	must(t, srv.REST().UpdatePost(ctx, rows[0].ID, map[string]any{"status": "draft"}))
	check("after an update that moves a row between groups")
	must(t, srv.REST().DeletePost(ctx, rows[1].ID))
	check("after a delete")
	if n := sub.Stats().ResyncsByCause[manager.CauseAggregate]; n == 0 {
		t.Fatal("no aggregate was read again")
	}
	if st := counts.Status(); st.Err != nil {
		t.Fatalf("status %+v", st)
	}
}
