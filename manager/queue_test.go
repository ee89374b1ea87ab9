package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// A queue that never empties during a long burst stays at its bound and
// loses nothing; the handler goroutine is one for the whole burst. The
// frames are routed by hand so that the number of queued events is known at
// each step. (The queue's memory bound itself is tested in internal/queue.)
func TestQueueStaysAtItsBoundDuringALongBurst(t *testing.T) {
	const queueSize, burst = 100, 5000
	m, err := New(&conn.Config{URL: "http://127.0.0.1:1", Auth: conn.Auth{Token: "t"}}, &Options{QueueSize: queueSize})
	if err != nil {
		t.Fatal(err)
	}
	took := make(chan handlers.Event)
	gate := make(chan struct{})
	released := make(chan struct{})
	release := func() {
		select {
		case <-released:
			return
		default:
		}
		close(released)
		go func() {
			for range took {
			}
		}()
		close(gate)
	}
	// Close waits for the handler, which must not be left blocked when a
	// check fails.
	defer func() {
		release()
		m.Close()
		close(took)
	}()
	subscribed := make(chan *Subscription, 1)
	go func() {
		s, err := m.Subscribe(context.Background(), SubscribeOptions{Collection: "posts", UID: "p", Persistent: true},
			handlers.HandlerFunc(func(ev handlers.Event) error {
				took <- ev
				<-gate
				return nil
			}))
		if err != nil {
			t.Error(err)
		}
		subscribed <- s
	}()
	for deadline := time.Now().Add(5 * time.Second); ; {
		m.mu.Lock()
		_, ok := m.wire["rt1"]
		m.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("attempt not recorded")
		}
		time.Sleep(time.Millisecond) // polling an internal map; there is no signal for it
	}
	frame := func(event string, id int) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeSubscription, Event: event, UID: "rt1",
			Data: json.RawMessage(fmt.Sprintf(`[{"id":%d}]`, id)), Received: time.Now()}
	}
	m.route(frame("init", 0))
	if ev := <-took; ev.Kind != handlers.KindInit {
		t.Fatalf("first event %s", ev.Kind)
	}
	sub := <-subscribed
	// The handler holds the init; keep queueSize-1 events queued while it
	// takes them one at a time.
	for i := 1; i < queueSize; i++ {
		m.route(frame("create", i))
	}
	for i := queueSize; i < burst; i++ {
		gate <- struct{}{}
		<-took
		m.route(frame("create", i))
		sub.dmu.Lock()
		pending := sub.q.Len()
		sub.dmu.Unlock()
		if pending != queueSize-1 {
			t.Fatalf("after event %d: %d queued, want %d", i, pending, queueSize-1)
		}
	}
	release()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := sub.Stats(); st.Overflows != 0 || st.Events != burst || st.Queued != 0 {
		t.Fatalf("stats %+v", st)
	}
}
