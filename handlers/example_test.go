package handlers_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Keys of deletes arrive as strings or numbers depending on the request that
// deleted them; Keys normalises both.
func ExampleKeys() {
	fromURL := handlers.Event{Kind: handlers.KindDelete, Data: []byte(`["1521"]`)}
	fromBody := handlers.Event{Kind: handlers.KindDelete, Data: []byte(`[1521]`)}
	a, _ := handlers.Keys(fromURL)
	b, _ := handlers.Keys(fromBody)
	fmt.Println(a[0] == b[0])
	// Output: true
}

// Cache invalidation: drop cached entries for the keys each event touches,
// and everything on an init (after a reconnect any entry may be stale).
func ExampleInvalidate() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}

	var mu sync.Mutex
	cache := map[handlers.Key]string{"1": "cached title"}
	seen := make(chan handlers.Invalidation, 10)
	invalidate := handlers.Invalidate("id", func(inv handlers.Invalidation) {
		mu.Lock()
		defer mu.Unlock()
		if inv.All {
			clear(cache)
		}
		for _, k := range inv.Keys {
			delete(cache, k)
		}
		seen <- inv
	})
	_, err = m.Subscribe(context.Background(), manager.SubscribeOptions{
		Collection: "posts", Query: &protocol.Query{Fields: []string{"id"}}, Persistent: true,
	}, handlers.Only(invalidate, handlers.KindCreate, handlers.KindUpdate, handlers.KindDelete))
	if err != nil {
		log.Fatal(err)
	}
	_, _ = srv.Create("posts", map[string]any{"title": "first"})
	fmt.Println((<-seen).Keys)
	_ = srv.Delete("posts", "1") // as DELETE /items/posts/1 sends it
	inv := <-seen
	fmt.Println(inv.Kind, inv.Keys)
	mu.Lock()
	fmt.Println(len(cache))
	mu.Unlock()
	// Output:
	// [1]
	// delete [1]
	// 0
}

type post struct {
	ID    int    `json:"id"`
	Title string `json:"title"`
}

// Typed callbacks per kind.
func ExampleTyped() {
	h := handlers.Typed[post]{
		OnCreate: func(ev handlers.Event, posts []post) error {
			fmt.Println("created", posts[0].ID, posts[0].Title)
			return nil
		},
		OnDelete: func(ev handlers.Event, keys []handlers.Key) error {
			fmt.Println("deleted", keys)
			return nil
		},
	}
	_ = h.Handle(handlers.Event{Kind: handlers.KindCreate, Data: []byte(`[{"id":7,"title":"hi"}]`)})
	_ = h.Handle(handlers.Event{Kind: handlers.KindDelete, Data: []byte(`"7"`)}) // a single-item subscription's delete
	// Output:
	// created 7 hi
	// deleted [7]
}
