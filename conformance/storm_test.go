package conformance

// Retry storms against each target: a condition that cannot heal by itself
// (the item of a single-item replica deleted, the reader's read permission
// revoked) costs the server at most the backoff's attempts, and the
// replica's status says why it stopped.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// stormRetry is the replicas' retry backoff here: 500 ms doubling, no
// jitter, so the budget over stormWindow is exact: reconciles brought
// forward at 0.5, 1.5 and 3.5 s after the first refusal, one more allowed
// for the refusal itself.
var stormRetry = conn.Backoff{Initial: 500 * time.Millisecond, Max: time.Minute, Jitter: -1}

const (
	stormWindow = 5 * time.Second
	stormBudget = 4
	// Under -short (the quick loop) the window is 2 s: the refusal and the
	// reconciles at 0.5 and 1.5 s.
	shortStormWindow = 2 * time.Second
	shortStormBudget = 3
)

// stormLimits returns the window watched and the reads allowed in it.
func stormLimits() (time.Duration, int) {
	if testing.Short() {
		return shortStormWindow, shortStormBudget
	}
	return stormWindow, stormBudget
}

func stormPosts(t testing.TB, seen *testutil.Errors) *store.Collection[int64, Post] {
	c := testutil.Must(store.New(store.Options[int64, Post]{Key: postKey, Logger: logger(t),
		ReconcileInterval: time.Hour, Retry: stormRetry, OnError: seen.On}))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readsSent counts the frames c sent from mark on that make the server run
// a query: subscribes and items requests.
func readsSent(c *client, mark int) int {
	n := 0
	for _, f := range c.wire.Frames(mark) {
		if f.Out && (f.Type == protocol.TypeSubscribe || f.Type == protocol.TypeItems) {
			n++
		}
	}
	return n
}

// watchStorm fails t when c sends more reads over stormWindow than the
// backoff allows.
func watchStorm(t *testing.T, c *client) {
	t.Helper()
	span, budget := stormLimits()
	mark := c.wire.Len()
	window := time.NewTimer(span)
	<-window.C // the storm's absence has no signal: a window is the measure
	n := readsSent(c, mark)
	t.Logf("%d reads sent in %v", n, span)
	if n > budget {
		t.Fatalf("%d reads sent in %v, the backoff allows %d", n, span, budget)
	}
}

func TestStormItemDeleted(t *testing.T) { run(t, scenarioStormItemDeleted) }

func scenarioStormItemDeleted(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	seeded := seedPost(ctx, t, srv, "doomed")
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
	var seen testutil.Errors
	posts := stormPosts(t, &seen)
	sub := subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts", Item: seeded.ID, Persistent: true})
	must(t, srv.REST().DeletePosts(ctx, seeded.ID))
	if err := posts.Reconcile(ctx); !errors.Is(err, manager.ErrResyncRefused) {
		t.Fatalf("Reconcile after the item was deleted: %v, want a refused resync", err)
	}
	watchStorm(t, c)
	st := posts.Status()
	if !errors.Is(st.Err, store.ErrRefused) || st.Rows != 0 {
		t.Fatalf("status %+v, want refused with no rows", st)
	}
	if n := seen.Count(store.ErrRefused); n != 1 {
		t.Fatalf("the refusal was reported %d times, want once", n)
	}
	if s := sub.State(); s != manager.StateFailed {
		t.Fatalf("subscription %v, want failed", s)
	}
}

func TestStormPermissionRevoked(t *testing.T) { run(t, scenarioStormPermissionRevoked) }

func scenarioStormPermissionRevoked(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	if tg.Creds().ReaderToken == "" {
		missing(t, loadRealEnv(), "DIRECTUS_READER_TOKEN is not set")
	}
	seedPost(ctx, t, srv, "before the revocation")
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().ReaderToken}, clientOpts{})
	var seen testutil.Errors
	posts := stormPosts(t, &seen)
	subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts", Persistent: true})

	must(t, setReaderRead(ctx, srv, false))
	t.Cleanup(func() {
		// Other scenarios rely on the reader's permission.
		cctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		defer cancel()
		if err := setReaderRead(cctx, srv, true); err != nil {
			t.Errorf("restore the reader's permission: %v", err)
		}
	})
	// Events keep coming (as FORBIDDEN error frames) while it is revoked.
	stop := make(chan struct{})
	writes := make(chan error, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				writes <- nil
				return
			case <-tick.C:
				if _, err := srv.REST().CreatePost(ctx, Post{Title: "while revoked"}); err != nil {
					writes <- err
					return
				}
			}
		}
	}()
	// The first error event brings a reconcile forward; it is refused.
	wctx, cancel := within(ctx, eventTimeout)
	defer cancel()
	for !errors.Is(posts.Status().Err, store.ErrRefused) {
		if err := posts.WaitFor(wctx, func() bool { return posts.Status().Err != nil }); err != nil {
			t.Fatalf("the replica did not see the revocation: %v (status %+v)", err, posts.Status())
		}
	}
	watchStorm(t, c)
	close(stop)
	must(t, <-writes)
	if st := posts.Status(); !errors.Is(st.Err, store.ErrRefused) || !errors.Is(st.Err, protocol.ErrForbidden) {
		t.Fatalf("status %+v, want refused as FORBIDDEN", st)
	}
	if n := seen.Count(store.ErrRefused); n != 1 {
		t.Fatalf("the refusal was reported %d times, want once", n)
	}
	// The permission comes back: the next reconcile heals the replica.
	must(t, setReaderRead(ctx, srv, true))
	reconcile(ctx, t, posts)
	rows, err := srv.REST().Posts(ctx)
	must(t, err)
	mustEqual(t, "the replica after the permission came back", posts, rows, postKey)
	if st := posts.Status(); st.Err != nil {
		t.Fatalf("status %+v after the permission came back", st)
	}
}

// readerPolicy is the seeded reader's policy (scripts/directus/seed.mjs).
const readerPolicy = "Posts reader"

// setReaderRead grants or revokes the reader's read permission on posts,
// through the REST API as the admin (directustest serves the same
// endpoints).
func setReaderRead(ctx context.Context, srv Server, allowed bool) error {
	if e, ok := srv.(*embeddedServer); ok {
		return e.setReaderRead(allowed)
	}
	r := srv.REST()
	var policies []struct {
		ID string `json:"id"`
	}
	if err := r.do(ctx, http.MethodGet, "/policies?"+url.Values{"filter[name][_eq]": {readerPolicy}, "fields": {"id"}}.Encode(), nil, &policies); err != nil {
		return err
	}
	if len(policies) != 1 {
		return errors.New("conformance: no policy " + readerPolicy)
	}
	policy := policies[0].ID
	var perms []struct {
		ID int64 `json:"id"`
	}
	q := url.Values{"filter[policy][_eq]": {policy}, "filter[collection][_eq]": {"posts"}, "filter[action][_eq]": {"read"}, "fields": {"id"}}
	if err := r.do(ctx, http.MethodGet, "/permissions?"+q.Encode(), nil, &perms); err != nil {
		return err
	}
	switch {
	case !allowed && len(perms) > 0:
		ids := make([]int64, len(perms))
		for i, p := range perms {
			ids[i] = p.ID
		}
		return r.do(ctx, http.MethodDelete, "/permissions", ids, nil)
	case allowed && len(perms) == 0:
		return r.do(ctx, http.MethodPost, "/permissions", map[string]any{
			"policy": policy, "collection": "posts", "action": "read", "fields": []string{"*"}, "permissions": nil,
		}, nil)
	}
	return nil
}
