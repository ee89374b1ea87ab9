package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/store"
)

// TestChangesLoop: the iterator form yields the rows present as Initial
// adds, then later changes in order, and stops listening when the loop
// ends.
func TestChangesLoop(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	if err := c.Handle(ev(handlers.KindInit, `[{"id":1,"title":"a"}]`)); err != nil {
		t.Fatal(err)
	}
	var got []store.Change[int64, Post]
	for ch, err := range c.Changes(ctx(t)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ch)
		if ch.Initial {
			if err := c.Handle(ev(handlers.KindUpdate, `[{"id":1,"title":"b"}]`)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	if len(got) != 2 || got[0].Op != store.OpAdd || !got[0].Initial || got[1].Op != store.OpUpdate ||
		got[1].Old.Title != "a" || got[1].New.Title != "b" {
		t.Fatalf("changes %+v", got)
	}
	// The loop's listener is gone: changes now cost it nothing (goleak
	// checks its goroutine ended).
	if err := c.Handle(ev(handlers.KindDelete, `[1]`)); err != nil {
		t.Fatal(err)
	}
}

// TestChangesEnd: the last pair says why the loop ended.
func TestChangesEnd(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	if err := c.Handle(ev(handlers.KindInit, `[{"id":1,"title":"a"}]`)); err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	var last error
	for _, err := range c.Changes(cx) {
		if err != nil {
			last = err
			break
		}
		cancel()
	}
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("ended with %v, want context.Canceled", last)
	}
	last = nil
	for _, err := range c.Changes(ctx(t)) {
		if err != nil {
			last = err
			break
		}
		_ = c.Close()
	}
	if !errors.Is(last, store.ErrClosed) {
		t.Fatalf("ended with %v, want ErrClosed", last)
	}
}
