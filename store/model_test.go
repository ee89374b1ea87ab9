package store_test

// A model-based randomized test: random writes and faults against the
// embedded server while replicas, readers and listeners run; at the end every
// replica equals the server's rows for its query.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/rest"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// modelTag is a row of the seeded "tags" collection (uuid key).
type modelTag struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

var (
	modelStatuses = []string{"published", "draft", "archived"}
	modelViewsIn  = []int{1, 3, 5, 7, 9}
)

// The filters of the replicas, as sent to the server and as evaluated by the
// test on the server's rows.
func modelPublishedQuery() *protocol.Query {
	return &protocol.Query{
		Fields: []string{"id", "title", "status"},
		Filter: map[string]any{"status": map[string]any{"_eq": "published"}},
	}
}

func modelInPublished(p Post) bool { return p.Status == "published" }

func modelViewsQuery() *protocol.Query {
	return &protocol.Query{Filter: map[string]any{"_or": []any{
		map[string]any{"views": map[string]any{"_gt": 80}},
		map[string]any{"_and": []any{
			map[string]any{"views": map[string]any{"_in": modelViewsIn}},
			map[string]any{"status": map[string]any{"_neq": "archived"}},
		}},
	}}}
}

func modelInViews(p Post) bool {
	return p.Views > 80 || (slices.Contains(modelViewsIn, p.Views) && p.Status != "archived")
}

// modelVersion returns the write number a title or name carries ("t123"):
// every write gives the rows it touches a new, larger one.
func modelVersion(label string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(label, "t"))
	if err != nil {
		return -1
	}
	return n
}

// --- replicas ---

// modelReplica is what the driver needs of a replica, whatever its types.
type modelReplica interface {
	name() string
	subscribe(ctx context.Context, m *manager.Manager) error
	newReader() func(rng *rand.Rand) error
	waitNextEvent(ctx context.Context) error
	waitActive(ctx context.Context) error
	waitEqual(ctx context.Context, srv *directustest.Server) error
	diff(srv *directustest.Server) error
	reconcile(ctx context.Context) error
	noReconcile() error
	waitListener(ctx context.Context) error
	summary() string
	close()
}

type replica[K cmp.Ordered, T comparable] struct {
	label   string
	opts    manager.SubscribeOptions
	c       *store.Collection[K, T]
	key     func(T) K
	want    func(posts []Post, tags []modelTag) map[K]T
	valid   func(T) error  // what every row the replica holds satisfies, always
	version func(T) string // the row's label
	status  func(T) string // nil: no index
	strict  bool           // the listener checks every change against its shadow

	gate atomic.Pointer[chan struct{}]
	sh   shadow[K, T]
}

// shadow is what the listener rebuilds from the changes it hears.
type shadow[K comparable, T any] struct {
	mu      sync.Mutex
	rows    map[K]T
	relaxed bool // an OpReset was heard: the changes after it may already be in the snapshot
	resets  int
	changes int
	err     error
}

func newReplica[K cmp.Ordered, T comparable](label string, opts manager.SubscribeOptions, sopts store.Options[K, T], r *replica[K, T]) *replica[K, T] {
	r.label, r.opts = label, opts
	sopts.Key = r.key
	r.c = testutil.Must(store.New(sopts))
	return r
}

func (r *replica[K, T]) name() string { return r.label }

func (r *replica[K, T]) subscribe(ctx context.Context, m *manager.Manager) error {
	if _, err := r.c.Subscribe(ctx, m, r.opts); err != nil {
		return fmt.Errorf("%s: subscribe: %w", r.label, err)
	}
	r.sh.rows = map[K]T{}
	r.c.AddListener(r) // removed by Close
	return nil
}

func (r *replica[K, T]) checkRow(k K, v T) error {
	if r.key(v) != k {
		return fmt.Errorf("row %v is held under key %v", r.key(v), k)
	}
	if err := r.valid(v); err != nil {
		return fmt.Errorf("row %v: %w", k, err)
	}
	return nil
}

// newReader returns one reader's checks; each reader remembers the version
// it last saw of every key.
func (r *replica[K, T]) newReader() func(*rand.Rand) error {
	last := map[K]int{}
	return func(rng *rand.Rand) error { return r.readWith(rng, last) }
}

