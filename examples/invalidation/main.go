// Command invalidation puts a read-through cache in front of the Directus
// REST API (GET /items/posts/{id}) and keeps it fresh with a subscription:
// handlers.Invalidate turns each create, update and delete event into the
// keys to drop, and an init (the first one, or after a reconnect) drops
// everything.
//
// It first walks through one post: a miss, a hit, a write, the event that
// invalidates the entry, and the miss that reads the new value. Then, for
// -duration, readers hammer the cache while a writer changes posts, and it
// checks that no read started after an invalidation arrived returns a
// value older than the write that caused it.
//
//	go run ./examples/invalidation
//	go run ./examples/invalidation -url http://127.0.0.1:8055 -token <static token>
//
// Against a real Directus it creates a few posts, changes them and deletes
// them at the end.
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
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Post is what the cache holds.
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

type config struct {
	URL      string        // a real Directus; empty starts the embedded server
	Token    string        // its static token
	Duration time.Duration // how long the concurrent phase runs
	Readers  int           // concurrent readers in that phase
}

func main() {
	var cfg config
	flag.StringVar(&cfg.URL, "url", "", "base URL of a real Directus, e.g. http://127.0.0.1:8055 (default: an embedded server)")
	flag.StringVar(&cfg.Token, "token", "", "static token of a Directus user (with -url)")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long readers and a writer run concurrently")
	flag.IntVar(&cfg.Readers, "readers", 4, "concurrent readers")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// An interrupt is a clean exit, even in the middle of the setup.
	if err := run(ctx, cfg, os.Stdout); err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("invalidation", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	log := slog.New(slog.NewTextHandler(stdout, nil))
	baseURL, token := cfg.URL, cfg.Token
	if baseURL == "" {
		srv := directustest.NewServer(nil)
		defer srv.Close()
		baseURL, token = srv.URL(), directustest.AdminToken
		log.Info("embedded Directus started", "url", baseURL)
	}
	httpClient := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 30 * time.Second}
	defer httpClient.CloseIdleConnections()
	api := &restClient{base: baseURL, token: token, http: httpClient}

	m, err := manager.New(&conn.Config{URL: baseURL, Auth: conn.Auth{Token: token}, Logger: log}, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}

	// The cache reads through to REST on a miss.
	posts := newCache(func(ctx context.Context, id handlers.Key) (Post, error) {
		var p Post
		err := api.do(ctx, http.MethodGet, "/items/posts/"+string(id)+"?fields=id,title,status,views", nil, &p)
		return p, err
	})

	// Some posts to read: one for the walkthrough, eight for the concurrent
	// phase. They are deleted at the end, also on a real Directus.
	var created []int64
	defer func() {
		if len(created) > 0 {
			cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = api.do(cleanup, http.MethodDelete, "/items/posts", created, nil)
		}
	}()
	for i := range 9 {
		title := fmt.Sprintf("post %d", i)
		if i == 0 {
			title = "first version"
		}
		var p Post
		err := api.do(ctx, http.MethodPost, "/items/posts", map[string]any{"title": title, "status": "draft", "views": 0}, &p)
		if err != nil {
			return err
		}
		created = append(created, p.ID)
	}
	forget := func(id int64) { created = slices.DeleteFunc(created, func(c int64) bool { return c == id }) }
	first, others := created[0], slices.Clone(created[1:])

	// The subscription that keeps the cache fresh. Only the ids are needed,
	// so the events carry nothing else. Invalidate reads the keys of every
	// event (the rows' "id", and the keys of deletes however they were
	// sent) and drops everything on an init. The subscription ends with ctx.
	before := posts.Generation(keyOf(first))
	_, err = m.Subscribe(ctx, manager.SubscribeOptions{
		Collection: "posts",
		Query:      &protocol.Query{Fields: []string{"id"}},
	}, handlers.Invalidate("id", posts.invalidate))
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// Subscribe returns when the init has arrived; its handler runs on the
	// subscription's own goroutine. Wait until the init's invalidation is
	// done, so that the first read below is not overtaken by it.
	if err := posts.WaitInvalidated(ctx, keyOf(first), before); err != nil {
		return err
	}

	if err := walkthrough(ctx, log, api, posts, first, forget); err != nil {
		return err
	}
	return hammer(ctx, log, cfg, api, posts, others)
}

