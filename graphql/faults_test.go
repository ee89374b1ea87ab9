package graphql_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
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
// With a queue of 4 events, the buffered events of a snapshot overflow
// it: they must be delivered with the init, not start another epoch in the
// middle of this one (a double close found by BenchmarkReplicaCreates).
func TestReplicaUnderFaults(t *testing.T) {
	for _, qs := range []int{0, 4} {
		t.Run(fmt.Sprintf("queue %d", qs), func(t *testing.T) { replicaUnderFaults(t, qs) })
	}
}

func replicaUnderFaults(t *testing.T, queueSize int) {
	s := newServer(t, nil)
	m := managerWith(t, graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, QueueSize: queueSize})
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

// gatedTransport holds snapshot reads (GET /items/…?limit=-1) while closed.
type gatedTransport struct {
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	entered chan struct{}
}

func (g *gatedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil && req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/items/") && req.URL.Query().Get("limit") == "-1" {
		g.entered <- struct{}{}
		<-gate
	}
	return http.DefaultTransport.RoundTrip(req)
}

// More events arrive while a snapshot is read than the queue holds: they
// are delivered after the init, in one epoch, and the replica ends equal.
func TestReplicaBufferLargerThanQueue(t *testing.T) {
	s := newServer(t, nil)
	gt := &gatedTransport{entered: make(chan struct{}, 1)}
	m := managerWith(t, graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, QueueSize: 4,
		HTTPClient: &http.Client{Transport: gt}})
	connect(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := newReplica(t)
	sub, err := m.Replicate(ctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title", "status", "views"}, Persistent: true}, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	// A plain subscription after the replica's: its events follow the
	// replica's on the wire, so when it has 20 the replica's 20 were read.
	rec := newRecorder()
	if _, err := m.Subscribe(ctx, graphql.SubscribeOptions{Collection: "posts", Query: fields("id"), QueueSize: 64}, rec); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	gt.mu.Lock()
	gt.gate = release
	gt.mu.Unlock()
	resynced := make(chan error, 1)
	go func() { resynced <- sub.Resync(ctx) }()
	<-gt.entered
	batch := make([]map[string]any, 20)
	for i := range batch {
		batch[i] = map[string]any{"title": fmt.Sprint("b", i)}
	}
	if _, err := s.Create("posts", batch...); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 20)
	gt.mu.Lock()
	gt.gate = nil
	gt.mu.Unlock()
	close(release)
	if err := <-resynced; err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, func() bool { return equalToServer(c, s.Items("posts")) }); err != nil {
		t.Fatalf("replica %d rows, server %d", c.Len(), len(s.Items("posts")))
	}
	if err := sub.Resync(ctx); err != nil { // and the next epoch is sound
		t.Fatal(err)
	}
}
