package graphql_test

import (
	"context"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/graphql"
)

// BenchmarkReplicaCreates: one op is one row created on directustest (in
// batches of 100) and applied to a replica over /graphql, one next per
// row. It measures the client's path (read, parse, normalise the key,
// queue, store.Handle) plus the fake server's encoding.
func BenchmarkReplicaCreates(b *testing.B) {
	s := directustest.NewServer(&directustest.Options{GraphQL: true})
	defer s.Close()
	m, err := graphql.New(&graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.AdminToken}})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	c := newReplica(b)
	if _, err := m.Replicate(ctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title", "status", "views"}, Persistent: true}, c); err != nil {
		b.Fatal(err)
	}
	if err := c.WaitSynced(ctx); err != nil {
		b.Fatal(err)
	}
	batch := make([]map[string]any, 100)
	for i := range batch {
		batch[i] = map[string]any{"title": "bench", "status": "draft", "views": i}
	}
	start := c.Len()
	b.ResetTimer()
	for done := 0; done < b.N; done += len(batch) {
		if _, err := s.Create("posts", batch...); err != nil {
			b.Fatal(err)
		}
	}
	want := start + (b.N+len(batch)-1)/len(batch)*len(batch)
	if err := c.WaitFor(ctx, func() bool { return c.Len() >= want }); err != nil {
		b.Fatal(err)
	}
}
