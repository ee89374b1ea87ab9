package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/store"
)

// writer changes posts and tags through REST, at random, until stopped:
// single and batch creates, updates by URL and by keys, deletes by URL
// (string keys in the event) and by body (number keys). It goes on through
// failures (the server may be down) and forgets rows a failed write may
// have left in either state: the final check compares with the server's
// rows, not with the writer's idea of them.
type writer struct {
	rest *REST
	rng  *rand.Rand

	posts []int64  // rows the writer created and believes alive
	tags  []string // same for tags

	ok, failed atomic.Int64
	mu         sync.Mutex
	progress   chan struct{} // closed and replaced after every successful write
}

func newWriter(rest *REST, seed uint64) *writer {
	return &writer{rest: rest, rng: rand.New(rand.NewPCG(seed, 7)), progress: make(chan struct{})}
}

// run writes until stop is closed (or ctx is done). A write under way when
// stop closes is completed, not abandoned: a request given up by the client
// may still be applied by the server after the final read. burst > 0 writes
// in bursts of up to burst writes separated by short pauses; 0 writes one
// after another.
func (w *writer) run(ctx context.Context, stop <-chan struct{}, burst int) {
	n := 0
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		if err := w.step(ctx); err != nil {
			w.failed.Add(1)
			// The server is probably down; try again soon.
			pause(stop, 100*time.Millisecond)
			continue
		}
		w.ok.Add(1)
		w.mu.Lock()
		close(w.progress)
		w.progress = make(chan struct{})
		w.mu.Unlock()
		n++
		if burst > 0 && n >= 1+w.rng.IntN(burst) {
			n = 0
			pause(stop, time.Duration(50+w.rng.IntN(250))*time.Millisecond)
		}
	}
}

// pause paces the writer; it is not a synchronisation.
func pause(stop <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
}

// waitWrites waits until n more writes than at the call have succeeded.
func (w *writer) waitWrites(ctx context.Context, n int64) error {
	target := w.ok.Load() + n
	for {
		w.mu.Lock()
		ch := w.progress
		w.mu.Unlock()
		if w.ok.Load() >= target {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d writes (%d failed): %w", w.ok.Load()-target+n, n, w.failed.Load(), ctx.Err())
		}
	}
}

var statuses = []string{"draft", "published", "archived"}

func (w *writer) post() Post {
	return Post{Title: fmt.Sprintf("w%d", w.rng.IntN(1e6)), Status: statuses[w.rng.IntN(len(statuses))], Views: int64(w.rng.IntN(1000))}
}

// pick returns up to n distinct live post ids.
func (w *writer) pick(n int) []int64 {
	w.rng.Shuffle(len(w.posts), func(i, j int) { w.posts[i], w.posts[j] = w.posts[j], w.posts[i] })
	return slices.Clone(w.posts[:min(n, len(w.posts))])
}

// forget drops ids from the live list.
func (w *writer) forget(ids ...int64) {
	w.posts = slices.DeleteFunc(w.posts, func(id int64) bool { return slices.Contains(ids, id) })
}

func (w *writer) step(ctx context.Context) error {
	rest := w.rest
	op := w.rng.IntN(100)
	switch {
	case len(w.posts) < 5 || op < 20: // create one
		p, err := rest.CreatePost(ctx, w.post())
		if err == nil {
			w.posts = append(w.posts, p.ID)
		}
		return err
	case op < 30: // batch create
		ps, err := rest.CreatePosts(ctx, w.post(), w.post(), w.post())
		for _, p := range ps {
			w.posts = append(w.posts, p.ID)
		}
		return err
	case op < 55: // update by URL
		ids := w.pick(1)
		p := w.post()
		return w.gone(rest.UpdatePost(ctx, ids[0], map[string]any{"title": p.Title, "status": p.Status, "views": p.Views}), ids)
	case op < 70: // batch update by keys
		ids := w.pick(3)
		return w.gone(rest.UpdatePosts(ctx, ids, map[string]any{"status": statuses[w.rng.IntN(len(statuses))], "views": w.rng.IntN(1000)}), ids)
	case op < 80: // delete by URL: the event's key is a string
		ids := w.pick(1)
		err := rest.DeletePost(ctx, ids[0])
		return w.gone(err, ids, err == nil)
	case op < 88: // delete by body: the event's keys are numbers
		ids := w.pick(2)
		err := rest.DeletePosts(ctx, ids...)
		return w.gone(err, ids, err == nil)
	case op < 95 || len(w.tags) == 0: // tag create
		tag, err := rest.CreateTag(ctx, fmt.Sprintf("t%d", w.rng.IntN(1e6)))
		if err == nil {
			w.tags = append(w.tags, tag.ID)
		}
		return err
	default: // tag delete
		i := w.rng.IntN(len(w.tags))
		id := w.tags[i]
		err := rest.DeleteTag(ctx, id)
		var re *RESTError
		if err == nil || errors.As(err, &re) {
			w.tags = slices.Delete(w.tags, i, i+1)
		}
		return err
	}
}

