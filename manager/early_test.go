package manager

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Directus registers a subscription before it sends its init, so events can
// overtake the init. They are held and follow it; if more than the queue
// size overtake it, the init is incomplete and another resync follows. The
// embedded server never reorders like this, so the frames are routed by hand.
func TestEventsOvertakingTheInit(t *testing.T) {
	m, err := New(&conn.Config{URL: "http://127.0.0.1:1", Auth: conn.Auth{Token: "t"}}, &Options{QueueSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := make(chan handlers.Event, 100)
	subscribed := make(chan *Subscription)
	go func() {
		s, err := m.Subscribe(context.Background(), SubscribeOptions{Collection: "posts", UID: "p", Persistent: true},
			handlers.HandlerFunc(func(ev handlers.Event) error { got <- ev; return nil }))
		if err != nil {
			t.Error(err)
		}
		subscribed <- s
	}()
	// Without a session the attempt is recorded, not sent; its uid is rt1.
	waitWire := func(uid protocol.UID) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			m.mu.Lock()
			_, ok := m.wire[uid]
			m.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("attempt %s not recorded", uid)
			}
			time.Sleep(time.Millisecond) // polling an internal map; there is no signal for it
		}
	}
	frame := func(uid protocol.UID, event, data string) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeSubscription, Event: event, UID: uid, Data: json.RawMessage(data), Received: time.Now()}
	}
	waitWire("rt1")
	// Two events overtake the init: they follow it.
	m.route(frame("rt1", "create", `[{"id":1}]`))
	m.route(frame("rt1", "create", `[{"id":2}]`))
	m.route(frame("rt1", "init", `[]`))
	sub := <-subscribed
	for _, want := range []string{"init", "create", "create"} {
		if ev := <-got; ev.Kind.String() != want {
			t.Fatalf("got %s, want %s", ev.Kind, want)
		}
	}
	// Now more than the queue size overtake a resync's init.
	m.mu.Lock()
	sub.markResyncing()
	m.resyncLocked(sub.ss, true)
	m.mu.Unlock()
	waitWire("rt2")
	for i := 0; i < 6; i++ {
		m.route(frame("rt2", "update", `[{"id":1}]`))
	}
	m.route(frame("rt2", "init", `[{"id":1}]`))
	if ev := <-got; ev.Kind != handlers.KindInit || !ev.Resync {
		t.Fatalf("got %+v", ev)
	}
	// The incomplete init is followed by another attempt, not by the events.
	waitWire("rt3")
	sub.dmu.Lock()
	st := sub.stateLocked()
	sub.dmu.Unlock()
	if sub.Stats().Overflows != 1 || st != StateResyncing {
		t.Fatalf("stats %+v state %v", sub.Stats(), st)
	}
	m.route(frame("rt3", "init", `[{"id":1}]`))
	if ev := <-got; ev.Kind != handlers.KindInit || !ev.Resync {
		t.Fatalf("got %+v", ev)
	}
	select {
	case ev := <-got:
		t.Fatalf("unexpected %s", ev.Kind)
	default:
	}
}
