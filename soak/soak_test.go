package soak_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/faultproxy"
	"github.com/e41af43e/directus-realtime/internal/rest"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

type soakParams struct {
	seed     uint64
	faults   int
	burstMin int           // events of a burst, about
	burstMax int           //
	pace     time.Duration // the longest pause between two faults
	settle   time.Duration // bound on every wait for convergence
}

// TestSoak applies 500 random faults per seed (two seeds: 1,000 in a full
// run; one seed of 60 with -short) while writers mutate three collections,
// then checks that nothing was lost, leaked or exposed. See the package
// documentation.
func TestSoak(t *testing.T) {
	p := soakParams{faults: 500, burstMin: 1000, burstMax: 2000, pace: 30 * time.Millisecond, settle: 3 * time.Minute}
	if s := os.Getenv("SOAK_SETTLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SOAK_SETTLE: %v", err)
		}
		p.settle = d
	}
	seeds := []uint64{1, 2}
	if testing.Short() {
		p.faults, p.burstMin, p.burstMax = 60, 300, 600
		seeds = seeds[:1]
	}
	if s := os.Getenv("SOAK_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED: %v", err)
		}
		seeds = []uint64{n}
	}
	if s := os.Getenv("SOAK_FAULTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("SOAK_FAULTS: %v", err)
		}
		p.faults = n
	}
	for _, seed := range seeds {
		p.seed = seed
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runSoak(t, p) })
	}
}

// faultKind is one kind of fault of the schedule.
type faultKind struct {
	name   string
	weight int
	run    func(h *harness, r *rand.Rand)
}

var faultKinds = []faultKind{
	{"server restart", 3, (*harness).restart},
	{"server drops sockets", 2, func(h *harness, _ *rand.Rand) { h.srv.DropConnections() }},
	{"proxy cut", 6, func(h *harness, _ *rand.Rand) { h.proxy.Cut() }},
	{"proxy refuses dials (and cuts)", 2, (*harness).refuse},
	{"proxy stall, short", 6, (*harness).stallShort},
	{"proxy stall until the heartbeat notices", 1, (*harness).stallLong},
	{"proxy delay", 3, (*harness).proxyDelay},
	{"proxy split frames", 3, (*harness).proxySplit},
	{"server frame delay", 2, (*harness).serverDelay},
	{"token expiry", 5, (*harness).expire},
	{"burst of events", 2, (*harness).burst},
	{"slow handler and listener", 3, (*harness).slow},
	{"garbage frame", 4, (*harness).injectGarbage},
	{"frame of a wrong shape", 4, (*harness).injectWrongShape},
	{"undecodable rows for a live subscription", 3, (*harness).injectBadRows},
	{"frame of an unknown type", 2, (*harness).injectUnknown},
	{"error frame without uid", 3, (*harness).injectUIDLessError},
}

type harness struct {
	t      *testing.T
	p      soakParams
	srv    *directustest.Server
	proxy  *faultproxy.Proxy
	scan   *secretScan
	logger *slog.Logger

	mA, mB     *manager.Manager
	obsA, obsB *observer
	reps       []checked
	a1, a6, b1 *replica[int64, post]
	gate       *gate
	mirror     *mirror
	mirrorSub  *manager.Subscription
	listen     *listenMirror
	pinned     int64
	itemMu     sync.Mutex
	itemTitle  string // what the single-item subscription last saw
	itemSig    chan struct{}
	eventOnly  atomic.Int64
	closers    []func()

	// Owned by the fault goroutine.
	faults   map[string]int
	burstSeq int
	slowSeq  int

	stop                chan struct{}
	stopOnce            sync.Once
	workers             sync.WaitGroup
	writes, quietWrites atomic.Int64
	itemsOK, itemsErr   atomic.Int64
	churnOK, churnErr   atomic.Int64
	burstEvents         atomic.Int64
}

func runSoak(t *testing.T, p soakParams) {
	start := time.Now()
	h := &harness{t: t, p: p, gate: &gate{}, faults: map[string]int{}, stop: make(chan struct{}), itemSig: make(chan struct{}, 1)}
	h.srv = directustest.NewServer(&directustest.Options{HeartbeatPeriod: time.Second})
	defer h.srv.Close()
	if err := h.srv.AddCollection(directustest.Collection{Name: "notes", Fields: []string{"id", "body", "level"}}); err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.New(strings.TrimPrefix(h.srv.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	h.proxy = proxy
	defer proxy.Close()
	h.seed()

	h.scan = newSecretScan(directustest.AdminPassword, directustest.AdminToken)
	h.logger = slog.New(slog.NewTextHandler(h.scan, &slog.HandlerOptions{Level: slog.LevelDebug}))
	refresh := h.login()
	h.scan.add(refresh)

	// A goes through the proxy with email and password; B straight to the
	// server with a refresh token (and email and password to fall back on
	// if a rotation is lost with a dropped socket).
	h.obsA = &observer{name: "manager A (proxy, email/password)", secrets: h.scan}
	h.obsB = &observer{name: "manager B (direct, refresh token)", secrets: h.scan}
	h.mA = h.newManager(proxy.URL("http"), conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword}, h.obsA)
	h.mB = h.newManager(h.srv.URL(), conn.Auth{RefreshToken: refresh, Email: directustest.AdminEmail, Password: directustest.AdminPassword}, h.obsB)
	defer func() {
		for i := len(h.closers) - 1; i >= 0; i-- {
			h.closers[i]()
		}
	}()
	h.subscribeAll()

	// Writers, Items requests and subscription churn run until the faults
	// are done (or the test fails).
	defer h.stopWorkers()
	for i, w := range []func(*rand.Rand){h.writePosts, h.writeTags, h.writeNotes, h.requestItems, h.churn} {
		r := rand.New(rand.NewPCG(p.seed, uint64(100+i)))
		h.workers.Add(1)
		go func() {
			defer h.workers.Done()
			for !h.stopped() {
				w(r)
			}
		}()
	}

	r := rand.New(rand.NewPCG(p.seed, 1))
	total := 0
	for _, k := range faultKinds {
		total += k.weight
	}
	order := r.Perm(len(faultKinds)) // every kind once first, then weighted
	for i := range p.faults {
		var k faultKind
		if i < len(order) {
			k = faultKinds[order[i]]
		} else {
			n := r.IntN(total)
			for _, k = range faultKinds {
				if n -= k.weight; n < 0 {
					break
				}
			}
		}
		// Each fault draws its parameters from a generator of its own, so
		// that the schedule (kinds, order, pauses) depends on the seed
		// alone, whatever a fault does with the link it finds.
		k.run(h, rand.New(rand.NewPCG(p.seed, 1<<32+uint64(i))))
		h.faults[k.name]++
		if t.Failed() {
			break
		}
		time.Sleep(time.Duration(r.Int64N(int64(p.pace)))) // pacing of the schedule
	}
	faultPhase := time.Since(start)
	h.stopWorkers()
	h.allFaultsOff()

	converge := time.Now()
	h.verify()
	convergeTime := time.Since(converge)
	h.report(faultPhase, convergeTime, time.Since(start))
}

func (h *harness) stopWorkers() {
	h.stopOnce.Do(func() { close(h.stop) })
	h.workers.Wait()
}

func (h *harness) stopped() bool {
	select {
	case <-h.stop:
		return true
	default:
		return false
	}
}

func (h *harness) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.p.settle)
}

