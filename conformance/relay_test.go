package conformance

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/natstest"
	"github.com/e41af43e/directus-realtime/relay"
)

// Issue 12: two relays mirror posts into an embedded JetStream while a
// writer changes posts through REST; the leader is killed (connections
// cut, no resignation) during the writes, the standby takes over, and a
// fleet replica fed by the bucket ends equal to GET /items/posts.
func TestRelayFailover(t *testing.T) { run(t, scenarioRelayFailover) }

func scenarioRelayFailover(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	ns, err := natstest.Start()
	must(t, err)
	t.Cleanup(ns.Close)
	jsConn := func() jetstream.JetStream {
		nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1))
		must(t, err)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		must(t, err)
		return js
	}

	w := newWriter(srv.REST(), uint64(time.Now().UnixNano()))
	wctx, wcancel := within(ctx, eventTimeout)
	defer wcancel()
	for range 10 {
		must(t, w.step(wctx))
	}

	type proc struct {
		r      *relay.Relay
		nc     *nats.Conn
		c      *client
		cancel context.CancelFunc
		done   chan error
		leader chan bool
	}
	start := func(id string) *proc {
		c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
		nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1))
		must(t, err)
		js, err := jetstream.New(nc)
		must(t, err)
		p := &proc{nc: nc, c: c, done: make(chan error, 1), leader: make(chan bool, 16)}
		p.r, err = relay.New(c.Manager, js, []relay.Collection{{Name: "posts"}},
			&relay.Options{ID: id, LeaseTTL: time.Second, Logger: logger(t), OnLeader: func(on bool) { p.leader <- on }})
		must(t, err)
		rctx, cancel := context.WithCancel(ctx)
		p.cancel = cancel
		go func() { p.done <- p.r.Run(rctx) }()
		t.Cleanup(func() { cancel(); <-p.done; nc.Close() })
		return p
	}
	waitLeader := func(p *proc) {
		t.Helper()
		lctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		for {
			select {
			case on := <-p.leader:
				if on {
					return
				}
			case <-lctx.Done():
				t.Fatal("the relay never became leader")
			}
		}
	}
	a := start("a")
	waitLeader(a)
	b := start("b")
	select {
	case <-b.r.Ready():
	case <-ctx.Done():
		t.Fatal("the standby never got ready")
	}

	pod := newPosts(t)
	src := relay.NewSource(jsConn(), relay.BucketName("posts"), nil)
	fctx, fcancel := context.WithCancel(ctx)
	var follow sync.WaitGroup
	follow.Go(func() { _ = pod.Follow(fctx, src) })
	defer func() { fcancel(); follow.Wait() }()
	sctx, scancel := within(ctx, eventTimeout)
	defer scancel()
	must(t, pod.WaitSynced(sctx))

	stopWriter := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, stopWriter, 0) })
	var once sync.Once
	stop := func() { once.Do(func() { close(stopWriter) }); wg.Wait() }
	defer stop()
	must(t, w.waitWrites(sctx, 20))

	killed := time.Now()
	a.nc.Close()
	_ = a.c.Close()
	waitLeader(b)
	t.Logf("the standby took over after %v", time.Since(killed).Round(time.Millisecond))
	must(t, w.waitWrites(sctx, 20))
	stop()
	t.Logf("writer: %d writes, %d failed", w.ok.Load(), w.failed.Load())

	rows, err := srv.REST().Posts(ctx)
	must(t, err)
	if d := converge(ctx, pod, rows, postKey); d != "" {
		t.Fatalf("the fleet replica differs from the server after the failover: %s", d)
	}
	if st := src.Stats(); st.Loads != 1 {
		t.Errorf("the fleet replica reloaded the bucket during the failover: %+v", st)
	}
}
