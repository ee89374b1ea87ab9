// Command replica keeps a typed, live, in-memory replica of a Directus
// collection and shows that it stays equal to the server.
//
// By default it starts an embedded Directus (directustest), lets a writer
// goroutine make random changes to "posts" through the REST API (creates,
// batch updates, status flips, deletes by string and by number keys) and
// replicates "posts" into a store.Collection[int64, Post]. A listener prints
// what changes, a few lines a second, and the replica's size every second.
// At the end it compares the replica with the server's rows and exits 1 if
// they differ.
//
//	go run ./examples/replica -duration 5s
//	go run ./examples/replica -url http://127.0.0.1:8055 -token <static token> [-collection posts] [-write]
//
// Against a real Directus nothing is written unless -write is given; the
// writer then only touches rows it created itself.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/store"
)

// Post is a row of the "posts" collection. The replica decodes the events'
// JSON into it, exactly as encoding/json would.
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

type config struct {
	URL        string        // a real Directus; empty starts the embedded server
	Token      string        // its static token
	Collection string        // what to replicate (with -url)
	Write      bool          // let the writer write to the real Directus
	Duration   time.Duration // 0 runs until interrupted
	WriteEvery time.Duration // the writer's pace
	Lines      int           // change lines printed per second at most

	// synced, when set, is called once the replica holds the server's rows
	// (the tests use it).
	synced func()
}

func main() {
	var cfg config
	flag.StringVar(&cfg.URL, "url", "", "base URL of a real Directus, e.g. http://127.0.0.1:8055 (default: an embedded server)")
	flag.StringVar(&cfg.Token, "token", "", "static token of a Directus user (with -url)")
	flag.StringVar(&cfg.Collection, "collection", "posts", "collection to replicate (with -url)")
	flag.BoolVar(&cfg.Write, "write", false, "with -url: also run the writer (it writes title, status and views, and only touches rows it created)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (default: run until interrupted)")
	flag.DurationVar(&cfg.WriteEvery, "write-every", 50*time.Millisecond, "pause between two writes")
	flag.IntVar(&cfg.Lines, "lines", 5, "print at most this many changes a second; the others are counted")
	flag.Parse()

	// Ctrl-C (or SIGTERM) ends the run cleanly, with the final check; a
	// second Ctrl-C kills the program.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	err := run(ctx, cfg, os.Stdout)
	stop()
	// An interrupt during the setup is a clean exit; a replica that differs
	// from the server at the end is not.
	if err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("replica", "err", err)
		os.Exit(1)
	}
}

// errDiffers is returned when the replica does not equal the server at the end.
var errDiffers = errors.New("the replica differs from the server")

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	log := slog.New(slog.NewTextHandler(stdout, nil))
	if cfg.Collection == "" {
		cfg.Collection = "posts"
	}
	if cfg.Lines <= 0 {
		cfg.Lines = 5
	}

	// The embedded server plays Directus unless -url names a real one.
	baseURL, token, write := cfg.URL, cfg.Token, cfg.Write
	var srv *directustest.Server
	if baseURL == "" {
		if cfg.Collection != "posts" {
			return fmt.Errorf("the embedded server's writer writes posts; -collection %s needs -url", cfg.Collection)
		}
		srv = directustest.NewServer(nil)
		defer srv.Close()
		baseURL, token, write = srv.URL(), directustest.AdminToken, true
		log.Info("embedded Directus started", "url", baseURL)
	}

	// A plain REST client for the writer and for the final check.
	httpClient := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 30 * time.Second}
	defer httpClient.CloseIdleConnections()
	api := &restClient{base: baseURL, token: token, http: httpClient}

	// One Manager owns the WebSocket connection; it reconnects by itself and
	// restores every subscription on the new session.
	m, err := manager.New(&conn.Config{URL: baseURL, Auth: conn.Auth{Token: token}, Logger: log}, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	log.Info("connected", "url", baseURL)

	r := &replicator{cfg: cfg, log: log, m: m, api: api, srv: srv, write: write}
	if cfg.Collection == "posts" {
		// The typed replica the README talks about.
		return replicate(ctx, r, func(p Post) int64 { return p.ID }, describePost, describePostUpdate)
	}
	// Any other collection of a real Directus: rows as maps, keyed by the
	// text of their "id" (an integer or a uuid alike).
	return replicate(ctx, r, rowKey, describeRow, func(_, after map[string]any) string { return describeRow(after) })
}