// seed fills the collections before anything subscribes.
func (h *harness) seed() {
	r := rand.New(rand.NewPCG(h.p.seed, 2))
	var posts, tags, notes []map[string]any
	for i := range 300 {
		posts = append(posts, map[string]any{"title": fmt.Sprintf("seed-%d", i), "status": randStatus(r), "views": r.IntN(1000)})
	}
	for i := range 80 {
		tags = append(tags, map[string]any{"name": randTagName(r, i)})
	}
	for i := range 100 {
		notes = append(notes, map[string]any{"body": fmt.Sprintf("seed-%d", i), "level": r.IntN(10)})
	}
	h.create("posts", posts...)
	h.create("tags", tags...)
	h.create("notes", notes...)
	pin := h.create("posts", map[string]any{"title": "pinned", "status": "published", "views": 1})
	h.pinned = pin[0]["id"].(int64)
}

// create and update write with events, on the test's goroutine.
func (h *harness) create(coll string, items ...map[string]any) []map[string]any {
	h.t.Helper()
	rows, err := h.srv.Create(coll, items...)
	if err != nil {
		h.t.Fatal(err)
	}
	return rows
}

func (h *harness) update(coll string, keys []any, patch map[string]any) []map[string]any {
	h.t.Helper()
	rows, err := h.srv.Update(coll, keys, patch)
	if err != nil {
		h.t.Fatal(err)
	}
	return rows
}

func randStatus(r *rand.Rand) string {
	return [...]string{"published", "draft", "archived"}[r.IntN(3)]
}

func randTagName(r *rand.Rand, n int) string {
	return string(rune('a'+r.IntN(5))) + "-" + strconv.Itoa(n)
}

// login gets a refresh token over REST for manager B.
func (h *harness) login() string {
	ctx, cancel := h.ctx()
	defer cancel()
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	c := rest.Client{Base: h.srv.URL()}
	if err := c.Do(ctx, http.MethodPost, "/auth/login",
		map[string]string{"email": directustest.AdminEmail, "password": directustest.AdminPassword}, &out); err != nil || out.RefreshToken == "" {
		h.t.Fatalf("login: %v", err)
	}
	return out.RefreshToken
}

