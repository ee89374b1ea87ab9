package graphql_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/graphql"
	"github.com/e41af43e/directus-realtime/store"
)

type replica = store.Collection[int, post]

// Random writes from another goroutine while the server restarts, drops
// every socket or refuses connections, several times: two replicas (one by
// Replicate, one by Source) end equal to the server.
func TestReplicaUnderFaults(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title", "status", "views"}, Persistent: true}
	a := newReplica(t)
	if _, err := m.Replicate(ctx, opts, a); err != nil {
		t.Fatal(err)
	}
	b := newReplica(t)
	followCtx, stopFollow := context.WithCancel(ctx)
	followed := make(chan error, 1)
	go func() { followed <- b.Follow(followCtx, m.Source(opts)) }()
	defer func() { stopFollow(); <-followed }()
	if err := b.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(3, 4))
		for {
			select {
			case <-stop:
				return
			default:
			}
			randomWrites(t, s, rng, 1)
			time.Sleep(time.Millisecond) // pace, not synchronisation
		}
	})
	rng := rand.New(rand.NewPCG(5, 6))
	states := m.WatchState(ctx)
	for i := range 6 {
		before := a.Stats().Resyncs
		switch rng.IntN(3) {
		case 0:
			s.Restart()
		case 1:
			s.DropConnections()
		default:
			s.RefuseConnections(30 * time.Millisecond)
			s.DropConnections()
		}
		waitState(t, states, conn.StateConnected)
		// Each fault ends in a resync init of the replica.
		if err := a.WaitFor(ctx, func() bool { return a.Stats().Resyncs > before }); err != nil {
			t.Fatalf("no resync after fault %d", i)
		}
	}
	close(stop)
	wg.Wait()
	rows := s.Items("posts")
	for name, c := range map[string]*replica{"Replicate": a, "Source": b} {
		if err := c.WaitFor(ctx, func() bool { return equalToServer(c, rows) }); err != nil {
			t.Fatalf("%s replica differs after the faults: %d rows, server %d", name, c.Len(), len(rows))
		}
	}
}