// replicator holds what replicate needs, whatever the row type.
type replicator struct {
	cfg   config
	log   *slog.Logger
	m     *manager.Manager
	api   *restClient
	srv   *directustest.Server // nil against a real Directus
	write bool
}

// replicate runs the replica of r.cfg.Collection with rows of type T keyed
// by K until ctx is done, then checks it against the server.
func replicate[K comparable, T any](ctx context.Context, r *replicator, key func(T) K, describe func(T) string, describeUpdate func(before, after T) string) error {
	coll := r.cfg.Collection

	// The writer seeds a few rows first, so that the replica's first init
	// has something in it.
	var w *writer
	if r.write {
		w = &writer{api: r.api, collection: coll, log: r.log}
		if err := w.create(ctx, 20); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}

	// The replica: a typed in-memory copy of the rows, keyed by primary key.
	posts, err := store.New(store.Options[K, T]{Key: key, Logger: r.log})
	if err != nil {
		return err
	}
	defer posts.Close()
	// Persistent: the subscription lives until posts.Close, not only as long
	// as ctx, so that the replica is still there for the final check.
	// Subscribe returns once the server's init has been applied; the query
	// defaults to every row (limit -1).
	if _, err := posts.Subscribe(ctx, r.m, manager.SubscribeOptions{Collection: coll, Persistent: true}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	r.log.Info("replica synced", "collection", coll, "rows", posts.Len())
	if r.cfg.synced != nil {
		r.cfg.synced()
	}

	// A listener hears every change after the replica shows it. It prints a
	// few of them a second and counts the rest.
	feed := &changeFeed[K, T]{log: r.log, max: r.cfg.Lines, describe: describe, describeUpdate: describeUpdate}
	removeListener := posts.AddListener(store.ListenerFunc[K, T](feed.onChange))
	defer removeListener()

	// -duration counts from here, once the replica is live.
	if r.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Duration)
		defer cancel()
	}

	// The writer and the once-a-second summary run until ctx is done.
	var wg sync.WaitGroup
	if w != nil {
		wg.Go(func() { w.run(ctx, r.cfg.WriteEvery) })
	}
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				feed.summary(posts.Len(), true)
			}
		}
	})
	<-ctx.Done()
	wg.Wait() // the writer has made its last write
	feed.summary(posts.Len(), false)
	if w != nil {
		r.log.Info("writer stopped", "creates", w.creates, "updates", w.updates, "deletes", w.deletes, "failed", w.failed)
	}

	// The final check, with a fresh deadline: ctx is already done.
	checkCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return check(checkCtx, r, posts, key)
}

// check compares the replica with the server's rows and reports the result.
func check[K comparable, T any](ctx context.Context, r *replicator, posts *store.Collection[K, T], key func(T) K) error {
	var rows []T
	var err error
	if r.srv != nil {
		// The embedded server can be asked directly.
		rows, err = convertRows[T](r.srv.Items(r.cfg.Collection))
	} else {
		// A real Directus may have had writes that emitted no event (a Flow
		// without "emit events", raw SQL): Reconcile re-reads the query now.
		// Then read the rows over REST.
		if err := posts.Reconcile(ctx); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		var data json.RawMessage
		data, err = r.api.do(ctx, http.MethodGet, "/items/"+url.PathEscape(r.cfg.Collection)+"?limit=-1", nil)
		if err == nil {
			err = json.Unmarshal(data, &rows)
		}
	}
	if err != nil {
		return fmt.Errorf("read the server's rows: %w", err)
	}
	want := make(map[K]T, len(rows))
	for _, row := range rows {
		want[key(row)] = row
	}

	// Events may still be on their way: wait until the replica has applied
	// everything (WaitFor re-checks after every applied event), or give up.
	var d diff
	err = posts.WaitFor(ctx, func() bool {
		d = compare(posts.Snapshot(), want)
		return d.equal()
	})
	st := posts.Stats()
	if err != nil {
		r.log.Error("replica differs from the server", "rows", posts.Len(), "server_rows", len(want),
			"missing", d.missing, "extra", d.extra, "changed", d.changed)
		return errDiffers
	}
	r.log.Info("replica equals the server", "rows", len(want), "events", st.Events, "resyncs", st.Resyncs)
	return nil
}