func (h *harness) newManager(url string, auth conn.Auth, obs *observer) *manager.Manager {
	m, err := manager.New(&conn.Config{
		URL:            url,
		Auth:           auth,
		Logger:         h.logger,
		DialTimeout:    2 * time.Second,
		AuthTimeout:    3 * time.Second,
		RequestTimeout: 3 * time.Second,
		WriteTimeout:   3 * time.Second,
		PingInterval:   250 * time.Millisecond,
		PingTimeout:    750 * time.Millisecond,
		Backoff:        conn.Backoff{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond},
		OnError:        obs.onError,
		OnStateChange:  obs.onState,
		OnConnect:      obs.onConnect,
		OnRefreshToken: obs.onRefreshToken,
	}, &manager.Options{InitTimeout: 5 * time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	h.closers = append(h.closers, func() { _ = m.Close() })
	ctx, cancel := h.ctx()
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		h.t.Fatal(err)
	}
	return m
}

func postKey(p post) int64 { return p.ID }
func tagKey(t tag) string  { return t.ID }
func noteKey(n note) int64 { return n.ID }

func eq(field string, v any) map[string]any {
	return map[string]any{field: map[string]any{"_eq": v}}
}

// subscribe makes r's replica through m.
func subscribe[K comparable, T any](h *harness, m *manager.Manager, r *replica[K, T], opts manager.SubscribeOptions, sopts store.Options[K, T]) *replica[K, T] {
	sopts.Key = r.key
	sopts.Logger = h.logger
	r.coll = testutil.Must(store.New(sopts))
	h.closers = append(h.closers, func() { _ = r.coll.Close() })
	opts.Persistent = true
	ctx, cancel := h.ctx()
	defer cancel()
	sub, err := r.coll.Subscribe(ctx, m, opts)
	if err != nil {
		h.t.Fatalf("%s: %v", r.label, err)
	}
	r.sub = sub
	h.reps = append(h.reps, r)
	return r
}

// subscribeAll makes the replicas and raw subscriptions; every one has a
// query of its own, so each is a server subscription of its own.
func (h *harness) subscribeAll() {
	h.a1 = subscribe(h, h.mA, &replica[int64, post]{label: "A posts", collection: "posts", strict: true, key: postKey},
		manager.SubscribeOptions{Collection: "posts"}, store.Options[int64, post]{})
	subscribe(h, h.mA, &replica[int64, post]{label: "A posts published (fields)", collection: "posts", key: postKey,
		match:   func(p post) bool { return p.Status == "published" },
		project: func(p post) post { p.Views = 0; return p }},
		manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Fields: []string{"id", "title", "status"}, Filter: eq("status", "published")}},
		store.Options[int64, post]{})
	subscribe(h, h.mA, &replica[int64, post]{label: "A posts views>500", collection: "posts", key: postKey,
		match: func(p post) bool { return p.Views > 500 }},
		manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Filter: map[string]any{"views": map[string]any{"_gt": 500}}, Sort: []string{"-views"}}},
		store.Options[int64, post]{})
	subscribe(h, h.mA, &replica[string, tag]{label: "A tags", collection: "tags", strict: true, key: tagKey},
		manager.SubscribeOptions{Collection: "tags"}, store.Options[string, tag]{})
	subscribe(h, h.mA, &replica[int64, note]{label: "A notes (quiet writes)", collection: "notes", key: noteKey},
		manager.SubscribeOptions{Collection: "notes"}, store.Options[int64, note]{})
	// A small queue, and a listener that blocks at the gate.
	h.a6 = subscribe(h, h.mA, &replica[int64, post]{label: "A posts, queue 8", collection: "posts", strict: true, key: postKey},
		manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Sort: []string{"-id"}}, QueueSize: 8},
		store.Options[int64, post]{ListenerQueue: 64})
	h.listen = &listenMirror{gate: h.gate, coll: h.a6.coll, rows: map[int64]post{}}
	h.closers = append(h.closers, h.a6.coll.AddListener(h.listen))

	h.b1 = subscribe(h, h.mB, &replica[int64, post]{label: "B posts", collection: "posts", strict: true, key: postKey},
		manager.SubscribeOptions{Collection: "posts"}, store.Options[int64, post]{})
	subscribe(h, h.mB, &replica[string, tag]{label: "B tags a*", collection: "tags", key: tagKey,
		match: func(t tag) bool { return strings.HasPrefix(t.Name, "a") }},
		manager.SubscribeOptions{Collection: "tags", Query: &protocol.Query{Filter: map[string]any{"name": map[string]any{"_starts_with": "a"}}}},
		store.Options[string, tag]{})
	subscribe(h, h.mB, &replica[int64, note]{label: "B notes level>=5 (quiet writes)", collection: "notes", key: noteKey,
		match: func(n note) bool { return n.Level >= 5 }},
		manager.SubscribeOptions{Collection: "notes", Query: &protocol.Query{Filter: map[string]any{"level": map[string]any{"_gte": 5}}}},
		store.Options[int64, note]{})

	ctx, cancel := h.ctx()
	defer cancel()
	// The slow handler: a hand-written replica behind the gate, queue 32.
	h.mirror = newMirror(h.gate)
	sub, err := h.mA.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Persistent: true, QueueSize: 32,
		Query: &protocol.Query{Limit: -1, Fields: []string{"*"}}}, h.mirror)
	if err != nil {
		h.t.Fatal(err)
	}
	h.mirrorSub = sub
	// An event-only subscription and a single-item one.
	if _, err := h.mA.Subscribe(ctx, manager.SubscribeOptions{Collection: "tags", Event: protocol.EventCreate, Persistent: true},
		handlers.HandlerFunc(func(ev handlers.Event) error {
			if ev.Kind == handlers.KindCreate {
				h.eventOnly.Add(1)
			}
			return nil
		})); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.mB.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Item: strconv.FormatInt(h.pinned, 10), Persistent: true},
		handlers.HandlerFunc(func(ev handlers.Event) error {
			if ev.Kind != handlers.KindInit && ev.Kind != handlers.KindUpdate {
				return nil
			}
			items, err := handlers.Items[post](ev)
			if err != nil || len(items) != 1 {
				return err
			}
			h.itemMu.Lock()
			h.itemTitle = items[0].Title
			h.itemMu.Unlock()
			select {
			case h.itemSig <- struct{}{}:
			default:
			}
			return nil
		})); err != nil {
		h.t.Fatal(err)
	}
}

// ---- writers ----------------------------------------------------------

// pause paces a writer; it is not synchronisation.
func pause(r *rand.Rand, maxMs int) { time.Sleep(time.Duration(1+r.IntN(maxMs)) * time.Millisecond) }

func pick[T any](r *rand.Rand, s []T, n int) []T {
	out := make([]T, 0, n)
	for _, i := range r.Perm(len(s))[:min(n, len(s))] {
		out = append(out, s[i])
	}
	return out
}

func remove[T comparable](s []T, gone []T) []T {
	return slices.DeleteFunc(s, func(v T) bool { return slices.Contains(gone, v) })
}

