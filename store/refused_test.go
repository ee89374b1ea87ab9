package store_test

import (
	"errors"
	"testing"

	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/store"
)

// A single-item replica whose item is deleted by a batch delete (keys as
// JSON numbers, which Directus never matches against the item: docs/PROTOCOL.md
// §5.2) gets no delete event. Its reconcile is refused (FORBIDDEN: the item
// is gone) and empties the replica instead of keeping the deleted row
// forever. Found by the conformance suite against Directus 12.4.1.
func TestRefusedReconcileEmptiesTheReplica(t *testing.T) {
	e := setup(t)
	rows, err := e.srv.Create("posts", map[string]any{"title": "doomed", "status": "published"})
	if err != nil {
		t.Fatal(err)
	}
	id := rows[0]["id"].(int64)
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Item: id, Persistent: true}); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan store.Change[int64, Post], 1)
	c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		if ch.Op == store.OpDelete {
			deleted <- ch
		}
	}))
	if err := e.srv.Delete("posts", id); err != nil { // a number: no event for the item subscription
		t.Fatal(err)
	}
	if _, ok := c.Get(id); !ok {
		t.Fatal("the replica lost the row without an event")
	}
	if err := c.Reconcile(ctx(t)); !errors.Is(err, manager.ErrResyncRefused) {
		t.Fatalf("Reconcile: %v, want ErrResyncRefused", err)
	}
	if c.Len() != 0 {
		t.Fatalf("the replica still holds %v after a refused reconcile", c.Keys())
	}
	if ch := <-deleted; ch.Key != id || !ch.Resync {
		t.Fatalf("listener heard %+v", ch)
	}
}