// diff counts the differences between a replica and the server's rows.
type diff struct{ missing, extra, changed int }

func (d diff) equal() bool { return d == diff{} }

func compare[K comparable, T any](have, want map[K]T) diff {
	var d diff
	for k, w := range want {
		h, ok := have[k]
		switch {
		case !ok:
			d.missing++
		case !reflect.DeepEqual(h, w):
			d.changed++
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			d.extra++
		}
	}
	return d
}

// convertRows turns rows of the embedded server into T, as JSON would.
func convertRows[T any](rows []map[string]any) ([]T, error) {
	b, err := json.Marshal(rows)
	if err != nil {
		return nil, err
	}
	var out []T
	return out, json.Unmarshal(b, &out)
}

func describePost(p Post) string {
	return fmt.Sprintf("#%d %q %s views=%d", p.ID, p.Title, p.Status, p.Views)
}

// describePostUpdate names the fields that changed.
func describePostUpdate(before, after Post) string {
	var parts []string
	if before.Title != after.Title {
		parts = append(parts, fmt.Sprintf("title %q→%q", before.Title, after.Title))
	}
	if before.Status != after.Status {
		parts = append(parts, fmt.Sprintf("status %s→%s", before.Status, after.Status))
	}
	if before.Views != after.Views {
		parts = append(parts, fmt.Sprintf("views %d→%d", before.Views, after.Views))
	}
	return strings.Join(parts, ", ")
}

// rowKey keys untyped rows by the normalised text of their "id".
func rowKey(row map[string]any) string {
	k, _ := handlers.KeyOf(row["id"])
	return string(k)
}

func describeRow(row map[string]any) string {
	b, _ := json.Marshal(row)
	if len(b) > 120 {
		b = append(b[:117], "..."...)
	}
	return string(b)
}

// changeFeed prints at most max changes a second and counts all of them.
type changeFeed[K comparable, T any] struct {
	log            *slog.Logger
	max            int
	describe       func(T) string
	describeUpdate func(before, after T) string

	mu                              sync.Mutex
	shown, hidden                   int
	initial, adds, updates, deletes int
	resets                          int
}

func (f *changeFeed[K, T]) onChange(ch store.Change[K, T]) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case ch.Initial:
		// The rows present when the listener was added: counted, not printed.
		f.initial++
		return
	case ch.Op == store.OpAdd:
		f.adds++
	case ch.Op == store.OpUpdate:
		f.updates++
	case ch.Op == store.OpDelete:
		f.deletes++
	case ch.Op == store.OpReset:
		// The listener fell far behind and its backlog was dropped; a real
		// consumer would re-read the collection (Snapshot) here.
		f.resets++
		f.log.Warn("listener reset: too far behind")
		return
	}
	if f.shown >= f.max {
		f.hidden++
		return
	}
	f.shown++
	// Changes found by a later init (a reconnect, a reconcile) say so.
	var resync []any
	if ch.Resync {
		resync = []any{"resync", true}
	}
	switch ch.Op {
	case store.OpAdd:
		f.log.Info("add", append([]any{"key", ch.Key, "row", f.describe(ch.New)}, resync...)...)
	case store.OpUpdate:
		f.log.Info("update", append([]any{"key", ch.Key, "change", f.describeUpdate(ch.Old, ch.New)}, resync...)...)
	case store.OpDelete:
		f.log.Info("delete", append([]any{"key", ch.Key, "row", f.describe(ch.Old)}, resync...)...)
	}
}

