// Package opstest sets up what the tests of ops and of the metrics
// packages observe: an embedded Directus, a manager connected to it, a
// replica of posts registered in an ops.Source, with the ways to make
// every figure change (events, resyncs, errors, a stuck handler).
package opstest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/ops"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// Post is a row of the seeded posts collection.
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
}

// Env is a running setup.
type Env struct {
	Srv   *directustest.Server
	M     *manager.Manager
	Posts *store.Collection[int64, Post]
	Src   *ops.Source
}

// Secret is a filter value the pages must never show.
const Secret = "hunter2-filter-secret"

// Start starts the server, connects a manager as the seeded reader, subscribes a replica of
// posts (registered as "posts") with a filter holding Secret, and
// reconciles it once. Everything is closed at the test's end.
func Start(t *testing.T, opts *ops.Options) *Env {
	t.Helper()
	srv := directustest.NewServer(nil)
	t.Cleanup(srv.Close)
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.ReaderToken},
		Backoff: conn.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Connect(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	posts := NewPosts(t)
	if _, err := posts.Subscribe(Ctx(t), m, manager.SubscribeOptions{Collection: "posts", Persistent: true, UID: "posts-replica",
		Query: &protocol.Query{Filter: map[string]any{"_or": []any{
			map[string]any{"title": map[string]any{"_neq": Secret}},
			map[string]any{"status": map[string]any{"_in": []any{"published", "draft", Secret}}},
		}}}}); err != nil {
		t.Fatal(err)
	}
	if err := posts.Reconcile(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	src := ops.NewSource(m, opts)
	if _, err := src.AddReplica("posts", posts); err != nil {
		t.Fatal(err)
	}
	return &Env{Srv: srv, M: m, Posts: posts, Src: src}
}

// Ctx is a context bounded for one step of a test.
func Ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Create writes a post and waits until the replica holds it.
func (e *Env) Create(t *testing.T, title string) int64 {
	t.Helper()
	rows, err := e.Srv.Create("posts", map[string]any{"title": title, "status": "published"})
	if err != nil {
		t.Fatal(err)
	}
	id := toInt(rows[0]["id"])
	if err := e.Posts.WaitFor(Ctx(t), func() bool { _, ok := e.Posts.Get(id); return ok }); err != nil {
		t.Fatalf("the replica never got post %d: %v", id, err)
	}
	return id
}

// Blocker is a handler that blocks on every event until released.
type Blocker struct {
	Entered chan struct{} // receives once per event the handler starts
	release chan struct{}
	once    sync.Once
}

// NewBlocker returns a blocking handler.
func NewBlocker() *Blocker {
	return &Blocker{Entered: make(chan struct{}, 1024), release: make(chan struct{})}
}

// Handle blocks, except on the first init, until Release.
func (b *Blocker) Handle(ev handlers.Event) error {
	if ev.Kind == handlers.KindInit && !ev.Resync {
		return nil
	}
	b.Entered <- struct{}{}
	<-b.release
	return nil
}

// Release lets every event through from now on.
func (b *Blocker) Release() { b.once.Do(func() { close(b.release) }) }

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	}
	return -1
}

// Revoke takes the reader's permission to read posts away.
func (e *Env) Revoke(t *testing.T) {
	t.Helper()
	if err := e.Srv.SetUserPermissions(directustest.ReaderEmail, map[string]directustest.Permission{}); err != nil {
		t.Fatal(err)
	}
}

// NewPosts returns a replica of posts that is not subscribed.
func NewPosts(t *testing.T) *store.Collection[int64, Post] {
	t.Helper()
	c, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
