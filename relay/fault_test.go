package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/relay"
	"github.com/e41af43e/directus-realtime/store"
)

func TestMirrorWritesOnlyTheDifference(t *testing.T) {
	e := newEnv(t)
	for i := range 50 {
		if _, err := e.srv.Create("posts", map[string]any{"title": "p", "status": "draft", "views": i}); err != nil {
			t.Fatal(err)
		}
	}
	r := e.startRelay("a", nil)
	waitReady(t, r)
	p := e.startPod(nil, 0)
	e.waitEqual("pod", p.posts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, js := e.jetstream()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	// The stream's last sequence counts every write into the bucket.
	lastSeq := func() uint64 {
		t.Helper()
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
	}
	// Ready comes after the status entry, the last write of the first pass.
	if n := lastSeq(); n != 51 {
		t.Fatalf("first full write: %d writes into the bucket, want 50 rows and the status", n)
	}

	// The status entry says complete, and when.
	ent, err := kv.Get(context.Background(), relay.StatusKey)
	if err != nil {
		t.Fatal(err)
	}
	var st relay.Status
	if err := json.Unmarshal(ent.Value(), &st); err != nil || !st.Complete || st.Leader != "a" || st.Reconciled.IsZero() {
		t.Fatalf("status %s (%v)", ent.Value(), err)
	}

	// A Directus restart that changed nothing writes nothing.
	replica := r.Replica("posts")
	before := replica.Stats().Resyncs
	seq := lastSeq()
	e.srv.Restart()
	if err := replica.WaitFor(ctx, func() bool { return replica.Stats().Resyncs > before }); err != nil {
		t.Fatal("the relay's replica never resynced after the restart")
	}
	if _, err := e.srv.Update("posts", []any{int64(1)}, map[string]any{"title": "changed"}); err != nil {
		t.Fatal(err)
	}
	e.waitEqual("pod", p.posts)
	if n := lastSeq() - seq; n != 1 {
		t.Fatalf("after a restart and one update: %d writes into the bucket, want 1", n)
	}
	// A delete is a KV delete.
	if err := e.srv.Delete("posts", int64(2)); err != nil {
		t.Fatal(err)
	}
	e.waitEqual("pod", p.posts)
	if _, err := kv.Get(context.Background(), "2"); err != jetstream.ErrKeyNotFound {
		t.Fatalf("key 2 after its delete: %v", err)
	}
}

// TestFailoverUnderWrites: two relays, three pods, random writes; the
// leader is killed (connections cut, no resignation) and later the new one
// is cancelled (it resigns), the NATS server and Directus restart. Every
// pod ends equal to the server, and an observer of every bucket write sees
// no row go back to an older version and no deleted row come back.
func TestFailoverUnderWrites(t *testing.T) {
	e := newEnv(t)
	w := &writer{e: e, rng: rand.New(rand.NewPCG(1, 2))}
	for range 30 {
		w.step()
	}
	a := e.startRelay("a", nil)
	waitLeading(t, a)
	waitReady(t, a)
	b := e.startRelay("b", nil)
	waitReady(t, b)
	c := e.startRelay("c", nil)
	waitReady(t, c)
	obs := e.observe()
	pods := []*pod{e.startPod(nil, 0), e.startPod(nil, 0), e.startPod(nil, 0)}
	for _, p := range pods {
		e.waitEqual("pod", p.posts)
	}

	stop := make(chan struct{})
	var writing sync.WaitGroup
	w.run(stop, &writing)
	waitWrites := func(n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := obs.count()
		for obs.count() < start+n {
			select {
			case <-obs.grew:
			case <-ctx.Done():
				t.Fatalf("fewer than %d bucket writes", n)
			}
		}
	}
	waitWrites(50)
	a.kill()
	next := waitAnyLeading(t, b, c)
	waitWrites(50)
	e.ns.Restart()
	waitWrites(50)
	e.srv.Restart()
	waitWrites(50)
	next.stop() // cancelled: resigns
	last := b
	if next == b {
		last = c
	}
	waitLeading(t, last)
	waitWrites(50)
	close(stop)
	writing.Wait()
	for _, p := range pods {
		e.waitEqual("pod after the faults", p.posts)
		if st := p.src.Stats(); st.Loads != 1 {
			t.Errorf("a pod reloaded the bucket (%+v); the history was there", st)
		}
	}
	obs.check(t)
}

func waitAnyLeading(t *testing.T, rs ...*runningRelay) *runningRelay {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		for _, r := range rs {
			select {
			case on := <-r.leader:
				if on {
					return r
				}
			default:
			}
		}
		select {
		case <-timeout:
			t.Fatal("no relay took over")
		case <-time.After(20 * time.Millisecond): // polls several relays' signals
		}
	}
}