// writePosts is the main writer: single and batch creates, updates that
// move rows in and out of the filters, deletes keyed by strings (as a URL
// path names them) and by numbers (as a JSON body does).
func (h *harness) writePosts(r *rand.Rand) {
	var keys []int64
	for !h.stopped() {
		pause(r, 6)
		switch op := r.IntN(10); {
		case len(keys) < 50 || (op < 3 && len(keys) < 300):
			n := 1
			if r.IntN(5) == 0 {
				n = 2 + r.IntN(20)
			}
			items := make([]map[string]any, n)
			for i := range items {
				items[i] = map[string]any{"title": "w-" + strconv.Itoa(r.IntN(1e6)), "status": randStatus(r), "views": r.IntN(1000)}
			}
			rows, err := h.srv.Create("posts", items...)
			if err != nil {
				h.t.Error(err)
				return
			}
			for _, row := range rows {
				keys = append(keys, row["id"].(int64))
			}
		case op < 7:
			batch := pick(r, keys, 1+r.IntN(3)*r.IntN(5))
			ks := make([]any, len(batch))
			for i, k := range batch {
				if len(batch) == 1 && r.IntN(2) == 0 {
					ks[i] = strconv.FormatInt(k, 10)
				} else {
					ks[i] = k
				}
			}
			patch := map[string]any{"views": r.IntN(1000)}
			if r.IntN(2) == 0 {
				patch["status"] = randStatus(r)
			}
			if r.IntN(3) == 0 {
				patch["title"] = "u-" + strconv.Itoa(r.IntN(1e6))
			}
			if _, err := h.srv.Update("posts", ks, patch); err != nil {
				h.t.Error(err)
				return
			}
		default:
			batch := pick(r, keys, 1+r.IntN(4))
			ks := make([]any, len(batch))
			asString := r.IntN(2) == 0
			for i, k := range batch {
				if asString {
					ks[i] = strconv.FormatInt(k, 10)
				} else {
					ks[i] = k
				}
			}
			if err := h.srv.Delete("posts", ks...); err != nil {
				h.t.Error(err)
				return
			}
			keys = remove(keys, batch)
		}
		h.writes.Add(1)
	}
}

// writeTags writes tags (uuid keys); renames move tags in and out of B's
// "a*" filter.
func (h *harness) writeTags(r *rand.Rand) {
	var keys []string
	n := 0
	for !h.stopped() {
		pause(r, 10)
		n++
		switch op := r.IntN(10); {
		case len(keys) < 20 || (op < 3 && len(keys) < 100):
			items := make([]map[string]any, 1+r.IntN(4))
			for i := range items {
				items[i] = map[string]any{"name": randTagName(r, n*10+i)}
			}
			rows, err := h.srv.Create("tags", items...)
			if err != nil {
				h.t.Error(err)
				return
			}
			for _, row := range rows {
				keys = append(keys, row["id"].(string))
			}
		case op < 7:
			batch := pick(r, keys, 1+r.IntN(3))
			ks := make([]any, len(batch))
			for i, k := range batch {
				ks[i] = k
			}
			if _, err := h.srv.Update("tags", ks, map[string]any{"name": randTagName(r, n)}); err != nil {
				h.t.Error(err)
				return
			}
		default:
			batch := pick(r, keys, 1+r.IntN(3))
			ks := make([]any, len(batch))
			for i, k := range batch {
				ks[i] = k
			}
			if err := h.srv.Delete("tags", ks...); err != nil {
				h.t.Error(err)
				return
			}
			keys = remove(keys, batch)
		}
		h.writes.Add(1)
	}
}

// writeNotes writes notes, half of the time without emitting events (a
// Flow without "emit events", raw SQL): only a reconcile can see those.
func (h *harness) writeNotes(r *rand.Rand) {
	var keys []int64
	quiet := h.srv.Quiet()
	for !h.stopped() {
		pause(r, 10)
		silent := r.IntN(2) == 0
		create := func(items ...map[string]any) ([]map[string]any, error) {
			if silent {
				return quiet.Create("notes", items...)
			}
			return h.srv.Create("notes", items...)
		}
		update := func(keys []any, patch map[string]any) error {
			var err error
			if silent {
				_, err = quiet.Update("notes", keys, patch)
			} else {
				_, err = h.srv.Update("notes", keys, patch)
			}
			return err
		}
		del := func(keys ...any) error {
			if silent {
				return quiet.Delete("notes", keys...)
			}
			return h.srv.Delete("notes", keys...)
		}
		var err error
		switch op := r.IntN(10); {
		case len(keys) < 30 || (op < 3 && len(keys) < 120):
			var rows []map[string]any
			rows, err = create(map[string]any{"body": "n-" + strconv.Itoa(r.IntN(1e6)), "level": r.IntN(10)})
			for _, row := range rows {
				keys = append(keys, row["id"].(int64))
			}
		case op < 7:
			batch := pick(r, keys, 1+r.IntN(3))
			ks := make([]any, len(batch))
			for i, k := range batch {
				ks[i] = k
			}
			err = update(ks, map[string]any{"level": r.IntN(10)})
		default:
			batch := pick(r, keys, 1+r.IntN(2))
			ks := make([]any, len(batch))
			for i, k := range batch {
				ks[i] = strconv.FormatInt(k, 10)
			}
			err = del(ks...)
			keys = remove(keys, batch)
		}
		if err != nil {
			h.t.Error(err)
			return
		}
		if silent {
			h.quietWrites.Add(1)
		}
		h.writes.Add(1)
	}
}

