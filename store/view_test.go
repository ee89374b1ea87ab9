package store_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// byViewsDesc orders posts by views, most first; ties are left to the
// view's key order.
func byViewsDesc(a, b Post) int { return cmp.Compare(b.Views, a.Views) }

// wantWindow is the definition of the window: every row sorted by cmp, ties
// by key, cut to limit.
func wantWindow(rows []Post, limit int) []Post {
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b Post) int { return cmp.Or(byViewsDesc(a, b), cmp.Compare(a.ID, b.ID)) })
	return rows[:min(len(rows), limit)]
}

func postsJSON(ps []Post) string {
	b, _ := json.Marshal(ps)
	return string(b)
}

func checkWindow(t *testing.T, step string, c *store.Collection[int64, Post], v *store.View[int64, Post], limit int) {
	t.Helper()
	// Events apply on the test's goroutine: nothing changes while both are read.
	got, want, n := v.Rows(), wantWindow(c.List(), limit), v.Len()
	if !slices.Equal(got, want) || n != len(want) {
		t.Fatalf("%s: limit %d: window (len %d)\n%v\nwant\n%v", step, limit, n, got, want)
	}
}

// TestViewModel drives a collection with random creates, updates, deletes
// and inits, with many ties, and checks after every event that each view
// equals the rows sorted and cut, for limits below, around and above the
// number of rows and past the view's cushion.
func TestViewModel(t *testing.T) {
	// A small cushion: rows leaving the window exhaust it often, and the
	// list of rows held is often short of the whole collection.
	defer store.SetViewCushion(4)()
	seeds, steps := []uint64{1, 2, 3, 4}, 2000
	if testing.Short() {
		seeds, steps = seeds[:2], 1000 // the quick loop
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed*7))
			c := newPosts(store.Options[int64, Post]{})
			defer c.Close()
			limits := []int{1, 3, 10, 70, 150, 1000}
			views := make([]*store.View[int64, Post], len(limits))
			for i, l := range limits {
				// Some views exist before the first init, some are made later.
				if i%2 == 0 {
					views[i] = testutil.Must(store.NewView(c, byViewsDesc, l))
				}
			}
			maxID := int64(400)
			row := func(id int64) Post {
				return Post{ID: id, Title: fmt.Sprint(rng.IntN(3)), Views: rng.IntN(20)}
			}
			randRows := func(n int) []Post {
				out := make([]Post, 0, n)
				for range n {
					out = append(out, row(1+rng.Int64N(maxID)))
				}
				return out
			}
			apply(t, c, ev(handlers.KindInit, postsJSON(randRows(300))))
			for step := range steps {
				if step == 100 {
					for i, l := range limits {
						if views[i] == nil {
							views[i] = testutil.Must(store.NewView(c, byViewsDesc, l))
						}
					}
				}
				var e handlers.Event
				switch r := rng.IntN(100); {
				case r < 30:
					e = ev(handlers.KindCreate, postsJSON(randRows(1+rng.IntN(3))))
				case r < 60:
					e = ev(handlers.KindUpdate, postsJSON(randRows(1+rng.IntN(3))))
				case r < 75:
					// Delete rows of the top: forces refills from the cushion
					// and from a scan.
					top := wantWindow(c.List(), 1+rng.IntN(10))
					keys := []int64{1 + rng.Int64N(maxID)}
					for _, p := range top {
						if rng.IntN(2) == 0 {
							keys = append(keys, p.ID)
						}
					}
					b, _ := json.Marshal(keys)
					e = ev(handlers.KindDelete, string(b))
				case r < 95:
					// Demote rows of the top: they move out of small windows.
					top := wantWindow(c.List(), 1+rng.IntN(20))
					for i := range top {
						top[i].Views = rng.IntN(3)
					}
					e = ev(handlers.KindUpdate, postsJSON(top))
				default:
					e = ev(handlers.KindInit, postsJSON(randRows(rng.IntN(350))))
					e.Resync = true
				}
				apply(t, c, e)
				all := wantWindow(c.List(), c.Len()) // every row, sorted once
				for i, v := range views {
					if v == nil {
						continue
					}
					want := all[:min(len(all), limits[i])]
					if got := v.Rows(); !slices.Equal(got, want) || v.Len() != len(want) {
						t.Fatalf("step %d %s: limit %d: window (len %d)\n%v\nwant\n%v", step, e.Kind, limits[i], v.Len(), got, want)
					}
				}
			}
			for _, v := range views {
				_ = v.Close()
			}
		})
	}
}

