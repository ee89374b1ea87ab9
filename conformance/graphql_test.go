package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/graphql"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// The /graphql endpoint (docs/PROTOCOL.md §13), through package graphql,
// against both targets. The servers of the Default profile serve it with
// WEBSOCKETS_GRAPHQL_AUTH at its default, handshake.

func newGraphQL(t testing.TB, srv Server, auth conn.Auth) *graphql.Manager {
	t.Helper()
	m, err := graphql.New(&graphql.Config{
		URL:     srv.URL(),
		Auth:    auth,
		Backoff: conn.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second},
		Logger:  logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func TestGraphQLAuth(t *testing.T) { run(t, scenarioGraphQLAuth) }

func scenarioGraphQLAuth(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	cr := tg.Creds()
	for name, auth := range map[string]conn.Auth{
		"static token":   {Token: cr.AdminToken},
		"email+password": {Email: cr.AdminEmail, Password: cr.AdminPassword},
		"token source":   {TokenSource: func(context.Context) (string, error) { return cr.ReaderToken, nil }},
	} {
		cctx, cancel := within(ctx, eventTimeout)
		m := newGraphQL(t, srv, auth)
		if err := m.Connect(cctx); err != nil {
			t.Errorf("%s: Connect: %v", name, err)
		} else if m.State() != conn.StateConnected {
			t.Errorf("%s: state %v", name, m.State())
		}
		cancel()
	}

	cctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	if err := newGraphQL(t, srv, conn.Auth{Token: "not-a-token"}).Connect(cctx); !errors.Is(err, protocol.ErrAuthFailed) {
		t.Errorf("bad token: Connect = %v, want AUTH_FAILED (Directus's auth error frame)", err)
	}
	if err := newGraphQL(t, srv, conn.Auth{Email: cr.AdminEmail, Password: "wrong"}).Connect(cctx); err == nil {
		t.Error("bad password: Connect succeeded")
	}
	if err := newGraphQL(t, srv, conn.Auth{}).Connect(cctx); !errors.Is(err, graphql.ErrForbidden) {
		t.Errorf("no credential in handshake mode: Connect = %v, want the 4403 close", err)
	}

	// The reader may read posts and not tags: the tags subscription
	// does not exist for it.
	m := newGraphQL(t, srv, conn.Auth{Token: cr.ReaderToken})
	must(t, m.Connect(cctx))
	if _, err := m.Subscribe(cctx, graphql.SubscribeOptions{Collection: "tags", Query: &protocol.Query{Fields: []string{"id"}}}, newRecorder()); !isForbidden(err) {
		t.Errorf("reader on tags: Subscribe = %v, want FORBIDDEN", err)
	}
	if _, err := m.Subscribe(cctx, graphql.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Fields: []string{"id"}}}, newRecorder()); err != nil {
		t.Errorf("reader on posts: %v", err)
	}
}

func TestGraphQLLimits(t *testing.T) { run(t, scenarioGraphQLLimits) }

// What the endpoint cannot do is refused, not emulated.
func scenarioGraphQLLimits(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	m := newGraphQL(t, srv, conn.Auth{Token: tg.Creds().AdminToken})
	cctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	must(t, m.Connect(cctx))
	id := []string{"id"}
	for name, opts := range map[string]graphql.SubscribeOptions{
		"filter": {Collection: "posts", Query: &protocol.Query{Fields: id, Filter: map[string]any{"status": map[string]any{"_eq": "draft"}}}},
		"search": {Collection: "posts", Query: &protocol.Query{Fields: id, Search: "x"}},
		"limit":  {Collection: "posts", Query: &protocol.Query{Fields: id, Limit: -1}},
		"item":   {Collection: "posts", Item: 1, Query: &protocol.Query{Fields: id}},
		"init":   {Collection: "posts", Event: protocol.EventInit, Query: &protocol.Query{Fields: id}},
		"*":      {Collection: "posts", Query: &protocol.Query{Fields: []string{"*"}}},
	} {
		var ue *graphql.UnsupportedError
		if _, err := m.Subscribe(cctx, opts, newRecorder()); !errors.As(err, &ue) {
			t.Errorf("%s: Subscribe = %v, want *UnsupportedError", name, err)
		}
	}
	c := newPosts(t)
	if _, err := m.Replicate(cctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"title"}}, c); err == nil {
		t.Error("a replica without its key field was accepted")
	}
	if len(m.ActiveSubscriptions()) != 0 {
		t.Errorf("refusals left subscriptions: %v", m.ActiveSubscriptions())
	}
}

