package store_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"sort"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
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

// A leaderboard: the three most viewed posts of the replica, kept in order
// as posts are created, updated and deleted.
func ExampleNewView() {
	posts, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
	if err != nil {
		log.Fatal(err)
	}
	defer posts.Close()
	top, err := store.NewView(posts, func(a, b Post) int { return cmp.Compare(b.Views, a.Views) }, 3)
	if err != nil {
		log.Fatal(err)
	}
	defer top.Close()

	// Events as a subscription delivers them (posts.Subscribe does this).
	_ = posts.Handle(handlers.Event{Kind: handlers.KindInit, Data: json.RawMessage(
		`[{"id":1,"title":"a","views":10},{"id":2,"title":"b","views":30},{"id":3,"title":"c","views":20},{"id":4,"title":"d","views":5}]`)})
	fmt.Println(titles(top.Rows()))
	_ = posts.Handle(handlers.Event{Kind: handlers.KindUpdate, Data: json.RawMessage(`[{"id":4,"title":"d","views":50}]`)})
	fmt.Println(titles(top.Rows())) // d entered, a was pushed out
	_ = posts.Handle(handlers.Event{Kind: handlers.KindDelete, Data: json.RawMessage(`[2]`)})
	fmt.Println(titles(top.Rows())) // a is back in b's place
	// Output:
	// [b c a]
	// [d b c]
	// [d c a]
}

func titles(ps []Post) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Title
	}
	return out
}