// The window is read atomically with the collection: from inside Range,
// which holds one state, and from readers while events apply.
func TestViewConsistentWithCollection(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	const limit = 5
	v := testutil.Must(store.NewView(c, byViewsDesc, limit))
	defer v.Close()
	apply(t, c, ev(handlers.KindInit, `[]`))
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			for !stop.Load() {
				var got, want []Post
				c.Range(func(int64, Post) bool {
					got, want = v.Rows(), wantWindow(c.List(), limit)
					return false
				})
				if !slices.Equal(got, want) {
					errs <- fmt.Errorf("inside Range: window %v, want %v", got, want)
					return
				}
				rows := v.Rows()
				if !slices.IsSortedFunc(rows, func(a, b Post) int { return cmp.Or(byViewsDesc(a, b), cmp.Compare(a.ID, b.ID)) }) {
					errs <- fmt.Errorf("unsorted window %v", rows)
					return
				}
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() {
		for w, err := range v.Changes(ctx) {
			if err != nil {
				return
			}
			if len(w.Rows) > limit {
				errs <- fmt.Errorf("window of %d rows", len(w.Rows))
				return
			}
		}
	})
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range 3000 {
		id := 1 + rng.Int64N(50)
		if i%4 == 3 {
			apply(t, c, ev(handlers.KindDelete, fmt.Sprintf("[%d]", id)))
			continue
		}
		apply(t, c, ev(handlers.KindUpdate, fmt.Sprintf(`[{"id":%d,"views":%d}]`, id, rng.IntN(30))))
	}
	stop.Store(true)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkWindow(t, "end", c, v, limit)
}