func TestGraphQLEvents(t *testing.T) { run(t, scenarioGraphQLEvents) }

// REST writes, single and batched, give one event per key.
func scenarioGraphQLEvents(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	m := newGraphQL(t, srv, conn.Auth{Token: tg.Creds().AdminToken})
	cctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	must(t, m.Connect(cctx))
	all, deletes := newRecorder(), newRecorder()
	_, err := m.Subscribe(cctx, graphql.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Fields: []string{"id", "title"}}}, all)
	must(t, err)
	_, err = m.Subscribe(cctx, graphql.SubscribeOptions{Collection: "posts", Event: protocol.EventDelete, Query: &protocol.Query{Fields: []string{"id"}}}, deletes)
	must(t, err)

	rest := srv.REST()
	ps, err := rest.CreatePosts(ctx, Post{Title: "a"}, Post{Title: "b"}, Post{Title: "c"})
	must(t, err)
	ids := []int64{ps[0].ID, ps[1].ID, ps[2].ID}
	row := func(id int64, title string) string { return fmt.Sprintf(`[{"id":"%d","title":"%s"}]`, id, title) }
	expectSet(ctx, t, all, "batch create", handlers.KindCreate, row(ids[0], "a"), row(ids[1], "b"), row(ids[2], "c"))

	must(t, rest.UpdatePosts(ctx, ids, map[string]any{"title": "u"}))
	expectSet(ctx, t, all, "batch update", handlers.KindUpdate, row(ids[0], "u"), row(ids[1], "u"), row(ids[2], "u"))
	must(t, rest.UpdatePost(ctx, ids[1], map[string]any{"title": "v"}))
	expectSet(ctx, t, all, "update by URL", handlers.KindUpdate, row(ids[1], "v"))

	must(t, rest.DeletePosts(ctx, ids[0], ids[1]))
	key := func(id int64) string { return fmt.Sprintf(`["%d"]`, id) }
	expectSet(ctx, t, all, "batch delete", handlers.KindDelete, key(ids[0]), key(ids[1]))
	must(t, rest.DeletePost(ctx, ids[2]))
	expectSet(ctx, t, all, "delete by URL", handlers.KindDelete, key(ids[2]))
	expectSet(ctx, t, deletes, "delete-only subscription", handlers.KindDelete, key(ids[0]), key(ids[1]), key(ids[2]))
	if n := deletes.pending(); n != 0 {
		t.Errorf("the delete-only subscription got %d more events", n)
	}
}

// expectSet takes len(want) events of kind and compares their data as a
// set: the events of one batch are dispatched concurrently by Directus.
func expectSet(ctx context.Context, t *testing.T, r *recorder, what string, kind handlers.Kind, want ...string) {
	t.Helper()
	ctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	var got []string
	for range want {
		ev := r.next(ctx, t)
		if ev.Kind != kind {
			t.Fatalf("%s: got a %v event (%s), want %v", what, ev.Kind, ev.Data, kind)
		}
		got = append(got, string(ev.Data))
	}
	sort.Strings(got)
	want = slices.Clone(want)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: events %q, want %q", what, got, want)
	}
}

func TestGraphQLReplicaRestart(t *testing.T) { run(t, scenarioGraphQLReplicaRestart) }

