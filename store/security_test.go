package store_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/store"
)

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestListenerFloodBoundsMemory: a listener that stops consuming while
// 50,000 changes are applied holds at most its queue; when it resumes it
// hears one OpReset in place of the backlog, and a re-read of the
// collection gives it the current rows.
func TestListenerFloodBoundsMemory(t *testing.T) {
	const rows, updates, queue = 500, 100, 1000
	c := newPosts(store.Options[int64, Post]{ListenerQueue: queue})
	defer c.Close()
	title := strings.Repeat("t", 200)
	batch := func(views int) string {
		var b strings.Builder
		b.WriteByte('[')
		for i := 1; i <= rows; i++ {
			if i > 1 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"id":%d,"title":"%s-%d","views":%d}`, i, title, views, views)
		}
		b.WriteByte(']')
		return b.String()
	}
	apply(t, c, ev(handlers.KindInit, batch(0)))

	release := make(chan struct{})
	released := false
	defer func() {
		if !released { // a failed check must not leave Close waiting for the listener
			close(release)
		}
	}()
	var heard, resets int
	var mirror map[int64]Post
	remove := c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		<-release
		heard++
		switch ch.Op {
		case store.OpReset:
			resets++
			mirror = c.Snapshot()
		case store.OpAdd, store.OpUpdate:
			if mirror == nil {
				mirror = map[int64]Post{}
			}
			mirror[ch.Key] = ch.New
		case store.OpDelete:
			delete(mirror, ch.Key)
		}
	}))
	defer remove()

	before := heapInUse()
	for u := 1; u <= updates; u++ {
		apply(t, c, ev(handlers.KindUpdate, batch(u)))
	}
	during := heapInUse()
	grown := int64(during) - int64(before)
	t.Logf("%d changes for a blocked listener with a queue of %d: heap in use %+.1f MiB", rows*(updates+1), queue, float64(grown)/(1<<20))
	if grown > 8<<20 {
		t.Fatalf("heap grew by %d MiB while the listener was blocked", grown>>20)
	}

	close(release)
	released = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.FlushListeners(ctx); err != nil {
		t.Fatal(err)
	}
	if resets == 0 || heard > queue+2 {
		t.Fatalf("listener heard %d changes (%d resets), want one reset in place of the backlog", heard, resets)
	}
	want := c.Snapshot()
	if len(mirror) != len(want) {
		t.Fatalf("listener rebuilt %d rows, want %d", len(mirror), len(want))
	}
	for k, v := range want {
		if mirror[k] != v {
			t.Fatalf("row %d: listener has %+v, replica %+v", k, mirror[k], v)
		}
	}
}
