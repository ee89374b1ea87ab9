package main

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/natstest"
	"github.com/e41af43e/directus-realtime/relay"
)

func TestParseCollections(t *testing.T) {
	got, err := parseCollections("posts, tags:uuid ,orders:code:shop_orders")
	if err != nil {
		t.Fatal(err)
	}
	want := []relay.Collection{{Name: "posts"}, {Name: "tags", KeyField: "uuid"}, {Name: "orders", KeyField: "code", Bucket: "shop_orders"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", ",", "a:b:c:d", ":id"} {
		if _, err := parseCollections(bad); err == nil {
			t.Errorf("parseCollections(%q) accepted", bad)
		}
	}
}

func TestFlagsRequireURLAndCollections(t *testing.T) {
	t.Setenv("DIRECTUS_URL", "")
	t.Setenv("RELAY_COLLECTIONS", "")
	if _, err := parseFlags([]string{"-url", "http://x"}); err == nil {
		t.Fatal("no collections accepted")
	}
	t.Setenv("RELAY_COLLECTIONS", "posts")
	t.Setenv("RELAY_LEASE_TTL", "5s")
	c, err := parseFlags([]string{"-url", "http://x"})
	if err != nil || c.collections != "posts" || c.leaseTTL.String() != "5s" {
		t.Fatalf("%+v, %v", c, err)
	}
}

// The command against an embedded Directus and JetStream: it leads, the
// bucket fills with the rows and says complete.
func TestRunMirrorsIntoTheBucket(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	for range 3 {
		if _, err := srv.Create("posts", map[string]any{"title": "x"}); err != nil {
			t.Fatal(err)
		}
	}
	ns, err := natstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{url: srv.URL(), token: directustest.AdminToken, natsURL: ns.URL(), collections: "posts",
			leaseTTL: time.Second, replicas: 1, logLevel: "error"})
	}()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.After(15 * time.Second)
	for {
		kv, err := js.KeyValue(ctx, relay.BucketName("posts"))
		if err == nil {
			if e, err := kv.Get(ctx, relay.StatusKey); err == nil && strings.Contains(string(e.Value()), `"complete":true`) {
				keys, _ := kv.Keys(ctx)
				if len(keys) != 4 { // 3 rows and the status
					t.Fatalf("bucket keys %v", keys)
				}
				break
			}
		}
		select {
		case <-deadline:
			t.Fatal("the bucket never became complete")
		case <-time.After(50 * time.Millisecond): // polls NATS, which has no signal for a foreign process's progress
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("run = %v", err)
	}
}