// requestItems makes items requests over manager A's connection, which the
// faults keep breaking: each must end with a reply or a typed error.
func (h *harness) requestItems(r *rand.Rand) {
	var mine []any
	for !h.stopped() {
		pause(r, 20)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var err error
		switch op := r.IntN(3); {
		case op == 0:
			_, err = h.mA.Items(ctx, protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionRead, Query: &protocol.Query{Limit: 3}})
		case op == 1 || len(mine) == 0:
			var reply *protocol.Message
			reply, err = h.mA.Items(ctx, protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionCreate,
				Data: map[string]any{"title": "ws-" + strconv.Itoa(r.IntN(1e6)), "status": "draft", "views": 3}})
			if err == nil {
				var p post
				if json.Unmarshal(reply.Data, &p) == nil && p.ID != 0 {
					mine = append(mine, p.ID)
				}
			}
		default:
			id := mine[0]
			_, err = h.mA.Items(ctx, protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionDelete, ID: id})
			if err == nil {
				mine = mine[1:]
			}
		}
		cancel()
		if err != nil {
			h.itemsErr.Add(1)
		} else {
			h.itemsOK.Add(1)
		}
	}
}

// churn makes short-lived subscriptions, scoped by a context or a Scope, on
// manager A: none of them may outlive its scope, locally or on the server.
func (h *harness) churn(r *rand.Rand) {
	pause(r, 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	opts := manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Filter: eq("views", r.IntN(50)), Limit: 5}}
	nop := handlers.HandlerFunc(func(handlers.Event) error { return nil })
	var err error
	if r.IntN(2) == 0 {
		_, err = h.mA.Subscribe(ctx, opts, nop)
	} else {
		sc := h.mA.NewScope(ctx)
		defer sc.Close()
		_, err = sc.Subscribe(ctx, opts, nop)
	}
	if err != nil {
		h.churnErr.Add(1)
	} else {
		h.churnOK.Add(1)
	}
	pause(r, 5)
}

// ---- faults -----------------------------------------------------------

func (h *harness) restart(_ *rand.Rand) { h.srv.Restart() }

// expire expires the tokens of both managers once they are connected, so
// that both re-authenticate (their identities come from a login and a
// refresh token, which expire).
func (h *harness) expire(_ *rand.Rand) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range []*manager.Manager{h.mA, h.mB} {
		if err := waitConnected(ctx, m); err != nil {
			h.t.Errorf("expire: %v", err)
		}
	}
	h.srv.ExpireTokens()
}

func (h *harness) refuse(r *rand.Rand) {
	h.proxy.Refuse(time.Duration(20+r.IntN(200)) * time.Millisecond)
	h.proxy.Cut()
}

func (h *harness) stallShort(r *rand.Rand) {
	h.proxy.Stall(true)
	time.Sleep(time.Duration(10+r.IntN(150)) * time.Millisecond) // the length of the fault
	h.proxy.Stall(false)
}

// stallLong stalls the proxy until manager A's heartbeat declares the link
// dead and drops the session.
func (h *harness) stallLong(_ *rand.Rand) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitConnected(ctx, h.mA); err != nil {
		h.t.Errorf("stall: manager A not connected: %v", err)
		return
	}
	states := h.mA.WatchState(ctx)
	h.proxy.Stall(true)
	defer h.proxy.Stall(false)
	for {
		select {
		case sc := <-states:
			if sc.To == conn.StateReconnecting {
				return
			}
		case <-ctx.Done():
			h.t.Errorf("a stalled link was not noticed in 30s")
			return
		}
	}
}

func (h *harness) proxyDelay(r *rand.Rand) {
	h.proxy.SetDelay([...]time.Duration{0, 0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}[r.IntN(5)])
}

func (h *harness) proxySplit(r *rand.Rand) {
	h.proxy.SetSplit([...]int{0, 0, 7, 64, 512, 1400}[r.IntN(6)])
}

func (h *harness) serverDelay(r *rand.Rand) {
	h.srv.SetFrameDelay([...]time.Duration{0, 0, time.Millisecond, 5 * time.Millisecond}[r.IntN(4)])
}

// burst writes a thousand or two events as fast as the server takes them:
// batch creates, single updates keyed by strings, batch updates, single
// deletes keyed by strings and batch deletes keyed by numbers. It then waits
// until A and B have absorbed them, so that bursts do not pile up.
func (h *harness) burst(r *rand.Rand) {
	n := (h.p.burstMin + r.IntN(h.p.burstMax-h.p.burstMin+1)) * 4 / 7 // 1.75 events per row
	h.burstSeq++
	var ids []any
	for len(ids) < n {
		items := make([]map[string]any, min(200, n-len(ids)))
		for i := range items {
			items[i] = map[string]any{"title": fmt.Sprintf("burst-%d-%d", h.burstSeq, len(ids)+i), "status": randStatus(r), "views": r.IntN(1000)}
		}
		rows := h.create("posts", items...)
		for _, row := range rows {
			ids = append(ids, row["id"])
		}
	}
	events := len(ids)
	for i, id := range ids {
		if i%4 == 0 {
			h.update("posts", []any{strconv.FormatInt(id.(int64), 10)}, map[string]any{"views": r.IntN(1000)})
			events++
		}
	}
	for i := 0; i < len(ids); i += 100 {
		h.update("posts", ids[i:min(i+100, len(ids))], map[string]any{"status": randStatus(r)})
		events++
	}
	half := len(ids) / 2
	for _, id := range ids[:half] {
		if err := h.srv.Delete("posts", strconv.FormatInt(id.(int64), 10)); err != nil {
			h.t.Fatal(err)
		}
		events++
	}
	for i := half; i < len(ids); i += 200 {
		if err := h.srv.Delete("posts", ids[i:min(i+200, len(ids))]...); err != nil {
			h.t.Fatal(err)
		}
		events++
	}
	h.burstEvents.Add(int64(events))
	h.absorbed(fmt.Sprintf("burst-%d", h.burstSeq))
}