// readWith checks what must hold at every instant, from one reader.
func (r *replica[K, T]) readWith(rng *rand.Rand, last map[K]int) error {
	c := r.c
	// One Range pass sees one state; the index, read inside the pass, must
	// hold exactly the rows of that state under their status.
	var (
		err     error
		first   = true
		n, seen int
		indexed map[K]string
	)
	c.Range(func(k K, v T) bool {
		if first {
			first = false
			n = c.Len()
			if r.status != nil {
				if indexed, err = r.indexContents(); err != nil {
					return false
				}
			}
		}
		seen++
		if err = r.checkRow(k, v); err != nil {
			return false
		}
		if indexed != nil {
			if s, ok := indexed[k]; !ok || s != r.status(v) {
				err = fmt.Errorf("row %v has status %q, the index has it under %q (%v)", k, r.status(v), s, ok)
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("range: %w", err)
	}
	if !first && seen != n {
		return fmt.Errorf("range saw %d rows, Len inside it said %d", seen, n)
	}
	if indexed != nil && len(indexed) != seen {
		return fmt.Errorf("range saw %d rows, the index inside it holds %d", seen, len(indexed))
	}

	// A snapshot is one state too; for each key, versions only go forward.
	snap := c.Snapshot()
	for k, v := range snap {
		if err := r.checkRow(k, v); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		ver := modelVersion(r.version(v))
		if ver < last[k] {
			return fmt.Errorf("snapshot: row %v went back from version %d to %d", k, last[k], ver)
		}
		last[k] = ver
	}
	// Get of a few keys answers a state at least as new as the snapshot.
	i := 0
	for k, before := range snap {
		if i++; i > 3 {
			break
		}
		if v, ok := c.Get(k); ok {
			if err := r.checkRow(k, v); err != nil {
				return fmt.Errorf("get: %w", err)
			}
			if modelVersion(r.version(v)) < modelVersion(r.version(before)) {
				return fmt.Errorf("get: row %v older than the snapshot taken before", k)
			}
		}
	}
	if r.status != nil {
		s := modelStatuses[rng.IntN(len(modelStatuses))]
		rows, err := c.ByIndex("status", s)
		if err != nil {
			return err
		}
		for _, v := range rows {
			if r.status(v) != s {
				return fmt.Errorf("by index %q: row %v has status %q", s, r.key(v), r.status(v))
			}
		}
	}
	_ = c.Len()
	_ = c.Keys()
	return nil
}

// waitNextEvent returns once the replica has applied another event.
func (r *replica[K, T]) waitNextEvent(ctx context.Context) error {
	first := true
	return r.c.WaitFor(ctx, func() bool {
		if first {
			first = false
			return false
		}
		return true
	})
}

// indexContents reads the whole status index: key → value.
func (r *replica[K, T]) indexContents() (map[K]string, error) {
	values, err := r.c.IndexValues("status")
	if err != nil {
		return nil, err
	}
	out := map[K]string{}
	for _, v := range values {
		keys, err := r.c.IndexKeys("status", v)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if prev, dup := out[k]; dup {
				return nil, fmt.Errorf("key %v indexed under %q and %q", k, prev, v)
			}
			out[k] = v
		}
	}
	return out, nil
}

// OnChange is the listener: it rebuilds the shadow and checks that each
// change follows from the previous ones, which holds only if changes are
// heard in the order they were applied.
func (r *replica[K, T]) OnChange(ch store.Change[K, T]) {
	if g := r.gate.Load(); g != nil {
		<-*g
	}
	sh := &r.sh
	sh.mu.Lock()
	sh.changes++
	strict := r.strict && !sh.relaxed
	fail := func(format string, args ...any) {
		if sh.err == nil {
			sh.err = fmt.Errorf("%s listener, change %d (%v %v): %s", r.label, sh.changes, ch.Op, ch.Key, fmt.Sprintf(format, args...))
		}
	}
	cur, present := sh.rows[ch.Key]
	switch ch.Op {
	case store.OpAdd, store.OpUpdate:
		if err := r.checkRow(ch.Key, ch.New); err != nil {
			fail("%v", err)
		}
		if strict {
			switch {
			case ch.Op == store.OpAdd && present:
				fail("add of a key the shadow holds")
			case ch.Op == store.OpUpdate && (!present || cur != ch.Old):
				fail("update whose old row %+v is not the shadow's %+v (%v)", ch.Old, cur, present)
			case present && modelVersion(r.version(ch.New)) < modelVersion(r.version(cur)):
				fail("version went back from %s to %s", r.version(cur), r.version(ch.New))
			}
		}
		sh.rows[ch.Key] = ch.New
	case store.OpDelete:
		if strict && (!present || cur != ch.Old) {
			fail("delete whose old row %+v is not the shadow's %+v (%v)", ch.Old, cur, present)
		}
		delete(sh.rows, ch.Key)
	case store.OpReset:
		sh.resets++
		sh.relaxed = true
		sh.rows = r.c.Snapshot()
	default:
		fail("unknown op")
	}
	sh.mu.Unlock()
}

// waitListener waits until the listener has heard every change applied,
// the replica being quiescent, and then requires its shadow to equal the
// replica.
func (r *replica[K, T]) waitListener(ctx context.Context) error {
	if err := r.c.FlushListeners(ctx); err != nil {
		return fmt.Errorf("%s: the listener did not catch up: %w", r.label, err)
	}
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	if r.sh.err != nil {
		return r.sh.err
	}
	if d := diffRows(r.sh.rows, r.c.Snapshot()); d != "" {
		return fmt.Errorf("%s: the listener's shadow differs from the replica (shadow vs replica):\n%s", r.label, d)
	}
	return nil
}

func (r *replica[K, T]) pause() {
	ch := make(chan struct{})
	r.gate.Store(&ch)
}

func (r *replica[K, T]) resume() {
	if g := r.gate.Swap(nil); g != nil {
		close(*g)
	}
}

// expected is the server's rows for the replica's query. For a filtered
// replica that is the server's own answer to GET /items/<collection> with
// the filter (limit -1), which must also agree with the test's model of the
// filter.
func (r *replica[K, T]) expected(srv *directustest.Server) (map[K]T, error) {
	model := r.want(modelServerPosts(srv), modelServerTags(srv))
	q := r.opts.Query
	if q == nil || len(q.Filter) == 0 {
		return model, nil
	}
	filter, err := json.Marshal(q.Filter)
	if err != nil {
		return nil, err
	}
	v := url.Values{"filter": {string(filter)}, "limit": {"-1"}}
	if len(q.Fields) > 0 {
		v.Set("fields", strings.Join(q.Fields, ","))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rows []T
	c := rest.Client{Base: srv.URL(), Token: directustest.AdminToken}
	if err := c.Do(ctx, "GET", "/items/"+r.opts.Collection+"?"+v.Encode(), nil, &rows); err != nil {
		return nil, fmt.Errorf("%s: REST read of the filter: %w", r.label, err)
	}
	got := make(map[K]T, len(rows))
	for _, row := range rows {
		got[r.key(row)] = row
	}
	if d := diffRows(got, model); d != "" {
		return nil, fmt.Errorf("%s: the server's REST answer differs from the test's model of the filter (REST vs model):\n%s", r.label, d)
	}
	return got, nil
}

func (r *replica[K, T]) diff(srv *directustest.Server) error {
	want, err := r.expected(srv)
	if err != nil {
		return err
	}
	if d := diffRows(r.c.Snapshot(), want); d != "" {
		return fmt.Errorf("%s differs from the server (replica vs server):\n%s", r.label, d)
	}
	return nil
}

// waitEqual waits, woken by every applied event, until the replica equals
// the server's rows for its query. The server no longer changes.
func (r *replica[K, T]) waitEqual(ctx context.Context, srv *directustest.Server) error {
	want, err := r.expected(srv)
	if err != nil {
		return err
	}
	err = r.c.WaitFor(ctx, func() bool { return maps.Equal(r.c.Snapshot(), want) })
	if err != nil {
		return fmt.Errorf("%s never equalled the server (%w); replica vs server:\n%s", r.label, err, diffRows(r.c.Snapshot(), want))
	}
	return nil
}

// waitActive waits until the subscription is active. The connection must be
// up: a subscription only turns active with an init, which is applied.
func (r *replica[K, T]) waitActive(ctx context.Context) error {
	sub := r.c.Subscription()
	if err := r.c.WaitFor(ctx, func() bool { return sub.State() == manager.StateActive }); err != nil {
		return fmt.Errorf("%s: subscription %v, not active: %w", r.label, sub.State(), err)
	}
	return nil
}

// reconcile reconciles, retrying while a token expiry makes the server
// refuse the resubscribe (the re-authentication then resyncs it anyway).
func (r *replica[K, T]) reconcile(ctx context.Context) error {
	for {
		err := r.c.Reconcile(ctx)
		if !errors.Is(err, manager.ErrResyncRefused) {
			return err
		}
		sub := r.c.Subscription()
		if err := r.c.WaitFor(ctx, func() bool { return sub.State() != manager.StateFailed }); err != nil {
			return err
		}
	}
}

// noReconcile fails if the replica reconciled: in the events variant
// nothing may need one, filter exits included, unless error events came
// (an event the server replaced by an error while the token was expired:
// a loaded machine stretches that window), which a reconcile answers by
// design.
func (r *replica[K, T]) noReconcile() error {
	if st := r.c.Stats(); st.Reconciles != 0 && st.Errors == 0 {
		return fmt.Errorf("%s reconciled %d times (%+v)", r.label, st.Reconciles, st)
	}
	return nil
}

func (r *replica[K, T]) summary() string {
	st := r.c.Stats()
	ss := r.c.Subscription().Stats()
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	return fmt.Sprintf("%s: %d rows, %d inits (%d resyncs), %d events, %d error events, %d reconciles, %d overflows, %d filter exits (%d checks); listener %d changes, %d resets",
		r.label, r.c.Len(), st.Inits, st.Resyncs, st.Events, st.Errors, st.Reconciles, ss.Overflows, st.FilterExits, st.ExitChecks, r.sh.changes, r.sh.resets)
}

func (r *replica[K, T]) close() {
	r.resume()
	_ = r.c.Close()
}

func diffRows[K cmp.Ordered, T comparable](got, want map[K]T) string {
	var b strings.Builder
	keys := slices.Sorted(maps.Keys(got))
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	n := 0
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		if gok == wok && g == w {
			continue
		}
		if n++; n > 12 {
			b.WriteString("  …\n")
			break
		}
		switch {
		case !wok:
			fmt.Fprintf(&b, "  %v: %+v, absent\n", k, g)
		case !gok:
			fmt.Fprintf(&b, "  %v: absent, %+v\n", k, w)
		default:
			fmt.Fprintf(&b, "  %v: %+v, %+v\n", k, g, w)
		}
	}
	return b.String()
}

func modelServerPosts(srv *directustest.Server) []Post {
	var out []Post
	for _, row := range srv.Items("posts") {
		out = append(out, modelDecode[Post](row))
	}
	return out
}

func modelServerTags(srv *directustest.Server) []modelTag {
	var out []modelTag
	for _, row := range srv.Items("tags") {
		out = append(out, modelDecode[modelTag](row))
	}
	return out
}

func modelDecode[T any](row map[string]any) T {
	var v T
	b, err := json.Marshal(row)
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err)
	}
	return v
}

