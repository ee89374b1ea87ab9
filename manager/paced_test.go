package manager_test

import (
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// TestPacedSubscribesDoNotTimeOut: subscribes that wait in a paced
// writer's queue longer than InitTimeout are not sent again while the
// server keeps answering the ones before them: the init timeout counts
// from the server's last answer. (It used to count from the queueing, and
// every frame past the first InitTimeout's worth was sent twice.)
func TestPacedSubscribesDoNotTimeOut(t *testing.T) {
	w := newWire()
	srv := directustest.NewServer(&directustest.Options{OnFrame: w.on})
	defer srv.Close()
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, PingInterval: -1,
		SendRate: 100}, &manager.Options{InitTimeout: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	const n = 60 // 0.6 s of the writer's pace, four InitTimeouts
	h := handlers.HandlerFunc(func(handlers.Event) error { return nil })
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			q := &protocol.Query{Filter: map[string]any{"id": map[string]any{"_eq": -1 - i}}}
			_, err := m.Subscribe(ctx(t), manager.SubscribeOptions{Collection: "posts", Query: q, Persistent: true}, h)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := w.count("subscribe"); got != n {
		t.Fatalf("%d subscribe frames for %d subscriptions: timed out in the writer's queue and sent again", got, n)
	}
}
