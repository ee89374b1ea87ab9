package graphql_test

import (
	"context"
	"fmt"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/graphql"
	"github.com/e41af43e/directus-realtime/store"
)

type examplePost struct {
	ID    int64  `json:"id"`
	Title string `json:"title"`
}

// A replica of posts over /graphql: Replicate subscribes, reads the
// snapshot over REST and feeds both, in order, to the store.
func ExampleManager_Replicate() {
	srv := directustest.NewServer(&directustest.Options{GraphQL: true})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	m, err := graphql.New(&graphql.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		panic(err)
	}
	posts, err := store.New(store.Options[int64, examplePost]{Key: func(p examplePost) int64 { return p.ID }})
	if err != nil {
		panic(err)
	}
	defer posts.Close()
	opts := graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title"}, Persistent: true}
	if _, err := m.Replicate(ctx, opts, posts); err != nil {
		panic(err)
	}
	if _, err := srv.Create("posts", map[string]any{"title": "hello"}); err != nil {
		panic(err)
	}
	if err := posts.WaitFor(ctx, func() bool { return posts.Len() == 1 }); err != nil {
		panic(err)
	}
	fmt.Println(posts.List()[0].Title)
	// Output: hello
}

// The same replica as a store.Source, for as long as a context.
func ExampleManager_Source() {
	srv := directustest.NewServer(&directustest.Options{GraphQL: true})
	defer srv.Close()
	if _, err := srv.Create("posts", map[string]any{"title": "already there"}); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := graphql.New(&graphql.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		panic(err)
	}
	posts, err := store.New(store.Options[int64, examplePost]{Key: func(p examplePost) int64 { return p.ID }})
	if err != nil {
		panic(err)
	}
	defer posts.Close()
	followCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- posts.Follow(followCtx, m.Source(graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title"}}))
	}()
	if err := posts.WaitSynced(ctx); err != nil {
		panic(err)
	}
	fmt.Println(posts.Len(), posts.List()[0].Title)
	stop()
	fmt.Println(<-done)
	// Output:
	// 1 already there
	// context canceled
}