func TestViewRowsEnterAndLeave(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	v := testutil.Must(store.NewView(c, byViewsDesc, 2))
	defer v.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, stop := iter.Pull2(v.Changes(ctx))
	defer stop()
	show := func(w store.Window[int64, Post]) string {
		var ids []string
		for _, p := range w.Rows {
			ids = append(ids, fmt.Sprint(p.ID, ":", p.Views))
		}
		var left []int64
		for _, p := range w.Left {
			left = append(left, p.ID)
		}
		return fmt.Sprintf("%s +%v -%v", strings.Join(ids, " "), w.Entered, left)
	}
	expect := func(want string) {
		t.Helper()
		w, err, ok := next()
		if !ok || err != nil {
			t.Fatal(err)
		}
		if got := show(w); got != want {
			t.Fatalf("window %q, want %q", got, want)
		}
	}
	expect(" +[] -[]") // the first window, empty
	apply(t, c, ev(handlers.KindInit, `[{"id":1,"views":10},{"id":2,"views":20},{"id":3,"views":5}]`))
	expect("2:20 1:10 +[2 1] -[]")
	// A row enters at the top and pushes 1 out.
	apply(t, c, ev(handlers.KindCreate, `[{"id":4,"views":30}]`))
	expect("4:30 2:20 +[4] -[1]")
	// A change below the window changes nothing: no window is yielded for
	// it, the next one is the one after the update of 2.
	apply(t, c, ev(handlers.KindUpdate, `[{"id":3,"views":6}]`))
	apply(t, c, ev(handlers.KindUpdate, `[{"id":2,"views":40}]`)) // moves up
	expect("2:40 4:30 +[] -[]")
	// The top row is deleted: 1, the best row outside, takes its place.
	apply(t, c, ev(handlers.KindDelete, `[2]`))
	expect("4:30 1:10 +[1] -[2]")
	// A tie is ordered by key.
	apply(t, c, ev(handlers.KindUpdate, `[{"id":3,"views":30}]`))
	expect("3:30 4:30 +[3] -[1]")
	// A resync that replaces everything.
	apply(t, c, handlers.Event{Kind: handlers.KindInit, Resync: true, Data: json.RawMessage(`[{"id":9,"views":1}]`)})
	expect("9:1 +[9] -[3 4]")
	if v.Len() != 1 {
		t.Fatalf("len %d", v.Len())
	}
	_ = v.Close()
	if _, err, _ := next(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	// The closed view is not updated any more, and keeps its last window.
	apply(t, c, ev(handlers.KindCreate, `[{"id":10,"views":100}]`))
	if got := v.Rows(); len(got) != 1 || got[0].ID != 9 {
		t.Fatalf("closed view %v", got)
	}
}

// A body that takes its time gets the newest window, not a backlog.
func TestViewChangesCoalesce(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	v := testutil.Must(store.NewView(c, byViewsDesc, 3))
	defer v.Close()
	apply(t, c, ev(handlers.KindInit, `[{"id":1,"views":1}]`))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for w, err := range v.Changes(ctx) {
		if err != nil {
			if !errors.Is(err, store.ErrClosed) {
				t.Fatal(err)
			}
			break
		}
		n++
		if n == 1 {
			// While the body runs, many windows come and go.
			for i := 2; i <= 100; i++ {
				apply(t, c, ev(handlers.KindCreate, fmt.Sprintf(`[{"id":%d,"views":%d}]`, i, i)))
			}
			continue
		}
		if n == 2 {
			if got := fmt.Sprint(w.Entered, len(w.Left)); got != "[100 99 98] 1" {
				t.Fatalf("coalesced window: entered, left %s", got)
			}
			_ = c.Close() // ends the loop with ErrClosed
		}
	}
	if n != 2 {
		t.Fatalf("%d windows, want 2", n)
	}
}

func TestViewOptions(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	var ce *protocol.ConfigError
	for _, tc := range []struct {
		cmp   func(a, b Post) int
		limit int
	}{{nil, 1}, {byViewsDesc, 0}, {byViewsDesc, -1}} {
		if _, err := store.NewView(c, tc.cmp, tc.limit); !errors.As(err, &ce) {
			t.Errorf("limit %d: %v", tc.limit, err)
		}
	}
	if _, err := store.NewView[int64, Post](nil, byViewsDesc, 1); !errors.As(err, &ce) {
		t.Errorf("nil collection: %v", err)
	}
	// Close is idempotent.
	v := testutil.Must(store.NewView(c, byViewsDesc, 1))
	_ = v.Close()
	_ = v.Close()
}

// Ties are ordered by key, numerically for integer keys and byte-wise for
// string keys, including named key types.
func TestViewKeyOrder(t *testing.T) {
	type ID string
	type row struct {
		ID ID `json:"id"`
	}
	c := testutil.Must(store.New(store.Options[ID, row]{Key: func(r row) ID { return r.ID }}))
	defer c.Close()
	v := testutil.Must(store.NewView(c, func(a, b row) int { return 0 }, 3))
	defer v.Close()
	apply(t, c, ev(handlers.KindInit, `[{"id":"b"},{"id":"c"},{"id":"a"},{"id":"aa"}]`))
	if got := fmt.Sprint(v.Rows()); got != "[{a} {aa} {b}]" {
		t.Fatalf("string keys: %s", got)
	}
	n := newPosts(store.Options[int64, Post]{})
	defer n.Close()
	nv := testutil.Must(store.NewView(n, func(a, b Post) int { return 0 }, 3))
	defer nv.Close()
	apply(t, n, ev(handlers.KindInit, `[{"id":10},{"id":9},{"id":100},{"id":2}]`))
	var got []int64
	for _, p := range nv.Rows() {
		got = append(got, p.ID)
	}
	if fmt.Sprint(got) != "[2 9 10]" {
		t.Fatalf("integer keys: %v", got)
	}
}

// A replica of a sort with a positive limit would silently go stale; Subscribe
// refuses it and points to the view.
func TestSubscribeRefusesSortedLimit(t *testing.T) {
	e := setup(t)
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	_, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Sort: []string{"-views"}, Limit: 20}})
	var qe *store.QueryError
	if !errors.As(err, &qe) || !strings.Contains(err.Error(), "NewView") {
		t.Fatalf("sort with limit: %v", err)
	}
	// Sorted without a limit is a replica of every row.
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Sort: []string{"-views"}}}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkView applies updates of one row each to a collection of 10,000
// rows, with and without a view of its first 20: updates to random views,
// and the worst case, each update sending the first row of the window to
// the end (every event takes a row from the cushion; every 256th scans).
func BenchmarkView(b *testing.B) {
	for _, tc := range []struct {
		name             string
		withView, demote bool
	}{{"none", false, false}, {"view", true, false}, {"view-demote-top", true, true}} {
		withView := tc.withView
		b.Run(tc.name, func(b *testing.B) {
			c := newPosts(store.Options[int64, Post]{})
			defer c.Close()
			rows := make([]Post, 10000)
			for i := range rows {
				rows[i] = Post{ID: int64(i + 1), Views: i}
			}
			if err := c.Handle(ev(handlers.KindInit, postsJSON(rows))); err != nil {
				b.Fatal(err)
			}
			var v *store.View[int64, Post]
			if withView {
				v = testutil.Must(store.NewView(c, byViewsDesc, 20))
				defer v.Close()
			}
			rng := rand.New(rand.NewPCG(1, 1))
			events := make([]handlers.Event, 1024)
			for i := range events {
				events[i] = ev(handlers.KindUpdate, fmt.Sprintf(`[{"id":%d,"views":%d}]`, 1+rng.IntN(10000), rng.IntN(20000)))
			}
			b.ResetTimer()
			for i := range b.N {
				if tc.demote {
					top := v.Rows()[0]
					_ = c.Handle(ev(handlers.KindUpdate, fmt.Sprintf(`[{"id":%d,"views":%d}]`, top.ID, -i)))
					continue
				}
				_ = c.Handle(events[i%len(events)])
			}
		})
	}
}