func postsWhere(posts []Post, keep func(Post) bool, project func(Post) Post) map[int64]Post {
	out := map[int64]Post{}
	for _, p := range posts {
		if keep(p) {
			out[p.ID] = project(p)
		}
	}
	return out
}

func modelReplicas(itemID int64) (all *replica[int64, Post], list []modelReplica) {
	postKey := func(p Post) int64 { return p.ID }
	title := func(p Post) string { return p.Title }
	status := func(p Post) string { return p.Status }
	anyPost := func(p Post) error {
		if !slices.Contains(modelStatuses, p.Status) || modelVersion(p.Title) < 0 {
			return fmt.Errorf("malformed %+v", p)
		}
		return nil
	}
	same := func(p Post) Post { return p }
	byStatus := map[string]store.IndexFunc[Post]{"status": func(p Post) []string { return []string{p.Status} }}

	// Every post, with a small listener queue: its listener is paused during
	// bursts so that it falls behind and gets OpReset.
	all = newReplica("all posts",
		manager.SubscribeOptions{Collection: "posts", Persistent: true},
		store.Options[int64, Post]{Indexers: byStatus, ListenerQueue: 64},
		&replica[int64, Post]{
			key: postKey, version: title, status: status, valid: anyPost,
			want: func(posts []Post, _ []modelTag) map[int64]Post {
				return postsWhere(posts, func(Post) bool { return true }, same)
			},
		})
	// Published posts, without the views field. Every row it holds was
	// published when it was read; that stays true of the row it holds.
	published := newReplica("published posts",
		// A queue the bursts do not overflow, for the replica and its
		// companion: a companion's overflow loses filter exits, which
		// only a reconcile restores.
		manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: modelPublishedQuery(), QueueSize: 1 << 14},
		store.Options[int64, Post]{Indexers: byStatus},
		&replica[int64, Post]{
			key: postKey, version: title, status: status, strict: true,
			valid: func(p Post) error {
				if !modelInPublished(p) || p.Views != 0 {
					return fmt.Errorf("outside the query: %+v", p)
				}
				return anyPost(p)
			},
			want: func(posts []Post, _ []modelTag) map[int64]Post {
				return postsWhere(posts, modelInPublished, func(p Post) Post { p.Views = 0; return p })
			},
		})
	views := newReplica("posts by views",
		manager.SubscribeOptions{Collection: "posts", Persistent: true, Query: modelViewsQuery(), QueueSize: 1 << 14},
		store.Options[int64, Post]{Indexers: byStatus},
		&replica[int64, Post]{
			key: postKey, version: title, status: status, strict: true,
			valid: func(p Post) error {
				if !modelInViews(p) {
					return fmt.Errorf("outside the filter: %+v", p)
				}
				return anyPost(p)
			},
			want: func(posts []Post, _ []modelTag) map[int64]Post {
				return postsWhere(posts, modelInViews, same)
			},
		})
	item := newReplica("one post",
		manager.SubscribeOptions{Collection: "posts", Persistent: true, Item: strconv.FormatInt(itemID, 10)},
		store.Options[int64, Post]{},
		&replica[int64, Post]{
			key: postKey, version: title, strict: true,
			valid: func(p Post) error {
				if p.ID != itemID {
					return fmt.Errorf("not the subscribed item: %+v", p)
				}
				return anyPost(p)
			},
			want: func(posts []Post, _ []modelTag) map[int64]Post {
				return postsWhere(posts, func(p Post) bool { return p.ID == itemID }, same)
			},
		})
	tags := newReplica("tags",
		manager.SubscribeOptions{Collection: "tags", Persistent: true},
		store.Options[string, modelTag]{},
		&replica[string, modelTag]{
			key: func(t modelTag) string { return t.ID }, version: func(t modelTag) string { return t.Name }, strict: true,
			valid: func(t modelTag) error {
				if t.ID == "" || modelVersion(t.Name) < 0 {
					return fmt.Errorf("malformed %+v", t)
				}
				return nil
			},
			want: func(_ []Post, tags []modelTag) map[string]modelTag {
				out := map[string]modelTag{}
				for _, t := range tags {
					out[t.ID] = t
				}
				return out
			},
		})
	return all, []modelReplica{all, published, views, item, tags}
}