// A replica over /graphql equals GET /items/posts?limit=-1 after random
// writes and a server restart during them.
func scenarioGraphQLReplicaRestart(t *testing.T, tg Target) {
	ctx, cancel := context.WithTimeout(t.Context(), restartTimeout+scenarioTimeout)
	defer cancel()
	srv := tg.Server(t, Default)
	requireRestart(t, srv)
	must(t, srv.Reset(ctx))
	m := newGraphQL(t, srv, conn.Auth{Token: tg.Creds().AdminToken})
	states := m.WatchState(ctx)
	cctx, ccancel := within(ctx, eventTimeout)
	defer ccancel()
	must(t, m.Connect(cctx))
	c := newPosts(t)
	sub, err := m.Replicate(cctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title", "status", "views"}, Persistent: true}, c)
	must(t, err)
	must(t, c.WaitSynced(cctx))

	w := newWriter(srv.REST(), uint64(time.Now().UnixNano()))
	stopWriter := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, stopWriter, 0) })
	var once sync.Once
	stop := func() { once.Do(func() { close(stopWriter) }); wg.Wait() }
	defer stop()

	waitCtx, wcancel := within(ctx, eventTimeout)
	defer wcancel()
	must(t, w.waitWrites(waitCtx, 20))
	rctx, rcancel := within(ctx, restartTimeout)
	defer rcancel()
	must(t, srv.Restart(rctx))
	sawReconnecting := false
	for done := false; !done; {
		select {
		case sc := <-states:
			sawReconnecting = sawReconnecting || sc.To == conn.StateReconnecting
			done = sawReconnecting && sc.To == conn.StateConnected
		case <-rctx.Done():
			t.Fatal("the manager did not reconnect after the restart")
		}
	}
	must(t, w.waitWrites(rctx, 20))
	stop()
	t.Logf("writer: %d writes, %d failed", w.ok.Load(), w.failed.Load())
	rows, err := srv.REST().Posts(ctx)
	must(t, err)
	if d := converge(ctx, c, rows, postKey); d != "" {
		t.Fatalf("replica differs from the server after the restart (%d rows, replica %d): %s", len(rows), c.Len(), d)
	}
	// A resync re-reads the snapshot and changes nothing.
	must(t, sub.Resync(ctx))
	if d := converge(ctx, c, rows, postKey); d != "" {
		t.Fatalf("replica differs after Resync: %s", d)
	}
}

func TestGraphQLTokenLifetime(t *testing.T) { run(t, scenarioGraphQLTokenLifetime) }

// /graphql has no TOKEN_EXPIRED (docs/PROTOCOL.md §13.2): a socket that
// authenticated with a JWT keeps its identity past the token's exp, and
// its subscriptions keep delivering, without a reconnect.
func scenarioGraphQLTokenLifetime(t *testing.T, tg Target) {
	if testing.Short() {
		t.Skip("-short: waits out a token lifetime (15 s)")
	}
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Short)
	cr := tg.Creds()
	if cr.AdminPassword == "" {
		t.Skip("needs the admin's password for a JWT")
	}
	tok, err := srv.REST().Login(ctx, cr.AdminEmail, cr.AdminPassword)
	must(t, err)
	exp := jwtExp(tok.AccessToken)
	if exp.IsZero() {
		t.Fatal("the login's access token is not a JWT with exp")
	}
	m := newGraphQL(t, srv, conn.Auth{Token: tok.AccessToken})
	states := m.WatchState(ctx)
	cctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	must(t, m.Connect(cctx))
	rec := newRecorder()
	_, err = m.Subscribe(cctx, graphql.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Fields: []string{"title"}}}, rec)
	must(t, err)

	// Let the token expire, with a margin for clock rounding (exp has
	// one-second resolution).
	past := time.NewTimer(time.Until(exp) + 3*time.Second)
	defer past.Stop()
	select {
	case <-past.C:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	_, err = srv.REST().CreatePost(ctx, Post{Title: "after exp"})
	must(t, err)
	ev := rec.expect(ctx, t, handlers.KindCreate)
	if string(ev.Data) != `[{"title":"after exp"}]` {
		t.Fatalf("event %s", ev.Data)
	}
	for {
		select {
		case sc := <-states:
			if sc.To != conn.StateConnected && sc.To != conn.StateConnecting {
				t.Fatalf("the session changed state after exp: %v", sc)
			}
			continue
		default:
		}
		break
	}
}
