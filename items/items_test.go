package items_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/items"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type Post struct {
	ID    int64  `json:"id,omitempty"`
	Title string `json:"title"`
	Views int    `json:"views"`
}

func setup(t *testing.T, token string) (*directustest.Server, *manager.Manager, context.Context) {
	t.Helper()
	srv := directustest.NewServer(nil)
	t.Cleanup(srv.Close)
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: token}, PingInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if err := m.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return srv, m, ctx
}

func TestTypedItems(t *testing.T) {
	srv, m, ctx := setup(t, directustest.AdminToken)
	a, err := items.Create(ctx, m, "posts", Post{Title: "a", Views: 1})
	if err != nil || a.ID == 0 || a.Title != "a" {
		t.Fatalf("Create: %+v, %v", a, err)
	}
	more, err := items.CreateMany(ctx, m, "posts", []Post{{Title: "b"}, {Title: "c"}})
	if err != nil || len(more) != 2 || more[0].ID == 0 {
		t.Fatalf("CreateMany: %+v, %v", more, err)
	}
	got, err := items.ReadOne[Post](ctx, m, "posts", a.ID, nil)
	if err != nil || got != a {
		t.Fatalf("ReadOne: %+v, %v, want %+v", got, err, a)
	}
	up, err := items.Update[Post](ctx, m, "posts", a.ID, map[string]any{"views": 5})
	if err != nil || up.Views != 5 || up.Title != "a" {
		t.Fatalf("Update: %+v, %v", up, err)
	}
	ups, err := items.UpdateMany[Post](ctx, m, "posts", []any{more[0].ID, more[1].ID}, map[string]any{"views": 9})
	if err != nil || len(ups) != 2 || ups[0].Views != 9 || ups[1].Views != 9 {
		t.Fatalf("UpdateMany: %+v, %v", ups, err)
	}
	if err := items.Delete(ctx, m, "posts", more[0].ID); err != nil {
		t.Fatal(err)
	}
	all, err := items.Read[Post](ctx, m, "posts", &protocol.Query{Sort: []string{"id"}, Limit: -1})
	if err != nil || len(all) != 2 || all[0].ID != a.ID || all[1].ID != more[1].ID {
		t.Fatalf("Read: %+v, %v", all, err)
	}
	if n := len(srv.Items("posts")); n != 2 {
		t.Fatalf("server has %d posts", n)
	}
	// Through the Conn as well.
	if _, err := items.Read[Post](ctx, m.Conn(), "posts", nil); err != nil {
		t.Fatal(err)
	}
}

func TestTypedItemsErrors(t *testing.T) {
	_, m, ctx := setup(t, directustest.ReaderToken)
	_, err := items.Create(ctx, m, "posts", Post{Title: "by the reader"})
	if !errors.Is(err, protocol.ErrForbidden) {
		t.Fatalf("create as the reader: %v, want FORBIDDEN", err)
	}
	if _, err := items.ReadOne[Post](ctx, m, "posts", 999999, nil); !errors.Is(err, protocol.ErrForbidden) {
		t.Fatalf("a missing id: %v, want FORBIDDEN as Directus answers", err)
	}
	var ce *protocol.ConfigError
	if _, err := items.ReadOne[Post](ctx, m, "posts", 1.5, nil); !errors.As(err, &ce) {
		t.Fatalf("a float key: %v, want a ConfigError", err)
	}
	if err := items.Delete(ctx, m, "posts"); !errors.As(err, &ce) {
		t.Fatalf("a delete without keys: %v, want a ConfigError", err)
	}
}

func TestDecodeError(t *testing.T) {
	srv, m, ctx := setup(t, directustest.AdminToken)
	if _, err := srv.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	var de *items.DecodeError
	if _, err := items.Read[int](ctx, m, "posts", nil); !errors.As(err, &de) || de.Collection != "posts" {
		t.Fatalf("rows read as ints: %v, want a DecodeError", err)
	}
}