// --- the driver ---

type modelWriter interface {
	Create(collection string, items ...map[string]any) ([]map[string]any, error)
	Update(collection string, keys []any, patch map[string]any) ([]map[string]any, error)
	Delete(collection string, keys ...any) error
}

type modelRun struct {
	t    *testing.T
	seed uint64
	full bool // quiet writes, reconciles and numeric-key updates of the item
	rng  *rand.Rand
	srv  *directustest.Server
	m    *manager.Manager

	ver     int            // write counter: the version labels
	posts   map[int64]Post // what the server holds
	postIDs []int64        // the keys of posts, in creation order
	tags    map[string]modelTag
	tagIDs  []string
	itemID  int64
	// exitWrites counts the rows updates took out of a filter: what the
	// filtered replicas had to remove without an event of their own.
	exitWrites int
	stopped    int // while > 0, the server is stopped; Start after that many ops

	all      *replica[int64, Post]
	replicas []modelReplica

	bg     sync.WaitGroup
	bgErr  chan error
	counts map[string]int
	took   map[string]time.Duration
	op     int
}

func (d *modelRun) fatalf(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("seed %d op %d: %s", d.seed, d.op, fmt.Sprintf(format, args...))
}

func (d *modelRun) label() string {
	d.ver++
	return "t" + strconv.Itoa(d.ver)
}