// absorbed marks the pinned post with title and waits until A's and B's
// posts replicas show it: everything written before has been delivered.
func (h *harness) absorbed(title string) {
	row := h.update("posts", []any{strconv.FormatInt(h.pinned, 10)}, map[string]any{"title": title})[0]
	ctx, cancel := h.ctx()
	defer cancel()
	for _, rep := range []*replica[int64, post]{h.a1, h.b1} {
		if err := rep.waitRow(ctx, row); err != nil {
			h.t.Errorf("%s did not absorb %s: %v", rep.label, title, err)
		}
	}
}

// slow shuts the gate of the mirror's handler and of A6's listener, writes
// a few hundred events, waits until manager A has routed them all (A's
// fast replica shows a later write), and opens the gate again: the
// handler's queue (32) has overflowed into a resync and the listener's (64)
// into a reset.
func (h *harness) slow(r *rand.Rand) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitConnected(ctx, h.mA); err != nil {
		h.t.Errorf("slow: manager A not connected: %v", err)
		return
	}
	// The subscribe frames of a restore precede the ping: once it is
	// answered, the server has registered them and their inits come before
	// any event written now.
	if _, err := h.mA.Conn().Ping(ctx); err != nil {
		return // the link broke again; this slow fault cannot overflow
	}
	h.gate.shut()
	defer h.gate.open()
	n := 100 + r.IntN(200)
	items := make([]map[string]any, n)
	for i := range items {
		items[i] = map[string]any{"title": "slow-" + strconv.Itoa(i), "status": "draft", "views": r.IntN(1000)}
	}
	rows := h.create("posts", items...)
	ids := make([]any, len(rows))
	for i, row := range rows {
		ids[i] = row["id"]
	}
	if err := h.srv.Delete("posts", ids...); err != nil {
		h.t.Fatal(err)
	}
	h.slowSeq++
	row := h.update("posts", []any{strconv.FormatInt(h.pinned, 10)}, map[string]any{"title": fmt.Sprintf("slow-%d", h.slowSeq)})[0]
	if err := h.a1.waitRow(ctx, row); err != nil {
		h.t.Errorf("slow: A posts did not absorb the writes: %v", err)
	}
}

// Frames the server never sends. Their effect must be a reported error or
// nothing, never a panic, a changed row or a lost subscription.
var garbageFrames = []string{
	`not json at all`, `{"type":`, `[1,2,3]`, `"just a string"`, `{}`, `{"type":null}`, `{"type":5}`,
	`{"type":["subscription"]}`, `null`, `{"type":"subscription","event":"create","data":[{"id":1}]`,
}

var wrongShapeFrames = []string{
	`{"type":"subscription"}`,
	`{"type":"subscription","event":5,"uid":"x"}`,
	`{"type":"subscription","event":"create","uid":true}`,
	`{"type":"subscription","event":"create","uid":{"a":1},"data":[]}`,
	`{"type":"auth","status":"error"}`,
	`{"type":"items","status":"error","error":"FORBIDDEN","uid":"dr-1"}`,
	`{"type":"pong","status":7}`,
	`{"type":"auth","status":"ok","refresh_token":42}`,
	`{"type":"subscription","event":"create","uid":"ghost","data":[{"id":1,"title":"ghost"}]}`,
	`{"type":"subscription","event":"init","uid":"ghost","data":[]}`,
}

var unknownFrames = []string{
	`{"type":"whatever"}`, `{"type":"subscription-v2","data":[1]}`, `{"type":"PING"}`,
	`{"type":"","uid":"rt1"}`, `{"type":"collab","event":"init","data":{"x":1}}`,
}

var uidLessErrors = []string{
	`{"type":"subscribe","status":"error","error":{"code":"INVALID_PAYLOAD","message":"soak"}}`,
	`{"type":"unsubscribe","status":"error","error":{"code":"INVALID_PAYLOAD","message":"soak"}}`,
	`{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"soak"}}`,
	`{"type":"items","status":"error","error":{"code":"FORBIDDEN","message":"soak"}}`,
	`{"type":"auth","status":"error","error":{"code":"TOKEN_EXPIRED","message":"soak"}}`,
}

func (h *harness) injectGarbage(r *rand.Rand) {
	if r.IntN(4) == 0 {
		b := make([]byte, 1+r.IntN(64))
		for i := range b {
			b[i] = byte(32 + r.IntN(95))
		}
		h.srv.Inject(b)
		return
	}
	h.srv.Inject([]byte(garbageFrames[r.IntN(len(garbageFrames))]))
}

func (h *harness) injectWrongShape(r *rand.Rand) {
	h.srv.Inject([]byte(wrongShapeFrames[r.IntN(len(wrongShapeFrames))]))
}

func (h *harness) injectUnknown(r *rand.Rand) {
	h.srv.Inject([]byte(unknownFrames[r.IntN(len(unknownFrames))]))
}

func (h *harness) injectUIDLessError(r *rand.Rand) {
	h.srv.Inject([]byte(uidLessErrors[r.IntN(len(uidLessErrors))]))
}

// injectBadRows sends every live subscription an event or an init whose
// data does not decode into rows: each replica must skip it, count it and
// keep its rows.
func (h *harness) injectBadRows(r *rand.Rand) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitConnected(ctx, h.mA); err != nil {
		h.t.Errorf("bad rows: manager A not connected: %v", err)
		return
	}
	if _, err := h.mA.Conn().Ping(ctx); err != nil {
		return // the link broke again
	}
	frames := []string{
		`{"type":"subscription","event":"create","uid":%q,"data":"x"}`,
		`{"type":"subscription","event":"update","uid":%q,"data":[1,2,3]}`,
		`{"type":"subscription","event":"update","uid":%q,"data":[{"id":{"nested":true}}]}`,
		`{"type":"subscription","event":"delete","uid":%q,"data":[{"id":1}]}`,
		`{"type":"subscription","event":"delete","uid":%q,"data":[true]}`,
		`{"type":"subscription","event":"init","uid":%q,"data":42}`,
		`{"type":"subscription","event":"init","uid":%q,"data":"x"}`,
	}
	frame := frames[r.IntN(len(frames))]
	for _, s := range h.srv.Subscriptions() {
		h.srv.Inject(fmt.Appendf(nil, frame, s.UID))
	}
	// The injected frames precede the pong: once it is back and A's posts
	// replica has handled what it was given, it must still hold the pinned
	// post, which no writer deletes.
	if _, err := h.mA.Conn().Ping(ctx); err != nil {
		return
	}
	if err := h.a1.sub.Flush(ctx); err != nil {
		return
	}
	if _, ok := h.a1.coll.Get(h.pinned); !ok {
		h.t.Errorf("%s lost the pinned post after %s (%d rows left)", h.a1.label, frame, h.a1.coll.Len())
	}
}