// gone forgets ids when the write deleted them (deleted) or when the server
// answered with an error: a write that failed after a restart may have
// been applied before it, and the rows may be gone.
func (w *writer) gone(err error, ids []int64, deleted ...bool) error {
	var re *RESTError
	if (len(deleted) > 0 && deleted[0]) || errors.As(err, &re) {
		w.forget(ids...)
	}
	return err
}

// replicas are a client's stores in the restart and soak scenarios.
type replicas struct {
	c    *client
	all  *store.Collection[int64, Post]
	pub  *store.Collection[int64, Post]
	tags *store.Collection[string, Tag]
}

func newReplicas(ctx context.Context, t *testing.T, c *client) *replicas {
	r := &replicas{c: c, all: newPosts(t), pub: newPosts(t), tags: newTags(t)}
	subscribe(ctx, t, r.all, c, manager.SubscribeOptions{Collection: "posts", Persistent: true})
	subscribe(ctx, t, r.pub, c, manager.SubscribeOptions{Collection: "posts", Query: published, Persistent: true})
	subscribe(ctx, t, r.tags, c, manager.SubscribeOptions{Collection: "tags", Persistent: true})
	return r
}

// check waits for the replicas to converge on the server's rows, which
// must have stopped changing, reconciles them, and requires equality and
// active subscriptions. Events alone need not converge: writes in
// Directus's window between an init and its registration are only caught
// by a reconcile (the store's contract); that is logged, not failed. The
// filtered replica is only checked after the reconcile: items that left
// its filter send no event.
func (r *replicas) check(ctx context.Context, t *testing.T, srv Server, name string) {
	t.Helper()
	rest := srv.REST()
	rows, err := rest.Posts(ctx)
	must(t, err)
	pubRows := slices.DeleteFunc(slices.Clone(rows), func(p Post) bool { return p.Status != "published" })
	tagRows, err := rest.Tags(ctx)
	must(t, err)
	if d := converge(ctx, r.all, rows, postKey); d != "" {
		t.Logf("%s: posts did not converge on events alone: %s", name, d)
	}
	if d := converge(ctx, r.tags, tagRows, tagKey); d != "" {
		t.Logf("%s: tags did not converge on events alone: %s", name, d)
	}
	reconcile(ctx, t, r.all)
	reconcile(ctx, t, r.pub)
	reconcile(ctx, t, r.tags)
	mustEqual(t, name+": posts", r.all, rows, postKey)
	mustEqual(t, name+": published posts", r.pub, pubRows, postKey)
	mustEqual(t, name+": tags", r.tags, tagRows, tagKey)
	allActive(t, r.c)
	r.c.checkWire(t)
}

// Z1 and the restore guarantee: the server restarts (SIGTERM) while a
// writer changes posts and tags through REST; afterwards every replica
// equals GET /items/{collection}?limit=-1.
func TestRestartDuringWrites(t *testing.T) { run(t, scenarioRestartDuringWrites) }

func scenarioRestartDuringWrites(t *testing.T, tg Target) {
	ctx, cancel := context.WithTimeout(t.Context(), restartTimeout+scenarioTimeout)
	defer cancel()
	srv := tg.Server(t, Default)
	requireRestart(t, srv)
	must(t, srv.Reset(ctx))
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
	r := newReplicas(ctx, t, c)

	w := newWriter(srv.REST(), uint64(time.Now().UnixNano()))
	stopWriter := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, stopWriter, 0) })
	var once sync.Once
	stop := func() { once.Do(func() { close(stopWriter) }); wg.Wait() }
	defer stop()

	waitCtx, wcancel := within(ctx, eventTimeout)
	defer wcancel()
	must(t, w.waitWrites(waitCtx, 20))

	started := time.Now()
	rctx, rcancel := within(ctx, restartTimeout)
	defer rcancel()
	must(t, srv.Restart(rctx))
	t.Logf("restart took %v", time.Since(started).Round(time.Millisecond))
	// The manager reconnects by itself; writes go on meanwhile.
	must(t, c.waitFor(rctx, func(_ []error, rs []conn.ConnectReason) bool {
		return slices.Contains(rs, conn.ReasonReconnected)
	}))
	must(t, w.waitWrites(rctx, 20))
	stop()
	t.Logf("writer: %d writes, %d failed", w.ok.Load(), w.failed.Load())

	r.check(ctx, t, srv, "after restart")
	// One resync for the restart, one for the reconcile.
	for _, info := range c.ActiveSubscriptions() {
		if info.Options.Event != "" {
			// The companion of the filtered replica's exits: restored,
			// but an event-only subscription has nothing to reconcile.
			continue
		}
		if info.Stats.Resyncs < 2 {
			t.Errorf("subscription %s was not restored after the restart (%d resyncs)", info.UID, info.Stats.Resyncs)
		}
	}
}
