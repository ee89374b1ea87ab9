package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/relay"
	"github.com/e41af43e/directus-realtime/store"
)

// A fleet replica is synced only once the status entry says the bucket is
// complete: rows written before that are part of its first init.
func TestSourceWaitsForTheStatusToSayComplete(t *testing.T) {
	e := newEnv(t)
	_, js := e.jetstream()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	put("1", `{"id":1,"title":"a"}`)
	put(relay.StatusKey, `{"complete":false}`)

	posts, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
	if err != nil {
		t.Fatal(err)
	}
	defer posts.Close()
	initial := make(chan store.Change[int64, Post], 8)
	defer posts.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) { initial <- ch }))()
	p := e.startPod(posts, 0)
	put("2", `{"id":2,"title":"b"}`)
	put(relay.StatusKey, `{"complete":true,"leader":"test"}`)
	if err := p.posts.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ch := <-initial
		if !ch.Initial || ch.Op != store.OpAdd {
			t.Fatalf("change %+v: want the adds of the first init, which waits for the status", ch)
		}
	}
	if n := posts.Len(); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}