func waitConnected(ctx context.Context, m *manager.Manager) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	states := m.WatchState(ctx)
	for m.State() != conn.StateConnected {
		select {
		case <-states:
		case <-ctx.Done():
			return fmt.Errorf("state %v: %w", m.State(), ctx.Err())
		}
	}
	return nil
}

func (h *harness) allFaultsOff() {
	h.gate.open()
	h.proxy.Stall(false)
	h.proxy.SetDelay(0)
	h.proxy.SetSplit(0)
	if err := h.proxy.SetRefusing(false); err != nil {
		h.t.Fatal(err)
	}
	h.srv.SetFrameDelay(0)
	h.srv.Start()
}

// ---- the end ------------------------------------------------------------

func (h *harness) verify() {
	t := h.t
	ctx, cancel := h.ctx()
	defer cancel()

	// A last loud write to every collection, and a new title for the pinned
	// post by a string key, which the single-item subscription sees.
	marker := func(coll string, item map[string]any) map[string]any {
		return h.create(coll, item)[0]
	}
	markers := map[string]map[string]any{
		"posts": marker("posts", map[string]any{"title": "marker", "status": "published", "views": 999}),
		"tags":  marker("tags", map[string]any{"name": "a-marker"}),
		"notes": marker("notes", map[string]any{"body": "marker", "level": 9}),
	}
	h.update("posts", []any{strconv.FormatInt(h.pinned, 10)}, map[string]any{"title": "final"})

	// Replicas of unfiltered collections without quiet writes become equal
	// to the server by events and resyncs alone.
	for _, rep := range h.reps {
		if rep.isStrict() {
			if err := rep.waitEqual(ctx, h.srv); err != nil {
				t.Errorf("without reconcile: %v", err)
				h.dump()
			}
		}
	}
	want := map[int64]post{}
	for _, row := range h.srv.Items("posts") {
		p, err := decodeRow[post](row)
		if err != nil {
			t.Fatal(err)
		}
		want[p.ID] = p
	}
	if err := h.mirror.waitFor(ctx, func(rows map[int64]post) bool { return equalMaps(rows, want) }); err != nil {
		t.Errorf("slow handler's mirror: %v", diffRows("mirror", want, h.mirror.snapshot()))
	}
	for {
		h.itemMu.Lock()
		title := h.itemTitle
		h.itemMu.Unlock()
		if title == "final" {
			break
		}
		select {
		case <-h.itemSig:
		case <-ctx.Done():
			t.Errorf("single-item subscription saw %q, want %q", title, "final")
		}
		if ctx.Err() != nil {
			break
		}
	}

	// Every replica has caught up with the markers; after one reconcile
	// each, filter exits and quiet writes are corrected too.
	for _, rep := range h.reps {
		coll := rep.subscription().Collection()
		if err := rep.waitRow(ctx, markers[coll]); err != nil {
			t.Errorf("%s: marker not seen: %v", rep.name(), err)
		}
	}
	for _, rep := range h.reps {
		if err := rep.reconcile(ctx); err != nil {
			t.Errorf("%s: reconcile: %v", rep.name(), err)
		}
		if err := rep.diff(h.srv); err != nil {
			t.Errorf("after reconcile: %v", err)
		}
	}

	// The listener that was reset and re-read its snapshot holds the rows.
	if err := h.a6.coll.FlushListeners(ctx); err != nil {
		t.Error(err)
	}
	h.listen.mu.Lock()
	if err := diffRows("A6 listener", h.a6.coll.Snapshot(), h.listen.rows); err != nil {
		t.Error(err)
	}
	resets := h.listen.resets
	h.listen.mu.Unlock()

	// Every subscription is active, none of the churned ones is left, and
	// each is registered exactly once on the server.
	for _, m := range []*manager.Manager{h.mA, h.mB} {
		if err := waitConnected(ctx, m); err != nil {
			t.Error(err)
		}
	}
	infosA, infosB := h.mA.ActiveSubscriptions(), h.mB.ActiveSubscriptions()
	for _, info := range append(infosA, infosB...) {
		if info.State != manager.StateActive {
			t.Errorf("subscription %s (%s) is %v", info.UID, info.Collection, info.State)
		}
	}
	// The filtered replicas' companions (updates of their collection with
	// the fields their filters read, store.Options.FilterExits) come on
	// top: one server subscription per distinct set of fields.
	companions := func(infos []manager.Info) (locals, distinct int) {
		seen := map[string]bool{}
		for _, info := range infos {
			if info.Options.Event == protocol.EventUpdate && info.Options.Query != nil && info.Options.Query.Filter == nil {
				locals++
				seen[info.Collection+fmt.Sprint(info.Options.Query.Fields)] = true
			}
		}
		return locals, len(seen)
	}
	localA, compA := companions(infosA)
	localB, compB := companions(infosB)
	if len(infosA)-localA != 8 || len(infosB)-localB != 4 || compA+compB == 0 {
		t.Errorf("%d and %d live subscriptions besides %d and %d companions, want 8 and 4 and some (churned ones left behind?)",
			len(infosA)-localA, len(infosB)-localB, localA, localB)
	}
	for _, m := range []*manager.Manager{h.mA, h.mB} {
		// The server handles a connection's frames in order: once the pong
		// is back, every unsubscribe sent before it has been handled.
		if _, err := m.Conn().Ping(ctx); err != nil {
			t.Error(err)
		}
	}
	if err := h.srv.WaitConns(ctx, 2); err != nil {
		t.Errorf("server has %d connections, want 2", h.srv.ConnCount())
	}
	perConn := map[int64]int{}
	for _, s := range h.srv.Subscriptions() {
		perConn[s.Conn]++
	}
	counts := slices.Sorted(func(yield func(int) bool) {
		for _, n := range perConn {
			if !yield(n) {
				return
			}
		}
	})
	if want := slices.Sorted(slices.Values([]int{8 + compA, 4 + compB})); !slices.Equal(counts, want) {
		t.Errorf("server subscriptions per connection %v, want %v", counts, want)
	}

	// Nothing exposed.
	if leaks := h.scan.leaked(); len(leaks) > 0 {
		t.Errorf("%d log lines or errors contain a secret, first: %q", len(leaks), leaks[0])
	}

	// The faults happened and were seen.
	var st store.Stats
	var overflows, subResyncs uint64
	for _, rep := range h.reps {
		s := rep.stats()
		st.Resyncs += s.Resyncs
		st.BadRows += s.BadRows
		st.Errors += s.Errors
		ss := rep.subscription().Stats()
		overflows += ss.Overflows
		subResyncs += ss.Resyncs
	}
	ms := h.mirrorSub.Stats()
	overflows += ms.Overflows
	checks := []struct {
		what string
		n    int64
	}{
		{"reconnects of A", h.obsA.reconnects.Load()},
		{"reconnects of B", h.obsB.reconnects.Load()},
		{"re-authentications of A", h.obsA.reauths.Load()},
		{"re-authentications of B", h.obsB.reauths.Load()},
		{"failed connect attempts of A", h.obsA.connectFails.Load()},
		{"protocol errors reported", h.obsA.protocolErrs.Load() + h.obsB.protocolErrs.Load()},
		{"uid-less server errors reported", h.obsA.serverErrs.Load() + h.obsB.serverErrs.Load()},
		{"handler errors (bad rows) reported", h.obsA.handlerErrs.Load() + h.obsB.handlerErrs.Load()},
		{"replica resyncs", int64(st.Resyncs)},
		{"bad rows skipped", int64(st.BadRows)},
		{"queue overflows", int64(overflows)},
		{"slow handler's overflows", int64(ms.Overflows)},
		{"listener resets", int64(resets)},
		{"items requests answered", h.itemsOK.Load()},
		{"items requests failed by faults", h.itemsErr.Load()},
		{"churned subscriptions", h.churnOK.Load()},
		{"quiet writes", h.quietWrites.Load()},
		{"event-only creates", h.eventOnly.Load()},
		{"log lines scanned", h.scan.lines.Load()},
	}
	for _, c := range checks {
		if c.n == 0 {
			t.Errorf("no %s: the faults did not happen or were not seen", c.what)
		}
	}
	for _, k := range faultKinds {
		if h.faults[k.name] == 0 && h.p.faults >= len(faultKinds) {
			t.Errorf("fault %q never applied", k.name)
		}
	}
	var b strings.Builder
	for _, c := range checks {
		fmt.Fprintf(&b, "\n  %-38s %d", c.what, c.n)
	}
	fmt.Fprintf(&b, "\n  %-38s %d", "subscription resyncs (replicas)", subResyncs)
	fmt.Fprintf(&b, "\n  %-38s %d", "slow handler's resyncs", ms.Resyncs)
	fmt.Fprintf(&b, "\n  %-38s %d", "error events (replicas)", st.Errors)
	t.Logf("counters:%s\n  %s\n  %s", b.String(), h.obsA, h.obsB)
	for _, o := range []*observer{h.obsA, h.obsB} {
		o.mu.Lock()
		if len(o.samples) > 0 {
			t.Logf("%s: failed re-authentications and other errors, first ones: %q", o.name, o.samples)
		}
		o.mu.Unlock()
	}
}

// dump logs the state of both managers and of the server's subscriptions.
func (h *harness) dump() {
	for _, m := range []*manager.Manager{h.mA, h.mB} {
		h.t.Logf("manager state %v", m.State())
		for _, info := range m.ActiveSubscriptions() {
			h.t.Logf("  %s %s %v %+v", info.UID, info.Collection, info.State, info.Stats)
		}
	}
	for _, s := range h.srv.Subscriptions() {
		h.t.Logf("  server: conn %d uid %s %s %s", s.Conn, s.UID, s.Collection, s.Query)
	}
}

func equalMaps(a, b map[int64]post) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (h *harness) report(faultPhase, converge, total time.Duration) {
	var names []string
	n := 0
	for _, k := range faultKinds {
		names = append(names, fmt.Sprintf("%s %d", k.name, h.faults[k.name]))
		n += h.faults[k.name]
	}
	h.t.Logf("seed %d: %d faults in %v (%s); %d writes (%d quiet), %d burst events; converged in %v; total %v",
		h.p.seed, n, faultPhase.Round(time.Millisecond), strings.Join(names, ", "),
		h.writes.Load(), h.quietWrites.Load(), h.burstEvents.Load(), converge.Round(time.Millisecond), total.Round(time.Millisecond))
}
