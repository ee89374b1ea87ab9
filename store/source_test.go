package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/store"
)

// scriptSource sends its events, then waits for ctx.
type scriptSource []handlers.Event

func (s scriptSource) Run(ctx context.Context, h handlers.Handler) error {
	for _, e := range s {
		if err := h.Handle(e); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestFollowAppliesASourcesEvents(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	changes := make(chan store.Change[int64, Post], 16)
	defer c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) { changes <- ch }))()

	resync := ev(handlers.KindInit, `[{"id":2,"title":"b2"},{"id":3,"title":"c"}]`)
	resync.Resync = true
	src := scriptSource{
		ev(handlers.KindInit, `[{"id":1,"title":"a"},{"id":2,"title":"b"}]`),
		ev(handlers.KindUpdate, `{"id":1,"title":"a1"}`),
		ev(handlers.KindDelete, `["1"]`),
		resync,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Follow(ctx, src) }()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, func() bool { return c.Stats().Resyncs == 1 }); err != nil {
		t.Fatal(err)
	}
	if got := ids(c); !slices.Equal(got, []int64{2, 3}) {
		t.Fatalf("keys %v, want [2 3]", got)
	}
	if p, _ := c.Get(2); p.Title != "b2" {
		t.Fatalf("row 2 = %+v", p)
	}
	want := []string{"add 1 initial", "add 2 initial", "update 1", "delete 1", "update 2 resync", "add 3 resync"}
	var got []string
	for range want {
		ch := <-changes
		s := ch.Op.String() + " " + string(rune('0'+ch.Key))
		if ch.Initial {
			s += " initial"
		}
		if ch.Resync {
			s += " resync"
		}
		got = append(got, s)
	}
	slices.Sort(got[:2]) // the first init's adds come in map order
	slices.Sort(got[4:])
	wantSorted := slices.Clone(want)
	slices.Sort(wantSorted[4:])
	if !slices.Equal(got, wantSorted) {
		t.Fatalf("changes %q, want %q", got, wantSorted)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow = %v, want context.Canceled", err)
	}
}

func TestFollowEndsWhenTheCollectionCloses(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	events := make(chan handlers.Event)
	src := sourceFunc(func(ctx context.Context, h handlers.Handler) error {
		for {
			select {
			case e := <-events:
				if err := h.Handle(e); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	done := make(chan error, 1)
	go func() { done <- c.Follow(context.Background(), src) }()
	events <- ev(handlers.KindInit, `[{"id":1}]`)
	c.Close()
	// Follow notices the Close at the next event at the latest.
	var err error
	select {
	case events <- ev(handlers.KindUpdate, `{"id":2}`):
		err = <-done
	case err = <-done:
	}
	if !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Follow = %v, want ErrClosed", err)
	}
	if _, ok := c.Get(2); ok {
		t.Fatal("an event after Close was applied")
	}
}

type sourceFunc func(ctx context.Context, h handlers.Handler) error

func (f sourceFunc) Run(ctx context.Context, h handlers.Handler) error { return f(ctx, h) }
