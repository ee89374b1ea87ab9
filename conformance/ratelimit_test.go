package conformance

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// pacedSubscriptions is how many distinct subscriptions the paced restore
// carries (with -short, both carry twice the limiter's budget of one
// window). The unpaced one, which spends most of its
// time on frames the limiter drops, carries fewer, to keep the suite's
// time.
const (
	pacedSubscriptions   = 10000
	unpacedSubscriptions = 2000
)

// Directus's rate limiter drops every message past its budget
// (docs/PROTOCOL.md §9). 10,000 subscriptions paced by Config.SendRate,
// made and then restored after a server restart, all end active with
// their init, none lost, and the limiter never drops a frame; unpaced,
// what it drops is subscribed again until every one is active.
func TestRateLimitedRestore(t *testing.T) {
	// In -short it runs in parallel with the others (run); the full run
	// keeps it sequential, away from the timing of the real server's
	// other scenarios.
	run(t, scenarioRateLimitedRestore)
}

func scenarioRateLimitedRestore(t *testing.T, tg Target) {
	srv := tg.Server(t, Limited)
	if !srv.Restartable() {
		missing(t, loadRealEnv(), "the limited profile's server cannot be restarted by this checkout's scripts")
	}
	lim := srv.Settings().RateLimit
	perSecond := float64(lim.Points) / lim.Duration.Seconds()
	for _, paced := range []bool{true, false} {
		name := map[bool]string{true: "paced", false: "unpaced"}[paced]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			restoreSubscriptions := unpacedSubscriptions
			if paced {
				restoreSubscriptions = pacedSubscriptions
			}
			if testing.Short() {
				// Twice the limiter's budget of one window: unpaced, the
				// limiter must drop some (or the resend goes untested);
				// paced, it must drop none although they do not fit in one.
				restoreSubscriptions = 2 * int(lim.Points)
			}
			// Unpaced: no SendRate, and every subscribe in flight at once.
			o := clientOpts{MaxInFlight: 1 << 30}
			if paced {
				// A window sees at most burst + rate×duration frames, and
				// the server holds at most the default in-flight subscribes
				// unread, however slowly it serves them.
				o = clientOpts{SendRate: 0.85 * perSecond, SendBurst: lim.Points / 20}
			}
			c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, o)
			var resynced atomic.Int64
			allBack := make(chan struct{})
			h := handlers.HandlerFunc(func(ev handlers.Event) error {
				if ev.Kind == handlers.KindInit && ev.Resync && resynced.Add(1) == int64(restoreSubscriptions) {
					close(allBack)
				}
				return nil
			})
			start := time.Now()
			var g errgroup.Group
			g.SetLimit(256)
			for i := range restoreSubscriptions {
				g.Go(func() error {
					// Distinct queries: one server subscription each.
					q := &protocol.Query{Fields: []string{"id"}, Filter: map[string]any{"id": map[string]any{"_eq": -1 - i}}}
					_, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Query: q, Persistent: true}, h)
					return err
				})
			}
			must(t, g.Wait())
			t.Logf("%s: %d subscriptions made in %v", name, restoreSubscriptions, time.Since(start).Round(time.Millisecond))

			restarted := time.Now()
			must(t, srv.Restart(ctx))
			select {
			case <-allBack:
			case <-ctx.Done():
				t.Fatalf("%d of %d subscriptions restored", resynced.Load(), restoreSubscriptions)
			}
			t.Logf("%s: restored in %v after the restart began", name, time.Since(restarted).Round(time.Millisecond))
			if n := len(c.ActiveSubscriptions()); n != restoreSubscriptions {
				t.Fatalf("%d subscriptions, want %d", n, restoreSubscriptions)
			}
			allActive(t, c)
			drops := limiterDrops(c)
			t.Logf("%s: the rate limiter dropped %d frames", name, drops)
			// Pacing keeps what the client sends under the limit; the
			// server counts frames as it reads them, so a machine starved
			// of CPU may still read a window's frames late and together
			// into the next. A few such drops are resent; more than one in
			// a thousand frames is not pacing.
			if paced && drops*1000 > 2*restoreSubscriptions {
				t.Fatalf("paced at %.0f/s, the limiter still dropped %d frames", o.SendRate, drops)
			}
			subscribes, _ := c.checkWire(t)
			// A real Directus on a small machine may serve subscribes more
			// slowly than its limiter allows: it then drops nothing.
			// directustest serves them at once, and must.
			if !paced && !tg.Real() && (drops == 0 || subscribes <= 2*restoreSubscriptions) {
				t.Fatalf("unpaced: the limiter dropped %d frames and %d subscribes were sent: the scenario did not test the resend", drops, subscribes)
			}
			if paced && (subscribes < 2*restoreSubscriptions || subscribes > 2*restoreSubscriptions+drops) {
				t.Fatalf("%d subscribes sent paced with %d drops, want %d (each once per session) and at most one resend per drop", subscribes, drops, 2*restoreSubscriptions)
			}
		})
	}
}

// limiterDrops counts the REQUESTS_EXCEEDED frames c received.
func limiterDrops(c *client) int {
	n := 0
	for _, f := range c.wire.Frames(0) {
		if f.Out || f.Type != "server" {
			continue
		}
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(f.Data, &e) == nil && e.Error.Code == string(protocol.CodeRequestsExceeded) {
			n++
		}
	}
	return n
}