// A panic in cmp while an event applies is reported, the event still
// reaches the collection, and the view is right again after the next event.
func TestViewComparePanic(t *testing.T) {
	var reported atomic.Int32
	var c *store.Collection[int64, Post]
	c = newPosts(store.Options[int64, Post]{OnError: func(err error) {
		var pe *protocol.PanicError
		// OnError runs once the collection's lock is released: it may read.
		if errors.As(err, &pe) && c.Len() > 0 {
			reported.Add(1)
		}
	}})
	defer c.Close()
	var explode atomic.Bool
	v := testutil.Must(store.NewView(c, func(a, b Post) int {
		if explode.Load() && (a.Title == "boom" || b.Title == "boom") {
			panic("boom")
		}
		return byViewsDesc(a, b)
	}, 2))
	defer v.Close()
	apply(t, c, ev(handlers.KindInit, `[{"id":1,"views":1},{"id":2,"views":2},{"id":3,"views":3}]`))
	explode.Store(true)
	apply(t, c, ev(handlers.KindUpdate, `[{"id":1,"views":9,"title":"boom"}]`))
	if reported.Load() != 1 || c.Stats().ListenerPanics != 1 {
		t.Fatalf("reported %d", reported.Load())
	}
	if p, _ := c.Get(1); p.Views != 9 {
		t.Fatalf("the event was not applied: %+v", p)
	}
	explode.Store(false)
	apply(t, c, ev(handlers.KindCreate, `[{"id":4,"views":0}]`))
	checkWindow(t, "after the panic", c, v, 2)
}
