package conformance

import (
	"context"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/faultproxy"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// soakDuration is how long the soak writes against a real server:
// CONFORMANCE_SOAK, 75 s by default. Restarts come on top.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("CONFORMANCE_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CONFORMANCE_SOAK: %v", err)
		}
		return d
	}
	return 75 * time.Second
}

// soakPace paces the soak for its target.
type soakPace struct {
	dur         time.Duration // how long faults go on (every kind comes once at least)
	kills       int           // kill -9 restarts at most
	writes      int           // at least this many writes between two faults, up to 3×
	ping        time.Duration // the proxied client's PingInterval …
	pingTimeout time.Duration // … and PingTimeout: how fast a stall is noticed
	refuse      time.Duration // how long the proxy refuses dials
}

// Issue 7: a short soak. Two clients (one through a fault proxy, one
// direct) keep replicas of posts, published posts and tags, plus an
// event-only subscription, while a writer changes rows in bursts and the
// connection is cut, stalled, refused and replaced, and the server process
// is killed with SIGKILL and started again. Afterwards every replica equals
// the server and every subscription is active.
func TestSoak(t *testing.T) { run(t, scenarioSoak) }

func scenarioSoak(t *testing.T, tg Target) {
	srv := tg.Server(t, Default)
	// The pace: a real server on a loaded machine gets more time; on
	// directustest the soak is one quick round of every fault.
	p := soakPace{dur: time.Second, kills: 1, writes: 5, ping: 500 * time.Millisecond, pingTimeout: 500 * time.Millisecond, refuse: 300 * time.Millisecond}
	if tg.Real() {
		p = soakPace{dur: soakDuration(t), kills: 2, writes: 15, ping: time.Second, pingTimeout: 2 * time.Second, refuse: time.Second}
	}
	dur, kills := p.dur, p.kills
	if !srv.Restartable() {
		kills = 0
		t.Logf("%s cannot be restarted here: soaking without kill -9", srv.URL())
	}
	ctx, cancel := context.WithTimeout(t.Context(), dur+time.Duration(kills)*restartTimeout+2*time.Minute)
	defer cancel()
	must(t, srv.Reset(ctx))

	proxy, err := faultproxy.New(hostPort(t, srv.URL()))
	must(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	admin := conn.Auth{Token: tg.Creds().AdminToken}
	// Short client pings so that a stalled link is noticed in seconds.
	proxied := connect(ctx, t, srv, admin, clientOpts{URL: proxy.URL("http"), PingInterval: p.ping, PingTimeout: p.pingTimeout})
	direct := connect(ctx, t, srv, admin, clientOpts{})
	rp := newReplicas(ctx, t, proxied)
	rd := newReplicas(ctx, t, direct)
	var creates atomic.Int64
	onlyCreates, err := proxied.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Event: protocol.EventCreate, UID: "creates", Persistent: true},
		handlers.Funcs{OnCreate: func(handlers.Event) error { creates.Add(1); return nil }})
	must(t, err)

	w := newWriter(srv.REST(), uint64(time.Now().UnixNano()))
	stopWriter := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, stopWriter, 30) })
	var once sync.Once
	stop := func() { once.Do(func() { close(stopWriter) }); wg.Wait() }
	defer stop()

	faults := []string{"cut", "kill", "stall", "reconnect", "refuse"}
	counts := map[string]int{}
	killed := 0
	// The sessions the last fault broke: the final checks wait for both
	// clients to be past it, since a cut the client has not noticed yet
	// looks like a live session.
	var proxiedBefore, directBefore int
	directDropped := false
	deadline := time.Now().Add(dur)
	// Every kind of fault comes at least once, however short the soak.
	for round := 0; round < len(faults) || time.Now().Before(deadline); round++ {
		// A burst of writes between two faults.
		bctx, bcancel := within(ctx, restartTimeout)
		err := w.waitWrites(bctx, int64(p.writes+rand.IntN(2*p.writes)))
		bcancel()
		must(t, err)

		fault := faults[round%len(faults)]
		if fault == "kill" && killed >= kills {
			fault = "cut"
		}
		counts[fault]++
		proxiedBefore, directBefore = len(proxied.Connects()), len(direct.Connects())
		directDropped = fault == "kill" || fault == "reconnect"
		switch fault {
		case "cut": // both sides get a reset
			proxy.Cut()
		case "kill": // kill -9, then start again
			killed++
			rctx, rcancel := within(ctx, restartTimeout)
			started := time.Now()
			err := srv.Kill9AndRestart(rctx)
			rcancel()
			must(t, err)
			t.Logf("kill -9 and restart took %v", time.Since(started).Round(time.Millisecond))
		case "stall": // a silent link: the client's pings notice it
			s := proxied.Conn().Session()
			if s == nil {
				proxiedBefore-- // nothing to stall: the session to come is past it
				continue
			}
			proxy.Stall(true)
			sctx, scancel := within(ctx, eventTimeout)
			select {
			case <-s.Done():
			case <-sctx.Done():
			}
			scancel()
			proxy.Stall(false)
			if s.Err() == nil {
				t.Fatal("a stalled link was not detected")
			}
		case "reconnect": // client-side replacement
			rctx, rcancel := within(ctx, restartTimeout)
			must(t, proxied.Reconnect(rctx))
			must(t, direct.Reconnect(rctx))
			rcancel()
		case "refuse": // a cut, and no way back for a second
			proxy.Refuse(p.refuse)
			proxy.Cut()
		}
	}
	stop()
	t.Logf("soak: %v, faults %v, %d writes (%d failed), %d creates seen by the event-only subscription, reconnects: proxied %d, direct %d",
		dur, counts, w.ok.Load(), w.failed.Load(), creates.Load(), len(proxied.Connects())-1, len(direct.Connects())-1)

	wctx, wcancel := within(ctx, restartTimeout)
	must(t, proxied.waitFor(wctx, func(_ []error, c []conn.ConnectReason) bool { return len(c) > proxiedBefore }))
	if directDropped {
		must(t, direct.waitFor(wctx, func(_ []error, c []conn.ConnectReason) bool { return len(c) > directBefore }))
	}
	wcancel()
	rp.check(ctx, t, srv, "proxied")
	rd.check(ctx, t, srv, "direct")
	// The event-only subscription has no rows; its resync proves it is
	// registered on the current session.
	rctx, rcancel := within(ctx, eventTimeout)
	defer rcancel()
	must(t, onlyCreates.Resync(rctx))
	allActive(t, proxied)
	allActive(t, direct)
}