// summary prints the replica's size and what changed since the last one;
// unless always is set, only if something changed.
func (f *changeFeed[K, T]) summary(size int, always bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !always && f.adds+f.updates+f.deletes+f.initial+f.resets == 0 {
		return
	}
	f.log.Info("replica", "size", size, "adds", f.adds, "updates", f.updates, "deletes", f.deletes,
		"not_shown", f.hidden, "initial", f.initial)
	f.shown, f.hidden, f.initial, f.adds, f.updates, f.deletes, f.resets = 0, 0, 0, 0, 0, 0, 0
}

// writer makes random changes through the REST API, as another service or a
// person in the Directus app would. It only touches the rows it created.
type writer struct {
	api        *restClient
	collection string
	log        *slog.Logger

	ids                               []any // keys of the rows it created and did not delete
	n                                 int
	creates, updates, deletes, failed int
}

func (w *writer) run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(max(every, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// A request is never cut off half-way: once the writer returns, the
		// server has applied every write it sent, so the final check
		// compares against a settled server.
		if err := w.step(context.WithoutCancel(ctx)); err != nil {
			w.failed++
			w.log.Warn("write failed", "err", err)
		}
	}
}

// step makes one random change.
func (w *writer) step(ctx context.Context) error {
	switch p := rand.IntN(100); {
	case p < 30 || len(w.ids) < 5:
		return w.create(ctx, 1+rand.IntN(3))
	case p < 55:
		// A batch update: one event for all keys, which the body names as
		// JSON numbers.
		keys := w.pick(1 + rand.IntN(4))
		_, err := w.api.do(ctx, http.MethodPatch, w.path(""), map[string]any{
			"keys": keys, "data": map[string]any{"views": rand.IntN(1000)},
		})
		w.updates++
		return err
	case p < 75:
		// A status flip of one row, by URL: the event's key is a string.
		id := w.pick(1)[0]
		status := "draft"
		if rand.IntN(2) == 0 {
			status = "published"
		}
		_, err := w.api.do(ctx, http.MethodPatch, w.path(id), map[string]any{"status": status})
		w.updates++
		return err
	case p < 88:
		// DELETE /items/posts/7: the delete event carries "7", a string.
		id := w.pick(1)[0]
		w.forget(id)
		_, err := w.api.do(ctx, http.MethodDelete, w.path(id), nil)
		w.deletes++
		return err
	default:
		// DELETE /items/posts with [7, 8] in the body: numbers.
		keys := w.pick(1 + rand.IntN(3))
		for _, id := range keys {
			w.forget(id)
		}
		_, err := w.api.do(ctx, http.MethodDelete, w.path(""), keys)
		w.deletes++
		return err
	}
}

// create creates n rows in one request (one create event per row).
func (w *writer) create(ctx context.Context, n int) error {
	items := make([]map[string]any, n)
	for i := range items {
		w.n++
		items[i] = map[string]any{"title": fmt.Sprintf("post %d", w.n), "status": "draft", "views": 0}
	}
	data, err := w.api.do(ctx, http.MethodPost, w.path(""), items)
	w.creates++
	if err != nil {
		return err
	}
	var created []map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep the keys as the server wrote them
	if err := dec.Decode(&created); err != nil {
		return err
	}
	for _, row := range created {
		w.ids = append(w.ids, row["id"])
	}
	return nil
}

// pick returns up to n distinct keys of live rows.
func (w *writer) pick(n int) []any {
	perm := rand.Perm(len(w.ids))
	out := make([]any, 0, n)
	for _, i := range perm[:min(n, len(perm))] {
		out = append(out, w.ids[i])
	}
	return out
}

func (w *writer) forget(id any) {
	for i, v := range w.ids {
		if v == id {
			w.ids = append(w.ids[:i], w.ids[i+1:]...)
			return
		}
	}
}

func (w *writer) path(id any) string {
	p := "/items/" + url.PathEscape(w.collection)
	if id != nil && id != "" {
		p += "/" + url.PathEscape(fmt.Sprint(id))
	}
	return p
}

// restClient is just enough of the Directus REST API: requests with the
// static token, responses unwrapped from {"data": ...}.
type restClient struct {
	base, token string
	http        *http.Client
}

func (c *restClient) do(ctx context.Context, method, path string, body any) (json.RawMessage, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return env.Data, nil
}
