package manager_test

import (
	"encoding/json"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// blockedHandler blocks on every event while its gate is shut, and keeps
// the views of every row from inits and updates.
type blockedHandler struct {
	mu      sync.Mutex
	gate    chan struct{} // nil while open
	views   map[float64]float64
	handled chan struct{} // an event was handled
}

func (h *blockedHandler) Handle(ev handlers.Event) error {
	h.mu.Lock()
	g := h.gate
	h.mu.Unlock()
	if g != nil {
		<-g
	}
	defer func() {
		select {
		case h.handled <- struct{}{}:
		default:
		}
	}()
	if ev.Kind != handlers.KindInit && ev.Kind != handlers.KindUpdate {
		return nil
	}
	rows, err := handlers.Items[struct{ ID, Views float64 }](ev)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Kind == handlers.KindInit {
		h.views = make(map[float64]float64, len(rows))
	}
	for _, r := range rows {
		h.views[r.ID] = r.Views
	}
	return nil
}

// all reports whether every one of n rows has these views.
func (h *blockedHandler) all(n int, views float64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.views) != n {
		return false
	}
	for _, v := range h.views {
		if v != views {
			return false
		}
	}
	return true
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestOverflowBoundsMemory: a handler that stops consuming while the server
// sends 12 MiB of events costs about its queue; the overflow turns into a
// resync whose init, once the handler resumes, carries the final rows.
func TestOverflowBoundsMemory(t *testing.T) {
	const rows, updates = 200, 60
	e := setup(t, &manager.Options{QueueSize: 2}, conn.Auth{})
	items := make([]map[string]any, rows)
	keys := make([]any, rows)
	for i := range items {
		items[i] = map[string]any{"title": strings.Repeat("t", 1000), "status": "draft", "views": 0}
	}
	created, err := e.srv.Quiet().Create("posts", items...)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range created {
		keys[i] = r["id"]
	}
	h := &blockedHandler{handled: make(chan struct{}, 1)}
	sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true, Query: &protocol.Query{Limit: -1}}), h)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	h.mu.Lock()
	h.gate = release
	h.mu.Unlock()

	before := heapInUse()
	goroutines := runtime.NumGoroutine()
	frameBytes := 0
	for u := 1; u <= updates; u++ {
		updated, err := e.srv.Update("posts", keys, map[string]any{"views": u})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(updated)
		frameBytes += len(b)
	}
	// Every event was read and routed once the pong is back.
	if _, err := e.m.Conn().Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
	during := heapInUse()
	grown := int64(during) - int64(before)
	t.Logf("%d events, %.1f MiB of event data for a blocked handler with a queue of 2: heap in use %+.1f MiB, %d overflows, goroutines %+d",
		updates, float64(frameBytes)/(1<<20), float64(grown)/(1<<20), sub.Stats().Overflows, runtime.NumGoroutine()-goroutines)
	if sub.Stats().Overflows == 0 {
		t.Fatal("no overflow")
	}
	if grown > int64(frameBytes)/3 {
		t.Fatalf("heap grew by %.1f MiB for %.1f MiB of events", float64(grown)/(1<<20), float64(frameBytes)/(1<<20))
	}
	if n := runtime.NumGoroutine() - goroutines; n > 2 {
		t.Fatalf("%d more goroutines while the handler is blocked", n)
	}

	// The handler resumes: the resync init (and any event after it) brings
	// the final rows.
	h.mu.Lock()
	h.gate = nil
	h.mu.Unlock()
	close(release)
	deadline := time.After(10 * time.Second)
	for !h.all(rows, updates) || sub.State() != manager.StateActive {
		select {
		case <-h.handled:
		case <-deadline:
			h.mu.Lock()
			hist := map[float64]int{}
			for _, v := range h.views {
				hist[v]++
			}
			h.mu.Unlock()
			t.Fatalf("rows not final after the handler resumed (state %v, stats %+v, views %v)", sub.State(), sub.Stats(), hist)
		}
	}
	if sub.Stats().Resyncs == 0 {
		t.Fatal("no resync init after the overflow")
	}
}
