package store_test

import (
	"context"
	"fmt"
	"log"
	"sort"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// A typed live replica of the published posts, with an index by status and
// a listener.
func Example() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	_, _ = srv.Create("posts", map[string]any{"title": "first", "status": "published"})

	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}

	posts, err := store.New(store.Options[int64, Post]{
		Key:      func(p Post) int64 { return p.ID },
		Indexers: map[string]store.IndexFunc[Post]{"title": func(p Post) []string { return []string{p.Title} }},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer posts.Close()
	_, err = posts.Subscribe(context.Background(), m, manager.SubscribeOptions{
		Collection: "posts",
		Persistent: true,
		Query:      &protocol.Query{Filter: map[string]any{"status": map[string]any{"_eq": "published"}}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("synced with", posts.Len(), "post")

	changes := make(chan string, 10)
	posts.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		changes <- fmt.Sprintf("%s %d %q", ch.Op, ch.Key, ch.New.Title)
	}))
	fmt.Println(<-changes) // the row present when the listener was added

	_, _ = srv.Create("posts", map[string]any{"title": "second", "status": "published"})
	fmt.Println(<-changes)
	_ = srv.Delete("posts", "1")
	fmt.Println(<-changes)

	byTitle, _ := posts.ByIndex("title", "second")
	titles := []string{}
	for _, p := range byTitle {
		titles = append(titles, p.Title)
	}
	sort.Strings(titles)
	fmt.Println(titles, posts.Len())
	// Output:
	// synced with 1 post
	// add 1 "first"
	// add 2 "second"
	// delete 1 ""
	// [second] 1
}
