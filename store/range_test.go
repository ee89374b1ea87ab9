package store_test

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/store"
)

// waitWriterBlocked returns once some goroutine is blocked taking a write
// lock inside the collection's upsert: an event waiting for Range to end.
func waitWriterBlocked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		n := runtime.Stack(buf, true)
		for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
			if bytes.Contains(g, []byte("sync.(*RWMutex).Lock")) && bytes.Contains(g, []byte(").upsert(")) {
				return
			}
		}
		runtime.Gosched()
	}
	t.Fatal("the writer never blocked")
}

// Range lets f read the collection (its documentation says so). A read
// inside f must not wait for an event that is itself waiting for Range to
// end: with one RWMutex, the nested read lock queued behind the pending
// write lock and both waited forever.
func TestReadsInsideRangeWhileAnEventWaits(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{Indexers: map[string]store.IndexFunc[Post]{
		"status": func(p Post) []string { return []string{p.Status} },
	}})
	// Not deferred: after a deadlock Close would wait forever too.
	apply(t, c, ev(handlers.KindInit, `[{"id":1,"status":"draft"}]`))

	entered := make(chan struct{})
	ranged := make(chan struct{})
	applied := make(chan struct{})
	go func() {
		defer close(ranged)
		c.Range(func(k int64, p Post) bool {
			close(entered)
			waitWriterBlocked(t)
			// The same state as the pass: the event has not been applied.
			if _, ok := c.Get(2); ok || c.Len() != 1 {
				t.Error("an event was applied during Range")
			}
			if keys, _ := c.IndexKeys("status", "draft"); len(keys) != 1 {
				t.Errorf("index inside Range: %v", keys)
			}
			if rows, _ := c.ByIndex("status", p.Status); len(rows) != 1 || rows[0] != p {
				t.Errorf("by index inside Range: %v", rows)
			}
			return true
		})
	}()
	<-entered
	go func() {
		defer close(applied)
		_ = c.Handle(ev(handlers.KindCreate, `[{"id":2,"status":"draft"}]`))
	}()
	select {
	case <-ranged:
	case <-time.After(10 * time.Second):
		t.Fatal("a read inside Range deadlocked with an event waiting to be applied")
	}
	<-applied
	if _, ok := c.Get(2); !ok {
		t.Error("the event was not applied after Range")
	}
	_ = c.Close()
}