// walkthrough shows one entry's life: miss, hit, write, invalidation, miss.
func walkthrough(ctx context.Context, log *slog.Logger, api *restClient, posts *cache, id int64, forget func(int64)) error {
	key := keyOf(id)
	read := func(step string) (Post, error) {
		p, hit, err := posts.Get(ctx, key)
		if err != nil {
			log.Info(step, "id", id, "result", "error", "err", err)
			return p, err
		}
		log.Info(step, "id", id, "result", hitOrMiss(hit), "title", p.Title)
		return p, nil
	}
	if _, err := read("first read"); err != nil {
		return err
	}
	if _, err := read("second read"); err != nil {
		return err
	}

	// Write through REST, as anyone could. The update event reaches the
	// subscription a moment later and drops the entry; until then a read
	// may still be served from the cache. Wait for the event.
	gen := posts.Generation(key)
	if err := api.do(ctx, http.MethodPatch, fmt.Sprintf("/items/posts/%d", id), map[string]any{"title": "second version"}, nil); err != nil {
		return err
	}
	log.Info("wrote", "id", id, "title", "second version")
	if err := posts.WaitInvalidated(ctx, key, gen); err != nil {
		return fmt.Errorf("no invalidation for post %d: %w", id, err)
	}
	log.Info("invalidated by the update event", "id", id)
	p, err := read("read after the event")
	if err != nil {
		return err
	}
	if p.Title != "second version" {
		return fmt.Errorf("stale read after the event: %q", p.Title)
	}
	if _, err := read("read again"); err != nil {
		return err
	}

	// A delete by URL sends its key as the string "5"; Invalidate
	// normalises it to the same Key as the number 5 of the rows.
	gen = posts.Generation(key)
	if err := api.do(ctx, http.MethodDelete, fmt.Sprintf("/items/posts/%d", id), nil, nil); err != nil {
		return err
	}
	forget(id)
	if err := posts.WaitInvalidated(ctx, key, gen); err != nil {
		return fmt.Errorf("no invalidation for post %d: %w", id, err)
	}
	log.Info("invalidated by the delete event", "id", id)
	// Directus answers a deleted item with 403 FORBIDDEN, not 404
	// (docs/PROTOCOL.md §6): that answer is the expected one here, and the
	// cache does not keep it.
	_, _, err = posts.Get(ctx, key)
	var se *statusError
	switch {
	case err == nil:
		return fmt.Errorf("post %d was read after its delete", id)
	case errors.As(err, &se) && se.Status == http.StatusForbidden:
		log.Info("read after the delete", "id", id, "result", "gone", "why", "Directus answers a deleted item with 403 FORBIDDEN, as expected; errors are not cached")
	default:
		return fmt.Errorf("read after the delete: %w", err)
	}
	return nil
}

// hammer runs readers and a writer concurrently and counts stale reads: a
// read that started after the invalidation of a write must see that write.
func hammer(ctx context.Context, log *slog.Logger, cfg config, api *restClient, posts *cache, ids []int64) error {
	if cfg.Readers <= 0 {
		cfg.Readers = 4
	}
	// minViews[i] is the views value of the last write to ids[i] whose
	// invalidation has arrived: no later read may return less.
	minViews := make([]atomic.Int64, len(ids))
	var reads, stale, writes atomic.Int64

	phase, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	log.Info("readers and a writer run", "duration", cfg.Duration, "readers", cfg.Readers, "posts", len(ids))
	start := posts.Stats()

	var wg sync.WaitGroup
	var writeErr error
	wg.Go(func() {
		views := make([]int64, len(ids))
		for phase.Err() == nil {
			i := rand.IntN(len(ids))
			views[i]++
			gen := posts.Generation(keyOf(ids[i]))
			err := api.do(phase, http.MethodPatch, fmt.Sprintf("/items/posts/%d", ids[i]), map[string]any{"views": views[i]}, nil)
			if err == nil {
				err = posts.WaitInvalidated(phase, keyOf(ids[i]), gen)
			}
			if err != nil {
				if phase.Err() == nil {
					writeErr = err
				}
				return
			}
			minViews[i].Store(views[i])
			writes.Add(1)
			time.Sleep(2 * time.Millisecond) // pace, not synchronisation
		}
	})
	for range cfg.Readers {
		wg.Go(func() {
			for phase.Err() == nil {
				i := rand.IntN(len(ids))
				floor := minViews[i].Load()
				p, hit, err := posts.Get(phase, keyOf(ids[i]))
				if err != nil {
					continue // the phase ended during a REST read
				}
				reads.Add(1)
				if p.Views < floor {
					stale.Add(1)
					log.Error("stale read", "id", ids[i], "views", p.Views, "want_at_least", floor, "hit", hit)
				}
				time.Sleep(200 * time.Microsecond) // pace, not synchronisation
			}
		})
	}
	wg.Wait()
	if writeErr != nil {
		return fmt.Errorf("writer: %w", writeErr)
	}

	st := posts.Stats()
	log.Info("cache", "reads", reads.Load(), "hits", st.Hits-start.Hits, "misses", st.Misses-start.Misses,
		"writes", writes.Load(), "invalidations", st.Invalidations-start.Invalidations, "stale_reads", stale.Load())
	if n := stale.Load(); n > 0 {
		return fmt.Errorf("%d stale reads", n)
	}
	log.Info("ok: no read after an invalidation saw an older value", "reads", reads.Load(), "stale_reads", 0)
	return nil
}