// observer records every entry written into the bucket.
type observer struct {
	mu      sync.Mutex
	n       int
	views   map[string]int64
	deleted map[string]bool
	errs    []string
	writes  []string // key=value of every write, for failure messages
	grew    chan struct{}
}

func (o *observer) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func (e *env) observe() *observer {
	nc, js := e.jetstream()
	t := e.t
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &observer{views: map[string]int64{}, deleted: map[string]bool{}, grew: make(chan struct{}, 1)}
	_ = kv
	// An ordered consumer rides out the NATS server's restart (it resumes
	// after the last entry it delivered), so no write goes unobserved.
	cons, err := js.OrderedConsumer(ctx, "KV_"+bucket, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"$KV." + bucket + ".>"}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				continue
			}
			key := strings.TrimPrefix(msg.Subject(), "$KV."+bucket+".")
			if key == relay.StatusKey {
				continue
			}
			o.record(key, msg.Headers().Get("KV-Operation") != "", msg.Data())
		}
	}()
	t.Cleanup(func() { cancel(); it.Stop(); <-done; nc.Close() })
	return o
}

func (o *observer) record(k string, deleted bool, value []byte) {
	o.mu.Lock()
	o.n++
	o.writes = append(o.writes, k+"="+string(value))
	if deleted {
		o.deleted[k] = true
	} else {
		var p Post
		_ = json.Unmarshal(value, &p)
		if o.deleted[k] {
			o.errs = append(o.errs, "resurrected "+k)
		}
		if v, ok := o.views[k]; ok && p.Views < v {
			o.errs = append(o.errs, "stale row over a newer one at "+k)
		}
		o.views[k] = p.Views
	}
	o.mu.Unlock()
	select {
	case o.grew <- struct{}{}:
	default:
	}
}

func (o *observer) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs) > 0 {
		t.Fatalf("%d bad bucket writes, first %v", len(o.errs), o.errs[:min(5, len(o.errs))])
	}
}

// TestPodResumesFromItsRevision: a pod that stops and starts again with
// the revision it reached applies only what it missed; one away for
// longer than the bucket's history (delete markers compacted) reloads the
// bucket, and its listeners hear exactly the differences.
func TestPodResumesFromItsRevision(t *testing.T) {
	e := newEnv(t)
	w := &writer{e: e, rng: rand.New(rand.NewPCG(3, 4))}
	for range 40 {
		w.step()
	}
	r := e.startRelay("a", &relay.Options{LeaseTTL: 600 * time.Millisecond, DeleteRetention: time.Nanosecond})
	waitReady(t, r)
	p := e.startPod(nil, 0)
	e.waitEqual("pod", p.posts)

	// Restart within the history: resumes.
	p.stop()
	for range 40 {
		w.step()
	}
	p2 := e.startPod(p.posts, p.src.Revision())
	e.waitEqual("resumed pod", p2.posts)
	if st := p2.src.Stats(); st.Loads != 0 || st.Resumes != 1 {
		t.Fatalf("resumed pod: %+v, want no load and one resume", st)
	}

	// Away longer than the history: reloads.
	p2.stop()
	held := p2.posts.Snapshot()
	for range 60 {
		w.step()
	}
	e.waitEqualRelay(r)
	if err := r.CompactDeletes(context.Background()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	heard := map[int64]store.Change[int64, Post]{}
	remove := p2.posts.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
		mu.Lock()
		defer mu.Unlock()
		if !ch.Initial {
			heard[ch.Key] = ch
		}
	}))
	defer remove()
	p3 := e.startPod(p2.posts, p2.src.Revision())
	e.waitEqual("pod back after the history", p3.posts)
	if st := p3.src.Stats(); st.Loads != 1 {
		t.Fatalf("pod back after the history: %+v, want one load", st)
	}
	if err := p3.posts.FlushListeners(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := e.serverPosts()
	mu.Lock()
	defer mu.Unlock()
	for k, old := range held {
		if _, still := want[k]; !still {
			if ch, ok := heard[k]; !ok || ch.Op != store.OpDelete || !ch.Resync {
				t.Errorf("row %d deleted while away: heard %+v, want a resync delete", k, ch)
			}
		} else if want[k] != old {
			if ch, ok := heard[k]; !ok || ch.Op != store.OpUpdate {
				t.Errorf("row %d changed while away: heard %+v, want an update", k, ch)
			}
		}
	}
}

// waitEqualRelay waits until the relay's replica holds the server's rows
// and its writer has nothing left.
func (e *env) waitEqualRelay(r *runningRelay) {
	e.t.Helper()
	p := e.startPod(nil, 0)
	e.waitEqual("probe", p.posts)
	p.stop()
}

// waitFor waits until cond, evaluated under the observer's lock, holds.
func (o *observer) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		o.mu.Lock()
		ok := cond()
		o.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-o.grew:
		case <-timeout:
			t.Fatalf("the observer never saw %s", what)
		}
	}
}
