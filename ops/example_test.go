package ops_test

import (
	"context"
	"log"
	"net/http"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/ops"
	"github.com/e41af43e/directus-realtime/store"
)

type Post struct {
	ID    int64  `json:"id"`
	Title string `json:"title"`
}

// Mount the probes and the status page of a replica.
func ExampleSource() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if err := m.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	posts, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
	if err != nil {
		log.Fatal(err)
	}
	defer posts.Close()
	if _, err := posts.Subscribe(ctx, m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		log.Fatal(err)
	}

	src := ops.NewSource(m, nil)
	if _, err := src.AddReplica("posts", posts); err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/readyz", src.ReadyHandler())
	mux.Handle("/livez", src.LiveHandler())
	// The status page shows no secret but does show uids and errors: put it
	// behind the service's own authentication.
	mux.Handle("/debug/directus/", http.StripPrefix("/debug/directus", src.StatusHandler(nil)))

	h := src.Ready()
	log.Printf("ready: %v, problems: %v", h.OK, h.Problems)
}
