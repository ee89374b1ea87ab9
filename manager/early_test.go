package manager_test

import (
	"context"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/hostile"
	"github.com/e41af43e/directus-realtime/manager"
)

// TestEventsOvertakingTheInit: Directus registers a subscription before it
// sends its init, and a resync read runs while the server subscription
// delivers, so events can overtake an init. They are held and follow it; if
// more than the queue holds overtake it, the init is incomplete and another
// resync follows instead of them. The embedded server never reorders like
// this, so a scripted server plays the race.
func TestEventsOvertakingTheInit(t *testing.T) {
	reads := make(chan int, 8)
	srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) {
		if c.AcceptAuth(ctx) != nil {
			return
		}
		sub, err := c.ReadType(ctx, "subscribe")
		if err != nil {
			return
		}
		uid := hostile.StringUID(sub.UID)
		// Two events overtake the init.
		for _, f := range []string{
			`{"type":"subscription","event":"create","data":[{"id":1}],"uid":%s}`,
			`{"type":"subscription","event":"create","data":[{"id":2}],"uid":%s}`,
			`{"type":"subscription","event":"init","data":[],"uid":%s}`,
		} {
			if c.Sendf(ctx, f, uid) != nil {
				return
			}
		}
		for n := 1; ; n++ {
			read, err := c.ReadType(ctx, "items")
			if err != nil {
				return
			}
			reads <- n
			if n == 1 {
				// Six events (the queue holds four) overtake the read's
				// reply: that init is incomplete.
				for i := 0; i < 6; i++ {
					if c.Sendf(ctx, `{"type":"subscription","event":"update","data":[{"id":1}],"uid":%s}`, uid) != nil {
						return
					}
				}
			}
			if c.Sendf(ctx, `{"type":"items","data":[{"id":%d}],"uid":%s}`, n, read.UID) != nil {
				return
			}
		}
	})
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}, PingInterval: -1},
		&manager.Options{QueueSize: 4, Retry: conn.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	got := make(chan handlers.Event, 100)
	sub, err := m.Subscribe(ctx(t), manager.SubscribeOptions{Collection: "posts", UID: "p", Persistent: true},
		handlers.HandlerFunc(func(ev handlers.Event) error { got <- ev; return nil }))
	if err != nil {
		t.Fatal(err)
	}
	next := func() handlers.Event {
		t.Helper()
		select {
		case ev := <-got:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
			return handlers.Event{}
		}
	}
	for _, want := range []string{"init", "create", "create"} {
		if ev := next(); ev.Kind.String() != want {
			t.Fatalf("got %s, want %s", ev.Kind, want)
		}
	}
	resynced := make(chan error, 1)
	go func() { resynced <- sub.Resync(context.Background()) }()
	// The first read's reply is incomplete; a second read follows, and the
	// handler gets two resync inits and none of the six updates.
	for _, rows := range []string{`[{"id":1}]`, `[{"id":2}]`} {
		ev := next()
		if ev.Kind != handlers.KindInit || !ev.Resync || string(ev.Data) != rows {
			t.Fatalf("got %s %s, want a resync init with %s", ev.Kind, ev.Data, rows)
		}
	}
	if err := <-resynced; err != nil {
		t.Fatal(err)
	}
	if n := <-reads; n != 1 {
		t.Fatal(n)
	}
	if n := <-reads; n != 2 {
		t.Fatal(n)
	}
	select {
	case ev := <-got:
		t.Fatalf("unexpected %s %s", ev.Kind, ev.Data)
	case <-time.After(50 * time.Millisecond): // nothing else is due: a window to see a stray event
	}
	st := sub.Stats()
	if st.Overflows != 1 || st.ResyncsByCause[manager.CauseRequested] != 1 || st.ResyncsByCause[manager.CauseLostEarly] != 1 {
		t.Fatalf("stats %+v", st)
	}
}
