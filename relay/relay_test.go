package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/natstest"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/relay"
	"github.com/e41af43e/directus-realtime/store"
)

type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

var bucket = relay.BucketName("posts")

// env is one embedded Directus and one embedded JetStream.
type env struct {
	t   *testing.T
	srv *directustest.Server
	ns  *natstest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ns, err := natstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	srv := directustest.NewServer(nil)
	t.Cleanup(func() { srv.Close(); ns.Close() })
	return &env{t: t, srv: srv, ns: ns}
}

func (e *env) jetstream() (*nats.Conn, jetstream.JetStream) {
	e.t.Helper()
	nc, err := nats.Connect(e.ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close) // closing twice is harmless
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return nc, js
}

// runningRelay is a relay process: its manager, NATS connection and Run.
type runningRelay struct {
	*relay.Relay
	m      *manager.Manager
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	leader chan bool // what OnLeader said
	once   sync.Once
}

func (e *env) startRelay(id string, opts *relay.Options) *runningRelay {
	return e.startRelayAt(id, e.srv.URL(), opts)
}

// startRelayAt starts a relay that reaches Directus at url.
func (e *env) startRelayAt(id, url string, opts *relay.Options) *runningRelay {
	e.t.Helper()
	m, err := manager.New(&conn.Config{URL: url, Auth: conn.Auth{Token: directustest.AdminToken}}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	nc, js := e.jetstream()
	o := relay.Options{LeaseTTL: 600 * time.Millisecond}
	if opts != nil {
		o = *opts
	}
	o.ID = id
	if os.Getenv("RELAY_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	leader := make(chan bool, 64)
	o.OnLeader = func(on bool) { leader <- on }
	r, err := relay.New(m, js, []relay.Collection{{Name: "posts"}}, &o)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr := &runningRelay{Relay: r, m: m, nc: nc, cancel: cancel, done: make(chan error, 1), leader: leader}
	if err := m.Connect(ctx); err != nil {
		e.t.Fatal(err)
	}
	go func() { rr.done <- r.Run(ctx) }()
	e.t.Cleanup(rr.stop)
	return rr
}

// stop ends the relay cleanly (it resigns the lease).
func (rr *runningRelay) stop() {
	rr.once.Do(func() {
		rr.cancel()
		<-rr.done
		rr.m.Close()
		rr.nc.Close()
	})
}

// kill ends the relay as a crash would: its connections drop first, so it
// cannot resign, and the lease has to expire.
func (rr *runningRelay) kill() {
	rr.once.Do(func() {
		rr.nc.Close()
		rr.m.Close()
		rr.cancel()
		<-rr.done
	})
}

// pod is a fleet replica: a Collection fed by a Source.
type pod struct {
	posts  *store.Collection[int64, Post]
	src    *relay.Source
	cancel context.CancelFunc
	done   chan error
	nc     *nats.Conn
}

func (e *env) startPod(posts *store.Collection[int64, Post], revision uint64) *pod {
	e.t.Helper()
	if posts == nil {
		var err error
		posts, err = store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { posts.Close() })
	}
	nc, js := e.jetstream()
	so := &relay.SourceOptions{Revision: revision}
	if os.Getenv("RELAY_TEST_LOG") != "" {
		so.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	src := relay.NewSource(js, bucket, so)
	ctx, cancel := context.WithCancel(context.Background())
	p := &pod{posts: posts, src: src, cancel: cancel, done: make(chan error, 1), nc: nc}
	go func() { p.done <- posts.Follow(ctx, src) }()
	e.t.Cleanup(p.stop)
	return p
}

func (p *pod) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.nc.Close()
	p.cancel = nil
}

func (e *env) serverPosts() map[int64]Post {
	out := map[int64]Post{}
	for _, row := range e.srv.Items("posts") {
		b, _ := json.Marshal(row)
		var p Post
		if err := json.Unmarshal(b, &p); err != nil {
			e.t.Fatal(err)
		}
		out[p.ID] = p
	}
	return out
}

// waitEqual waits until the replica equals the server's rows.
func (e *env) waitEqual(name string, posts *store.Collection[int64, Post]) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := posts.WaitSynced(ctx); err != nil {
		e.t.Fatalf("%s never synced: %v", name, err)
	}
	var want map[int64]Post
	err := posts.WaitFor(ctx, func() bool {
		want = e.serverPosts()
		return reflect.DeepEqual(posts.Snapshot(), want)
	})
	if err != nil {
		got := posts.Snapshot()
		diff := 0
		for k, v := range want {
			if got[k] != v {
				diff++
			}
		}
		e.t.Fatalf("%s differs from the server: %d rows against %d, %d rows differ", name, len(got), len(want), diff+max(0, len(got)-len(want)))
	}
}

// writer makes random writes: creates with fresh ids, updates that raise
// views (the row's version), deletes; a deleted id never comes back.
type writer struct {
	e    *env
	rng  *rand.Rand
	mu   sync.Mutex
	live []int64
}

func (w *writer) step() {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.e.srv
	switch n := w.rng.IntN(10); {
	case n < 4 || len(w.live) < 5:
		rows, err := s.Create("posts", map[string]any{"title": "t" + strconv.Itoa(w.rng.IntN(1000)), "status": "draft", "views": 0})
		if err != nil {
			w.e.t.Error(err)
			return
		}
		w.live = append(w.live, toInt(rows[0]["id"]))
	case n < 8:
		id := w.live[w.rng.IntN(len(w.live))]
		row, _ := s.Item("posts", id)
		if _, err := s.Update("posts", []any{id}, map[string]any{"views": toInt(row["views"]) + 1, "title": "u" + strconv.Itoa(w.rng.IntN(1000))}); err != nil {
			w.e.t.Error(err)
		}
	default:
		i := w.rng.IntN(len(w.live))
		id := w.live[i]
		w.live = append(w.live[:i], w.live[i+1:]...)
		if err := s.Delete("posts", id); err != nil {
			w.e.t.Error(err)
		}
	}
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	case json.Number:
		n, _ := x.Int64()
		return n
	}
	panic(fmt.Sprintf("not a number: %T %v", v, v))
}

// run writes until stop is closed.
func (w *writer) run(stop chan struct{}, done *sync.WaitGroup) {
	done.Add(1)
	go func() {
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			w.step()
			time.Sleep(time.Millisecond) // pacing, not synchronisation
		}
	}()
}

func waitReady(t *testing.T, r *runningRelay) {
	t.Helper()
	select {
	case <-r.Ready():
	case <-time.After(15 * time.Second):
		t.Fatalf("relay %s never ready", r.ID())
	}
}

func waitLeading(t *testing.T, r *runningRelay) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case on := <-r.leader:
			if on {
				return
			}
		case <-timeout:
			t.Fatalf("relay %s never became leader", r.ID())
		}
	}
}