func keyOf(id int64) handlers.Key {
	k, _ := handlers.KeyOf(id)
	return k
}

func hitOrMiss(hit bool) string {
	if hit {
		return "hit"
	}
	return "miss"
}

// cache is a read-through cache of posts by key, invalidated by events.
//
// One race needs care: a miss reads the server, and the write that the next
// event reports may land just after that read. If the event is handled while
// the read is still in flight, storing the read's result would put a stale
// row back after its invalidation. Every invalidation therefore bumps the
// key's generation, and a read stores its result only if the generation did
// not move while it was in flight.
type cache struct {
	fetch func(context.Context, handlers.Key) (Post, error)

	mu      sync.Mutex
	entries map[handlers.Key]Post
	gens    map[handlers.Key]uint64 // bumped by each invalidation of the key (bounded by the collection's keys)
	epoch   uint64                  // bumped when everything is invalidated
	changed chan struct{}           // closed and replaced at every invalidation

	hits, misses, invalidations atomic.Uint64
}

// CacheStats are the cache's counters.
type CacheStats struct{ Hits, Misses, Invalidations uint64 }

func newCache(fetch func(context.Context, handlers.Key) (Post, error)) *cache {
	return &cache{
		fetch:   fetch,
		entries: make(map[handlers.Key]Post),
		gens:    make(map[handlers.Key]uint64),
		changed: make(chan struct{}),
	}
}

// Get returns the post from the cache, or reads it through and caches it.
// hit tells which.
func (c *cache) Get(ctx context.Context, k handlers.Key) (p Post, hit bool, err error) {
	c.mu.Lock()
	if p, ok := c.entries[k]; ok {
		c.mu.Unlock()
		c.hits.Add(1)
		return p, true, nil
	}
	gen, epoch := c.gens[k], c.epoch
	c.mu.Unlock()
	c.misses.Add(1)

	p, err = c.fetch(ctx, k)
	if err != nil {
		return p, false, err
	}
	c.mu.Lock()
	if c.gens[k] == gen && c.epoch == epoch {
		c.entries[k] = p
	}
	c.mu.Unlock()
	return p, false, nil
}

// invalidate is the callback of handlers.Invalidate.
func (c *cache) invalidate(inv handlers.Invalidation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if inv.All {
		clear(c.entries)
		c.epoch++
	}
	for _, k := range inv.Keys {
		delete(c.entries, k)
		c.gens[k]++
	}
	c.invalidations.Add(1)
	close(c.changed)
	c.changed = make(chan struct{})
}

// Generation returns a number that grows with every invalidation of k.
func (c *cache) Generation(k handlers.Key) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gens[k] + c.epoch
}

// WaitInvalidated waits until k has been invalidated after Generation
// returned since: once it returns, no read of k is served from before.
func (c *cache) WaitInvalidated(ctx context.Context, k handlers.Key, since uint64) error {
	for {
		c.mu.Lock()
		gen, changed := c.gens[k]+c.epoch, c.changed
		c.mu.Unlock()
		if gen > since {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns the counters.
func (c *cache) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Invalidations: c.invalidations.Load()}
}

// restClient is just enough of the Directus REST API: requests with the
// static token, responses unwrapped from {"data": ...}.
type restClient struct {
	base, token string
	http        *http.Client
}

// statusError is a REST answer other than 2xx.
type statusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Body)
}

// do sends body as JSON and decodes the response's data into out (if not nil).
func (c *restClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return &statusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(bytes.TrimSpace(b))}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return err
	}
	if len(env.Data) == 0 {
		return errors.New(method + " " + path + ": no data")
	}
	return json.Unmarshal(env.Data, out)
}