func (d *modelRun) writer(quiet bool) modelWriter {
	if quiet {
		return d.srv.Quiet()
	}
	return d.srv
}

func (d *modelRun) randomPost() map[string]any {
	return map[string]any{"title": d.label(), "status": modelStatuses[d.rng.IntN(3)], "views": d.rng.IntN(101)}
}

func (d *modelRun) createPosts(w modelWriter, items ...map[string]any) []int64 {
	rows, err := w.Create("posts", items...)
	if err != nil {
		d.fatalf("create posts: %v", err)
	}
	var ids []int64
	for _, row := range rows {
		p := modelDecode[Post](row)
		d.posts[p.ID] = p
		d.postIDs = append(d.postIDs, p.ID)
		ids = append(ids, p.ID)
	}
	return ids
}

// postKey names a post as a URL path would ("12") or a JSON body would (12).
func (d *modelRun) postKey(id int64) any {
	if d.rng.IntN(2) == 0 {
		return strconv.FormatInt(id, 10)
	}
	return id
}

// updateKey is postKey for updates. Without the full variant, the item of
// the single-item subscription is always named by a string: Directus never
// sends it updates whose keys are JSON numbers (docs/PROTOCOL.md §5.2), which only
// a reconcile corrects.
func (d *modelRun) updateKey(id int64) any {
	if !d.full && id == d.itemID {
		return strconv.FormatInt(id, 10)
	}
	return d.postKey(id)
}

func (d *modelRun) pickPost() (int64, bool) {
	if len(d.postIDs) == 0 {
		return 0, false
	}
	return d.postIDs[d.rng.IntN(len(d.postIDs))], true
}

