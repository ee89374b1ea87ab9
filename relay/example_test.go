package relay_test

import (
	"context"
	"log"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/relay"
	"github.com/e41af43e/directus-realtime/store"
)

// A relay process: run two or three of these; one leads.
func ExampleNew() {
	ctx := context.Background()
	m, err := manager.New(&conn.Config{URL: "http://127.0.0.1:8055", Auth: conn.Auth{Token: "static-token"}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	r, err := relay.New(m, js, []relay.Collection{{Name: "posts"}}, &relay.Options{Replicas: 3})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(r.Run(ctx)) // until ctx ends
}

// A fleet replica: a typed Collection fed by the relay's bucket.
func ExampleSource() {
	ctx := context.Background()
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	posts, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
	if err != nil {
		log.Fatal(err)
	}
	defer posts.Close()
	src := relay.NewSource(js, relay.BucketName("posts"), nil)
	go func() { _ = posts.Follow(ctx, src) }()
	if err := posts.WaitSynced(ctx); err != nil {
		log.Fatal(err)
	}
	p, _ := posts.Get(1)
	log.Printf("post 1: %+v (resume later from revision %d)", p, src.Revision())
}
