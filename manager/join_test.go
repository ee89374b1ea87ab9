package manager_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// TestJoinsCostOneInitEach: 30 identical subscriptions join one by one
// while writes go on. Each gets one init, for itself, before any event; the
// ones already there see no resync and lose no event; the server holds one
// subscription and was sent one subscribe.
func TestJoinsCostOneInitEach(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	for i := range 50 {
		if _, err := e.srv.Create("posts", map[string]any{"title": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	const joins = 30
	var recs []*recorder
	for j := range joins {
		r := newRecorder()
		if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: fmt.Sprint("j", j), Query: &protocol.Query{Limit: -1}, Persistent: true}), r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		// A write between joins: every subscriber so far must see it.
		if _, err := e.srv.Create("posts", map[string]any{"title": fmt.Sprint("after join ", j)}); err != nil {
			t.Fatal(err)
		}
	}
	for j, r := range recs {
		if ev := r.next(t); ev.Kind != handlers.KindInit || ev.Resync {
			t.Fatalf("joiner %d: first event %v (resync %v), want its init", j, ev.Kind, ev.Resync)
		}
		// Then creates only: every one after its join, and at most the one
		// just before it, whose event may reach it after it attached (it
		// repeats a row its init holds).
		creates := 0
		for {
			ev := r.next(t)
			if ev.Kind != handlers.KindCreate {
				t.Fatalf("joiner %d: %v event, want only creates after its init", j, ev.Kind)
			}
			creates++
			if strings.Contains(string(ev.Data), fmt.Sprint("after join ", joins-1)) {
				break
			}
		}
		if creates < joins-j || creates > joins-j+1 {
			t.Fatalf("joiner %d: %d creates, want %d (or one more)", j, creates, joins-j)
		}
		r.none(t)
	}
	if n := e.wire.count("subscribe"); n != 1 {
		t.Fatalf("%d subscribe frames for %d identical subscriptions", n, joins)
	}
	if n := len(e.srv.Subscriptions()); n != 1 {
		t.Fatalf("%d server subscriptions", n)
	}
}