func (d *modelRun) pickPosts(n int) []int64 {
	var ids []int64
	for range n {
		if id, ok := d.pickPost(); ok && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (d *modelRun) randomPatch() map[string]any {
	patch := map[string]any{}
	if d.rng.IntN(8) != 0 { // sometimes the row does not change at all
		patch["title"] = d.label()
	}
	if d.rng.IntN(3) == 0 {
		patch["status"] = modelStatuses[d.rng.IntN(3)]
	}
	if d.rng.IntN(3) == 0 {
		patch["views"] = d.rng.IntN(101)
	}
	return patch
}

func modelPatched(p Post, patch map[string]any) Post {
	if v, ok := patch["title"]; ok {
		p.Title = v.(string)
	}
	if v, ok := patch["status"]; ok {
		p.Status = v.(string)
	}
	if v, ok := patch["views"]; ok {
		p.Views = v.(int)
	}
	return p
}

// exits reports whether patch takes post id out of a filtered replica.
func (d *modelRun) exits(id int64, patch map[string]any) bool {
	old, ok := d.posts[id]
	if !ok {
		return false
	}
	p := modelPatched(old, patch)
	return (modelInPublished(old) && !modelInPublished(p)) || (modelInViews(old) && !modelInViews(p))
}

// updatePosts updates posts (and, sometimes, keys that do not exist),
// counting the rows it takes out of a filter.
func (d *modelRun) updatePosts(w modelWriter, ids []int64, patch map[string]any, missing bool) {
	for _, id := range ids {
		if d.exits(id, patch) {
			d.exitWrites++
		}
	}
	keys := make([]any, 0, len(ids)+1)
	for _, id := range ids {
		keys = append(keys, d.updateKey(id))
	}
	if missing {
		keys = append(keys, d.postKey(1_000_000+int64(d.rng.IntN(1000))))
	}
	rows, err := w.Update("posts", keys, patch)
	if err != nil {
		d.fatalf("update posts %v: %v", keys, err)
	}
	for _, row := range rows {
		p := modelDecode[Post](row)
		if _, ok := d.posts[p.ID]; !ok {
			d.fatalf("update returned unknown post %+v", p)
		}
		d.posts[p.ID] = p
	}
}

// deletePosts deletes posts, never the item of the single-item
// subscription (an item that does not exist cannot be subscribed to).
func (d *modelRun) deletePosts(w modelWriter, ids []int64, missing bool) {
	var keys []any
	asStrings := d.rng.IntN(2) == 0 // a URL path names one key; a JSON body names numbers
	for _, id := range ids {
		if id == d.itemID {
			continue
		}
		if asStrings {
			keys = append(keys, strconv.FormatInt(id, 10))
		} else {
			keys = append(keys, id)
		}
		delete(d.posts, id)
		d.postIDs = slices.DeleteFunc(d.postIDs, func(x int64) bool { return x == id })
	}
	if missing || len(keys) == 0 {
		keys = append(keys, d.postKey(2_000_000+int64(d.rng.IntN(1000))))
	}
	if err := w.Delete("posts", keys...); err != nil {
		d.fatalf("delete posts %v: %v", keys, err)
	}
}

func (d *modelRun) newTagID() string {
	r := d.rng
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.IntN(1<<16), r.IntN(1<<12), 0x8000|r.IntN(1<<14), r.Uint64()&(1<<48-1))
}

func (d *modelRun) createTags(w modelWriter, n int) {
	items := make([]map[string]any, n)
	for i := range items {
		items[i] = map[string]any{"id": d.newTagID(), "name": d.label()}
	}
	rows, err := w.Create("tags", items...)
	if err != nil {
		d.fatalf("create tags: %v", err)
	}
	for _, row := range rows {
		t := modelDecode[modelTag](row)
		d.tags[t.ID] = t
		d.tagIDs = append(d.tagIDs, t.ID)
	}
}

func (d *modelRun) pickTags(n int) []string {
	var ids []string
	for range n {
		if len(d.tagIDs) > 0 {
			if id := d.tagIDs[d.rng.IntN(len(d.tagIDs))]; !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

func (d *modelRun) updateTags(w modelWriter, ids []string) {
	keys := make([]any, len(ids))
	for i, id := range ids {
		keys[i] = id
	}
	rows, err := w.Update("tags", keys, map[string]any{"name": d.label()})
	if err != nil {
		d.fatalf("update tags: %v", err)
	}
	for _, row := range rows {
		t := modelDecode[modelTag](row)
		d.tags[t.ID] = t
	}
}

func (d *modelRun) deleteTags(w modelWriter, ids []string) {
	keys := []any{}
	for _, id := range ids {
		keys = append(keys, id)
		delete(d.tags, id)
		d.tagIDs = slices.DeleteFunc(d.tagIDs, func(x string) bool { return x == id })
	}
	if len(keys) == 0 || d.rng.IntN(5) == 0 {
		keys = append(keys, d.newTagID()) // a key that never existed
	}
	if err := w.Delete("tags", keys...); err != nil {
		d.fatalf("delete tags: %v", err)
	}
}

// write performs one random write that emits its events (or, in the full
// variant and when quiet, none).
func (d *modelRun) write(quiet bool) string {
	w := d.writer(quiet)
	prefix := ""
	if quiet {
		prefix = "quiet "
	}
	n := d.rng.IntN(100)
	if n < 17 && len(d.posts) > 250 {
		n = 44 + n%13 // a delete instead: the table stays small
	}
	switch {
	case n < 12:
		d.createPosts(w, d.randomPost())
		return prefix + "create"
	case n < 17:
		items := make([]map[string]any, 2+d.rng.IntN(7))
		for i := range items {
			items[i] = d.randomPost()
		}
		d.createPosts(w, items...)
		return prefix + "create batch"
	case n < 35:
		if id, ok := d.pickPost(); ok {
			d.updatePosts(w, []int64{id}, d.randomPatch(), false)
		}
		return prefix + "update"
	case n < 44:
		d.updatePosts(w, d.pickPosts(2+d.rng.IntN(5)), d.randomPatch(), d.rng.IntN(4) == 0)
		return prefix + "update batch"
	case n < 52:
		if id, ok := d.pickPost(); ok && len(d.posts) > 20 {
			d.deletePosts(w, []int64{id}, false)
		} else {
			d.deletePosts(w, nil, true)
		}
		return prefix + "delete"
	case n < 57:
		if len(d.posts) > 20 {
			d.deletePosts(w, d.pickPosts(2+d.rng.IntN(4)), d.rng.IntN(4) == 0)
		}
		return prefix + "delete batch"
	case n < 67:
		// Enter or leave the published filter.
		id, ok := d.pickPost()
		if !ok {
			return "-"
		}
		patch := map[string]any{"title": d.label(), "status": "published"}
		if modelInPublished(d.posts[id]) {
			patch["status"] = "draft"
		}
		d.updatePosts(w, []int64{id}, patch, false)
		return prefix + "toggle published"
	case n < 73:
		// Enter or leave the views filter.
		id, ok := d.pickPost()
		if !ok {
			return "-"
		}
		patch := map[string]any{"title": d.label(), "views": 90 + d.rng.IntN(10)}
		if modelInViews(d.posts[id]) {
			patch["views"] = 40
		}
		d.updatePosts(w, []int64{id}, patch, false)
		return prefix + "toggle views"
	case n < 78:
		d.updatePosts(w, []int64{d.itemID}, d.randomPatch(), false)
		return prefix + "update item"
	case n < 85:
		d.createTags(w, 1+d.rng.IntN(3))
		return prefix + "create tags"
	case n < 93:
		d.updateTags(w, d.pickTags(1+d.rng.IntN(3)))
		return prefix + "update tags"
	default:
		if len(d.tags) > 5 {
			d.deleteTags(w, d.pickTags(1+d.rng.IntN(3)))
		} else {
			d.deleteTags(w, nil)
		}
		return prefix + "delete tags"
	}
}

// step performs operation number d.op.
func (d *modelRun) step() string {
	if d.stopped > 0 {
		if d.stopped--; d.stopped == 0 {
			d.srv.Start()
		}
	}
	up := d.stopped == 0
	// Bands of n select the operation; one whose condition fails (the
	// variant, or the server being stopped) is an ordinary write instead.
	switch n := d.rng.IntN(1000); {
	case n < 50:
		if d.full { // a write that emits no event
			return d.write(true)
		}
	case n < 58: // a burst of writes without pause, the all-posts listener paused
		d.all.pause()
		count := 20 + d.rng.IntN(100)
		for range count {
			d.write(d.full && d.rng.IntN(10) == 0)
		}
		d.all.resume()
		return "burst"
	case n < 76:
		if up {
			// Let the client catch up: a create that the all-posts
			// replica has to show before the run goes on.
			id := d.createPosts(d.srv, d.randomPost())[0]
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := d.all.c.WaitFor(ctx, func() bool { _, ok := d.all.c.Get(id); return ok }); err != nil {
				d.fatalf("settle: post %d never reached the replica: %v", id, err)
			}
			return "settle"
		}
	case n < 86:
		if up {
			d.srv.DropConnections()
			return "drop connections"
		}
	case n < 90:
		if up {
			d.srv.Restart()
			return "restart"
		}
	case n < 94:
		if up { // stopped for a number of operations, which write meanwhile
			d.srv.Stop()
			d.stopped = 1 + d.rng.IntN(30)
			return "stop"
		}
	case n < 100:
		if up {
			d.srv.RefuseConnections(time.Duration(10+d.rng.IntN(70)) * time.Millisecond)
			d.srv.DropConnections()
			return "refuse connections"
		}
	case n < 110:
		d.srv.ExpireTokens()
		return "expire tokens"
	case n < 118:
		if d.full {
			r := d.replicas[d.rng.IntN(len(d.replicas))]
			d.bg.Add(1)
			go func() {
				defer d.bg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				if err := r.reconcile(ctx); err != nil {
					d.bgErr <- fmt.Errorf("reconcile %s: %w", r.name(), err)
				}
			}()
			return "reconcile"
		}
	}
	op := d.write(false)
	if d.rng.IntN(4) == 0 {
		runtime.Gosched()
	}
	return op
}

func waitConnected(ctx context.Context, m *manager.Manager) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := m.WatchState(ctx)
	for !m.IsConnected() {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("not connected (%v): %w", m.State(), ctx.Err())
		}
	}
	return nil
}

func runModel(t *testing.T, seed uint64, ops int, full bool) {
	start := time.Now()
	var authFrames, expiredFrames atomic.Int64
	srv := directustest.NewServer(&directustest.Options{OnFrame: func(f directustest.Frame) {
		if f.Inbound && strings.Contains(string(f.Data), `"type":"auth"`) {
			authFrames.Add(1)
		}
		if !f.Inbound && strings.Contains(string(f.Data), `TOKEN_EXPIRED`) {
			expiredFrames.Add(1)
		}
	}})
	defer srv.Close()
	d := &modelRun{
		t: t, seed: seed, full: full, rng: rand.New(rand.NewPCG(seed, 0x6d6f64656c)), srv: srv,
		posts: map[int64]Post{}, tags: map[string]modelTag{}, bgErr: make(chan error, 1024), counts: map[string]int{}, took: map[string]time.Duration{},
	}
	items := make([]map[string]any, 40)
	for i := range items {
		items[i] = d.randomPost()
	}
	d.itemID = d.createPosts(srv, items...)[0]
	d.createTags(srv, 8)

	// Email and password: a token expiry makes the client re-authenticate.
	var reasons [3]atomic.Int64
	reauthenticated := make(chan struct{}, 1)
	m, err := manager.New(&conn.Config{
		URL:     srv.URL(),
		Auth:    conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword},
		Backoff: conn.Backoff{Initial: 2 * time.Millisecond, Max: 25 * time.Millisecond},
		OnConnect: func(_ *conn.Session, reason conn.ConnectReason) {
			switch reason {
			case conn.ReasonConnected:
				reasons[0].Add(1)
			case conn.ReasonReconnected:
				reasons[1].Add(1)
			case conn.ReasonReauthenticated:
				reasons[2].Add(1)
				select {
				case reauthenticated <- struct{}{}:
				default:
				}
			}
		},
	}, &manager.Options{QueueSize: 64}) // small: bursts overflow it, which costs a resync
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	d.m = m
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	d.all, d.replicas = modelReplicas(d.itemID)
	defer func() {
		for _, r := range d.replicas {
			r.close()
		}
	}()
	for _, r := range d.replicas {
		if err := r.subscribe(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	// One token expiry at a known time: the manager re-authenticates (the
	// run's later expiries race with everything else).
	srv.ExpireTokens()
	select {
	case <-reauthenticated:
	case <-ctx.Done():
		t.Fatal("no re-authentication after TOKEN_EXPIRED")
	}

	// Readers: one per replica, plus a second one on all posts.
	readersCtx, stopReaders := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	readerErr := make(chan error, 8)
	for i, r := range append(slices.Clone(d.replicas), d.all) {
		readers.Add(1)
		go func() {
			defer readers.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			read := r.newReader()
			for passes := 0; ; passes++ {
				if err := read(rng); err != nil {
					readerErr <- fmt.Errorf("reader of %s, pass %d: %w", r.name(), passes, err)
					return
				}
				// One pass per applied event at most: the reads race with
				// the next event, without starving the replica of CPU.
				if r.waitNextEvent(readersCtx) != nil {
					return
				}
			}
		}()
	}
	defer func() {
		stopReaders()
		readers.Wait()
	}()

	for d.op = 0; d.op < ops; d.op++ {
		t0 := time.Now()
		kind := d.step()
		d.counts[kind]++
		d.took[kind] += time.Since(t0)
		select {
		case err := <-readerErr:
			d.fatalf("%v", err)
		default:
		}
	}
	opsDone := time.Since(start)
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Faults end; the client comes back.
	srv.Start()
	if err := waitConnected(ctx, m); err != nil {
		d.fatalf("%v", err)
	}
	d.bg.Wait()
	close(d.bgErr)
	for err := range d.bgErr {
		t.Errorf("seed %d: %v", seed, err)
	}
	// The test's model and the server agree.
	if got, want := modelServerPosts(srv), slices.Collect(maps.Values(d.posts)); len(got) != len(want) {
		d.fatalf("server has %d posts, model %d", len(got), len(want))
	}
	for _, p := range modelServerPosts(srv) {
		if d.posts[p.ID] != p {
			d.fatalf("server post %+v, model %+v", p, d.posts[p.ID])
		}
	}
	if tags := modelServerTags(srv); len(tags) != len(d.tags) {
		d.fatalf("server has %d tags, model %d", len(tags), len(d.tags))
	} else {
		for _, tag := range tags {
			if d.tags[tag.ID] != tag {
				d.fatalf("server tag %+v, model %+v", tag, d.tags[tag.ID])
			}
		}
	}

	if !full {
		// Every change emitted an event: once the events and resyncs are
		// applied, each replica equals the server without a reconcile,
		// the filtered ones too, although rows left their filters (the
		// companion subscriptions removed them).
		for _, r := range d.replicas {
			if err := r.waitEqual(ctx, srv); err != nil {
				d.fatalf("%v", err)
			}
			if err := r.noReconcile(); err != nil {
				d.fatalf("%v", err)
			}
		}
		if d.exitWrites == 0 {
			d.fatalf("no write took a row out of a filter")
		}
	} else {
		for _, r := range d.replicas {
			if err := r.reconcile(ctx); err != nil {
				d.fatalf("reconcile %s: %v", r.name(), err)
			}
			if err := r.diff(srv); err != nil {
				d.fatalf("after reconcile: %v", err)
			}
		}
	}

	// A last write for every replica, the item's update, a post every posts
	// replica holds and a tag: once each replica shows them, nothing is left
	// in flight and the subscriptions are active; the listeners, flushed,
	// must then have rebuilt exactly the replica.
	// Before them, with no fault left to resync anything, a row leaves
	// each filter: only the companions can remove them.
	for _, in := range []func(Post) bool{modelInPublished, modelInViews} {
		for _, id := range d.postIDs {
			if p, ok := d.posts[id]; ok && in(p) && id != d.itemID {
				d.updatePosts(srv, []int64{id}, map[string]any{"status": "archived", "views": 40}, false)
				break
			}
		}
	}
	itemMarker, postMarker, tagMarker := d.label(), d.label(), d.label()
	if _, err := srv.Update("posts", []any{strconv.FormatInt(d.itemID, 10)}, map[string]any{"title": itemMarker}); err != nil {
		t.Fatal(err)
	}
	d.createPosts(srv, map[string]any{"title": postMarker, "status": "published", "views": 99})
	if _, err := srv.Create("tags", map[string]any{"id": d.newTagID(), "name": tagMarker}); err != nil {
		t.Fatal(err)
	}
	for _, r := range d.replicas {
		if err := r.waitEqual(ctx, srv); err != nil {
			d.fatalf("after the marker: %v", err)
		}
	}
	if err := waitConnected(ctx, m); err != nil {
		d.fatalf("%v", err)
	}
	for _, r := range d.replicas {
		if err := r.waitActive(ctx); err != nil {
			d.fatalf("%v", err)
		}
		if err := r.waitListener(ctx); err != nil {
			d.fatalf("%v", err)
		}
	}
	for _, info := range m.ActiveSubscriptions() {
		if info.State != manager.StateActive {
			d.fatalf("subscription %s (%s) is %v", info.UID, info.Collection, info.State)
		}
	}
	select {
	case err := <-readerErr:
		d.fatalf("%v", err)
	default:
	}

	keys := slices.Sorted(maps.Keys(d.counts))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d(%v)", k, d.counts[k], d.took[k].Round(time.Millisecond))
	}
	t.Logf("seed %d, full %v: %d ops in %v (end %v):%s", seed, full, ops, opsDone.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), b.String())
	t.Logf("sessions: %d reconnects, %d re-authentications after TOKEN_EXPIRED, %d auth frames, %d TOKEN_EXPIRED", reasons[1].Load(), reasons[2].Load(), authFrames.Load(), expiredFrames.Load())

	for _, r := range d.replicas {
		t.Log(r.summary())
	}
}

// TestModelReplicasEqualServer drives the embedded server with thousands of
// random writes and faults while replicas of five queries, their readers and
// their listeners run, and then requires every replica to equal the server's
// rows for its query.
//
// The "events" variant has no write without events: the replicas must equal
// the server without a reconcile, the filtered ones too although rows leave
// their filters (their companions remove them within one event), and the
// filtered ones are checked against the server's REST answer for their
// filter. The "full" variant adds writes without events and concurrent
// reconciles: after a reconcile each replica must equal the server.
func TestModelReplicasEqualServer(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4}
	ops := 2000
	if testing.Short() {
		seeds, ops = seeds[:1], 400
	}
	for _, full := range []bool{false, true} {
		variant := "events"
		if full {
			variant = "full"
		}
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", variant, seed), func(t *testing.T) {
				runModel(t, seed, ops, full)
			})
		}
	}
}
