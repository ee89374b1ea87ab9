package harness

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// BenchmarkFilterExits measures what following filter exits costs, on a
// 10,000-row collection of which 10% match the replica's filter (status
// published), against what a reconcile costs.
//
// companion: one op is one update of a random row (one in ten moves a
// published row out of the filter and another in). It reports what the
// companion subscription (the collection's updates, unfiltered, with id and
// status) brings per update: frames and bytes, which are also the server's
// re-reads of the updated rows for it (Directus re-reads them for every
// subscription), and the time from an update that moves a row out to its
// removal from the replica (exit-µs, the median).
//
// reconcile: one op is one reconcile of the replica without companion: a
// read of the 1,000 matching rows. It reports the bytes the server sends.
// A reconcile every 5 minutes costs that per 5 minutes, and rows stay up to
// 5 minutes after they left the filter; the companion costs its bytes per
// update, and they leave within one event.
func BenchmarkFilterExits(b *testing.B) {
	const rows, inFilter = 10_000, 1_000
	for _, mode := range []string{"companion", "reconcile"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			var compUID atomic.Pointer[[]byte]
			var compBytes, outBytes atomic.Int64
			srv := directustest.NewServer(&directustest.Options{HeartbeatPeriod: -1, OnFrame: func(f directustest.Frame) {
				if f.Inbound {
					return
				}
				outBytes.Add(int64(len(f.Data)))
				if uid := compUID.Load(); uid != nil && bytes.Contains(f.Data, *uid) {
					compBytes.Add(int64(len(f.Data)))
				}
			}})
			defer srv.Close()
			items := make([]map[string]any, 0, rows)
			for i := range rows {
				status := "draft"
				if i%(rows/inFilter) == 0 {
					status = "published"
				}
				items = append(items, map[string]any{"title": "post " + strconv.Itoa(i), "status": status, "views": i})
			}
			created := testutil.Must(srv.Quiet().Create("posts", items...))
			ids := make([]int64, 0, rows)
			var published, drafts []int64
			for _, r := range created {
				id := int64(r["id"].(int64))
				ids = append(ids, id)
				if r["status"] == "published" {
					published = append(published, id)
				} else {
					drafts = append(drafts, id)
				}
			}
			m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, PingInterval: -1}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			if err := m.Connect(ctx); err != nil {
				b.Fatal(err)
			}
			opts := store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }, FilterExits: store.FilterExitsRequired}
			if mode == "reconcile" {
				opts.FilterExits = store.FilterExitsOff
			}
			c := testutil.Must(store.New(opts))
			defer c.Close()
			q := &protocol.Query{Filter: map[string]any{"status": map[string]any{"_eq": "published"}}}
			if _, err := c.Subscribe(ctx, m, manager.SubscribeOptions{Collection: "posts", Query: q, Persistent: true}); err != nil {
				b.Fatal(err)
			}
			if c.Len() != inFilter {
				b.Fatalf("%d rows in the filter, want %d", c.Len(), inFilter)
			}
			if mode == "reconcile" {
				outBytes.Store(0)
				b.ResetTimer()
				for range b.N {
					if err := c.Reconcile(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(outBytes.Load())/float64(b.N), "B/reconcile")
				return
			}
			for _, s := range srv.Subscriptions() {
				if s.Event == "update" {
					uid := []byte(`"uid":"` + s.UID + `"`)
					compUID.Store(&uid)
				}
			}
			if compUID.Load() == nil {
				b.Fatal("no companion subscription on the server")
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var exits []time.Duration
			b.ResetTimer()
			for i := range b.N {
				if i%10 != 0 {
					id := ids[rng.IntN(len(ids))]
					testutil.Must(srv.Update("posts", []any{id}, map[string]any{"title": "edit " + strconv.Itoa(i)}))
					continue
				}
				// Out of the filter, and another row in, to keep 10%.
				pi, di := rng.IntN(len(published)), rng.IntN(len(drafts))
				out, in := published[pi], drafts[di]
				published[pi], drafts[di] = in, out
				start := time.Now()
				testutil.Must(srv.Update("posts", []any{out}, map[string]any{"status": "draft"}))
				if err := c.WaitFor(ctx, func() bool { _, held := c.Get(out); return !held }); err != nil {
					b.Fatal(err)
				}
				exits = append(exits, time.Since(start))
				testutil.Must(srv.Update("posts", []any{in}, map[string]any{"status": "published"}))
			}
			// Every update reached the companion: one per op, and the
			// re-entries.
			updates := uint64(b.N + len(exits))
			if err := c.WaitFor(ctx, func() bool { return c.Stats().ExitChecks >= updates }); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			// Frames as the replica counted them (the server's count of the
			// last one may lag its delivery).
			b.ReportMetric(float64(c.Stats().ExitChecks)/float64(updates), "frames/update")
			b.ReportMetric(float64(compBytes.Load())/float64(updates), "B/update")
			if len(exits) > 0 {
				slices.Sort(exits)
				b.ReportMetric(float64(exits[len(exits)/2].Microseconds()), "exit-µs")
			}
			if st := c.Stats(); st.Reconciles != 0 || int(st.FilterExits) != len(exits) {
				b.Fatalf("stats %+v, want %d filter exits and no reconcile", st, len(exits))
			}
		})
	}
}
