package manager_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// TestEventsLoop: the iterator form yields the init, then the events in
// order; breaking out of the loop ends the wire subscription before the
// loop returns.
func TestEventsLoop(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	if _, err := e.srv.Create("posts", map[string]any{"title": "before"}); err != nil {
		t.Fatal(err)
	}
	var kinds []handlers.Kind
	for ev, err := range e.m.Events(ctx(t), manager.SubscribeOptions{Collection: "posts", UID: "loop"}) {
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Kind)
		if ev.Kind == handlers.KindInit {
			if len(e.srv.Subscriptions()) != 1 {
				t.Fatalf("server has %d subscriptions during the loop", len(e.srv.Subscriptions()))
			}
			if _, err := e.srv.Create("posts", map[string]any{"title": "during"}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	if len(kinds) != 2 || kinds[0] != handlers.KindInit || kinds[1] != handlers.KindCreate {
		t.Fatalf("the loop saw %v, want init then create", kinds)
	}
	if e.m.HasSubscription("loop") {
		t.Fatal("the subscription outlived its loop")
	}
	e.wire.waitCount(t, "unsubscribe", 1)
	e.wire.waitCount(t, "ack", 1)
	if n := len(e.srv.Subscriptions()); n != 0 {
		t.Fatalf("server still has %d subscriptions after the loop", n)
	}
}

// TestEventsEnd: the last pair says why the stream ended.
func TestEventsEnd(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	t.Run("ctx done", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx(t))
		defer cancel()
		var last error
		for ev, err := range e.m.Events(c, manager.SubscribeOptions{Collection: "posts"}) {
			if err != nil {
				last = err
				break
			}
			if ev.Kind == handlers.KindInit {
				cancel()
			}
		}
		if !errors.Is(last, context.Canceled) {
			t.Fatalf("ended with %v, want context.Canceled", last)
		}
	})
	t.Run("subscribe refused", func(t *testing.T) {
		var last error
		n := 0
		for _, err := range e.m.Events(ctx(t), manager.SubscribeOptions{Collection: "nope"}) {
			n++
			last = err
		}
		var se *protocol.ServerError
		if n != 1 || !errors.As(last, &se) {
			t.Fatalf("%d pairs ending with %v, want one server error", n, last)
		}
	})
	t.Run("unsubscribed elsewhere", func(t *testing.T) {
		var last error
		for ev, err := range e.m.Events(ctx(t), manager.SubscribeOptions{Collection: "posts", UID: "gone"}) {
			if err != nil {
				last = err
				break
			}
			if ev.Kind == handlers.KindInit {
				if err := e.m.Unsubscribe("gone"); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !errors.Is(last, manager.ErrUnsubscribed) {
			t.Fatalf("ended with %v, want ErrUnsubscribed", last)
		}
	})
	t.Run("persistent refused", func(t *testing.T) {
		for _, err := range e.m.Events(ctx(t), manager.SubscribeOptions{Collection: "posts", Persistent: true}) {
			var ce *protocol.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("%v, want a ConfigError", err)
			}
		}
	})
}

// TestEventsOverflow: a loop body that falls behind its queue gets a fresh
// init marked Resync, as a handler does.
func TestEventsOverflow(t *testing.T) {
	e := setup(t, &manager.Options{QueueSize: 2, OverflowWait: time.Millisecond}, conn.Auth{})
	for ev, err := range e.m.Events(ctx(t), manager.SubscribeOptions{Collection: "posts"}) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind != handlers.KindInit {
			continue
		}
		if ev.Resync {
			break // the overflow was repaired by a resync
		}
		// The body is busy while the server writes far more than the queue holds.
		for i := range 50 {
			if _, err := e.srv.Create("posts", map[string]any{"title": fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		select { // reported once, while the body is still busy
		case err := <-e.errs:
			if !errors.Is(err, manager.ErrHandlerStalled) {
				t.Fatalf("OnError got %v, want the stall", err)
			}
		case <-ctx(t).Done():
			t.Fatal("the overflow was not reported")
		}
	}
}
