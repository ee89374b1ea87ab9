package directustest_test

import (
	"fmt"
	"testing"

	"github.com/e41af43e/directus-realtime/directustest"
)

// BenchmarkFanout measures a create event delivered to conns subscribers,
// from the write until every subscriber has read its frame.
func BenchmarkFanout(b *testing.B) {
	for _, conns := range []int{1, 100} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			srv := directustest.NewServer(&directustest.Options{HeartbeatPeriod: -1})
			defer srv.Close()
			clients := make([]*tclient, conns)
			for i := range clients {
				clients[i] = authClient(b, srv)
				clients[i].send(`{"type":"subscribe","collection":"posts","uid":"s","query":{"fields":["id","title"]}}`)
				clients[i].next()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := srv.Create("posts", map[string]any{"title": "bench"}); err != nil {
					b.Fatal(err)
				}
				for _, c := range clients {
					c.next()
				}
			}
		})
	}
}

// BenchmarkInit measures a subscription init of 10,000 rows.
func BenchmarkInit(b *testing.B) {
	srv := directustest.NewServer(&directustest.Options{HeartbeatPeriod: -1})
	defer srv.Close()
	items := make([]map[string]any, 10_000)
	for i := range items {
		items[i] = map[string]any{"title": fmt.Sprintf("post %d", i), "status": "draft", "views": i}
	}
	if _, err := srv.Quiet().Create("posts", items...); err != nil {
		b.Fatal(err)
	}
	c := authClient(b, srv)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.send(`{"type":"subscribe","collection":"posts","uid":"s","query":{"limit":-1}}`)
		c.next()
	}
}
