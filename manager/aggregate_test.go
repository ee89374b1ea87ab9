package manager_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

var countByStatus = &protocol.Query{Aggregate: map[string][]string{"count": {"*"}}, GroupBy: []string{"status"}}

type statusCount struct {
	Status string `json:"status"`
	Count  int    `json:"count"`
}

// TestAggregateRecomputed: the events of an aggregate subscription carry
// the aggregate of the changed rows alone; the handler never sees them,
// only inits with the whole aggregate, read again after the events.
func TestAggregateRecomputed(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	for i := range 3 {
		if _, err := e.srv.Create("posts", map[string]any{"title": fmt.Sprint(i), "status": "published"}); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder()
	sub, err := e.m.Subscribe(ctx(t), manager.SubscribeOptions{Collection: "posts", Query: countByStatus}, rec)
	if err != nil {
		t.Fatal(err)
	}
	want := func(published, draft int) {
		t.Helper()
		for {
			ev := rec.next(t)
			if ev.Kind != handlers.KindInit {
				t.Fatalf("the handler got a %v event of an aggregate: %s", ev.Kind, ev.Data)
			}
			var groups []statusCount
			if err := json.Unmarshal(ev.Data, &groups); err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, g := range groups {
				got[g.Status] = g.Count
			}
			if got["published"] == published && got["draft"] == draft {
				return
			}
		}
	}
	want(3, 0)
	if _, err := e.srv.Create("posts", map[string]any{"title": "new", "status": "published"}); err != nil {
		t.Fatal(err)
	}
	want(4, 0) // not 1, the count of the created row alone
	if _, err := e.srv.Create("posts", map[string]any{"title": "d", "status": "draft"}); err != nil {
		t.Fatal(err)
	}
	want(4, 1)
	if n := sub.Stats().ResyncsByCause[manager.CauseAggregate]; n < 2 {
		t.Fatalf("%d aggregate resyncs", n)
	}
	var ce *protocol.ConfigError
	if _, err := e.m.Subscribe(ctx(t), manager.SubscribeOptions{Collection: "posts", Query: countByStatus, Event: protocol.EventCreate}, rec); !errors.As(err, &ce) {
		t.Fatalf("an event-only aggregate: %v, want a ConfigError", err)
	}
}
