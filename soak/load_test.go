package soak_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// The load tests run the server in a child process (this test binary,
// started with childServerEnv set), so that the memory and goroutines they
// report are the client's alone. They talk to it over its REST API.

const childServerEnv = "SOAK_CHILD_SERVER"

// serveChild runs a directustest server until stdin is closed.
func serveChild() {
	srv := directustest.NewServer(nil)
	fmt.Println(srv.URL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

// child is a directustest server in a child process.
type child struct {
	url string
	pid int
}

func startChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childServerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child server: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }() // ends when the child exits
	return &child{url: strings.TrimSpace(line), pid: cmd.Process.Pid}
}

// rest calls the child's REST API as the admin and decodes data into out.
func (c *child) rest(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+directustest.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(env.Data, out); err != nil {
			t.Fatal(err)
		}
	}
}

// figures are the client's resource use at one moment.
type figures struct {
	heapInUse, rssKiB uint64
	goroutines        int
}

func measure(pid int) figures {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return figures{heapInUse: ms.HeapInuse, rssKiB: rssKiB(pid), goroutines: runtime.NumGoroutine()}
}

// rssKiB reads VmRSS from /proc/<pid>/status (0 where there is no /proc).
func rssKiB(pid int) uint64 {
	path := "/proc/self/status"
	if pid > 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func (f figures) String() string {
	return fmt.Sprintf("heap in use %.1f MiB, RSS %.1f MiB, %d goroutines", float64(f.heapInUse)/(1<<20), float64(f.rssKiB)/1024, f.goroutines)
}

func loadManager(t *testing.T, url string, errs *atomic.Int64, samples *errSamples) *manager.Manager {
	t.Helper()
	m, err := manager.New(&conn.Config{URL: url, Auth: conn.Auth{Token: directustest.AdminToken},
		OnError: func(err error) {
			errs.Add(1)
			samples.add(err)
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

type errSamples struct {
	mu   sync.Mutex
	errs []string
}

func (s *errSamples) add(err error) {
	s.mu.Lock()
	if len(s.errs) < 5 {
		s.errs = append(s.errs, err.Error())
	}
	s.mu.Unlock()
}

// countdown is closed once n events were counted.
type countdown struct {
	n    atomic.Int64
	done chan struct{}
}

func newCountdown(n int) *countdown {
	c := &countdown{done: make(chan struct{})}
	c.n.Store(int64(n))
	return c
}

func (c *countdown) tick() {
	if c.n.Add(-1) == 0 {
		close(c.done)
	}
}

func (c *countdown) wait(t *testing.T, what string, d time.Duration) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		t.Fatalf("%s: %d still missing after %v", what, c.n.Load(), d)
	}
}

// TestLoad10kSubscriptions holds 10,000 live subscriptions with distinct
// queries (10,000 server subscriptions) on one connection, checks that
// events reach exactly their subscription, reconnects, and checks that
// each one was restored exactly once. -short uses 1,000.
func TestLoad10kSubscriptions(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	srv := startChild(t)
	var errs atomic.Int64
	var samples errSamples
	m := loadManager(t, srv.url, &errs, &samples)
	base := measure(0)

	inits := newCountdown(n)
	var resyncs *countdown
	var resyncMu sync.Mutex
	resyncsPerSub := make([]atomic.Int64, n)
	creates := make([]atomic.Int64, n)
	createSeen := make(chan int, n)
	subs := make([]*manager.Subscription, n)
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				h := handlers.HandlerFunc(func(ev handlers.Event) error {
					switch {
					case ev.Kind == handlers.KindInit && !ev.Resync:
						inits.tick()
					case ev.Kind == handlers.KindInit:
						resyncsPerSub[i].Add(1)
						resyncMu.Lock()
						r := resyncs
						resyncMu.Unlock()
						r.tick()
					case ev.Kind == handlers.KindCreate:
						creates[i].Add(1)
						createSeen <- i
					}
					return nil
				})
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				sub, err := m.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Persistent: true,
					Query: &protocol.Query{Filter: map[string]any{"views": map[string]any{"_eq": i}}, Limit: -1}}, h)
				cancel()
				if err != nil {
					t.Errorf("subscription %d: %v", i, err)
					return
				}
				subs[i] = sub
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		return
	}
	inits.wait(t, "first inits", 2*time.Minute)
	subscribed := time.Since(start)

	// A create reaches exactly the subscription whose filter it matches.
	r := rand.New(rand.NewPCG(1, 1))
	targets := map[int]bool{}
	for len(targets) < 20 {
		targets[r.IntN(n)] = true
	}
	var items []map[string]any
	for v := range targets {
		items = append(items, map[string]any{"title": "load", "views": v})
	}
	srv.rest(t, "POST", "/items/posts", items, nil)
	for range targets {
		select {
		case i := <-createSeen:
			if !targets[i] {
				t.Fatalf("subscription %d got a create it does not match", i)
			}
		case <-time.After(time.Minute):
			t.Fatal("creates not delivered")
		}
	}
	steady := measure(0)

	// Every subscription is restored exactly once on a new session.
	resyncMu.Lock()
	resyncs = newCountdown(n)
	resyncMu.Unlock()
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := m.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	resyncs.wait(t, "resync inits after the reconnect", 2*time.Minute)
	restored := time.Since(start)
	if _, err := m.Conn().Ping(ctx); err != nil {
		t.Fatal(err)
	}
	after := measure(0)
	for i := range n {
		if got := resyncsPerSub[i].Load(); got != 1 {
			t.Fatalf("subscription %d got %d resync inits, want 1", i, got)
		}
		if st := subs[i].State(); st != manager.StateActive {
			t.Fatalf("subscription %d is %v", i, st)
		}
	}
	if errs.Load() != 0 {
		t.Fatalf("%d errors reported, first: %q", errs.Load(), samples.errs)
	}
	t.Logf("%d subscriptions on one connection: subscribed in %v, restored after a reconnect in %v", n, subscribed.Round(time.Millisecond), restored.Round(time.Millisecond))
	t.Logf("client before subscribing: %v", base)
	t.Logf("client at steady state:    %v (%.2f KiB heap per subscription)", steady, float64(int64(steady.heapInUse)-int64(base.heapInUse))/1024/float64(n))
	t.Logf("client after reconnect:    %v", after)
	t.Logf("server process RSS %.1f MiB", float64(rssKiB(srv.pid))/1024)
}

// loadClient is one of the managers of TestLoad100Managers: a replica of
// every post, one of the published posts, and a raw subscription to tags.
type loadClient struct {
	m        *manager.Manager
	all, pub *store.Collection[int64, post]
	tags     *manager.Subscription
	tagInits atomic.Int64
}

// TestLoad100Managers runs 100 managers (100 connections, 300 server
// subscriptions) against one server through a burst of writes and a
// reconnect of all; every replica must equal the server each time.
// -short uses 20 managers.
func TestLoad100Managers(t *testing.T) {
	managers, burst := 100, 1000
	if testing.Short() {
		managers, burst = 20, 200
	}
	srv := startChild(t)
	var seedPosts []map[string]any
	for i := range 200 {
		seedPosts = append(seedPosts, map[string]any{"title": "seed-" + strconv.Itoa(i), "status": []string{"published", "draft"}[i%2], "views": i})
	}
	srv.rest(t, "POST", "/items/posts", seedPosts, nil)
	var seedTags []map[string]any
	for i := range 50 {
		seedTags = append(seedTags, map[string]any{"name": "tag-" + strconv.Itoa(i)})
	}
	srv.rest(t, "POST", "/items/tags", seedTags, nil)

	var errs atomic.Int64
	var samples errSamples
	base := measure(0)
	start := time.Now()
	clients := make([]*loadClient, managers)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &loadClient{m: loadManager(t, srv.url, &errs, &samples)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c.all = testutil.Must(store.New(store.Options[int64, post]{Key: postKey}))
			c.pub = testutil.Must(store.New(store.Options[int64, post]{Key: postKey}))
			t.Cleanup(func() { _ = c.all.Close(); _ = c.pub.Close() })
			if _, err := c.all.Subscribe(ctx, c.m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
				t.Error(err)
				return
			}
			if _, err := c.pub.Subscribe(ctx, c.m, manager.SubscribeOptions{Collection: "posts", Persistent: true,
				Query: &protocol.Query{Filter: eq("status", "published")}}); err != nil {
				t.Error(err)
				return
			}
			tags, err := c.m.Subscribe(ctx, manager.SubscribeOptions{Collection: "tags", Persistent: true},
				handlers.HandlerFunc(func(ev handlers.Event) error {
					if ev.Kind == handlers.KindInit {
						c.tagInits.Add(1)
					}
					return nil
				}))
			if err != nil {
				t.Error(err)
				return
			}
			c.tags = tags
			clients[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	connected := time.Since(start)

	// A burst of writes, then every replica must equal the server.
	writeBurst := func(round int) (time.Duration, int) {
		start := time.Now()
		events := 0
		var ids []any
		for len(ids) < burst/2 {
			var items []map[string]any
			for range min(100, burst/2-len(ids)) {
				items = append(items, map[string]any{"title": fmt.Sprintf("burst-%d", round), "status": "draft", "views": 1})
			}
			var created []post
			srv.rest(t, "POST", "/items/posts", items, &created)
			for _, p := range created {
				ids = append(ids, p.ID)
			}
			events += len(created)
		}
		for i := 0; i < len(ids); i += 50 {
			srv.rest(t, "PATCH", "/items/posts", map[string]any{"keys": ids[i:min(i+50, len(ids))], "data": map[string]any{"status": "published"}}, nil)
			events++
		}
		half := len(ids) / 2
		for i := 0; i < half; i += 50 {
			srv.rest(t, "DELETE", "/items/posts", ids[i:min(i+50, half)], nil)
			events++
		}
		for _, id := range ids[half:] {
			srv.rest(t, "PATCH", "/items/posts/"+strconv.FormatInt(id.(int64), 10), map[string]any{"views": 2}, nil)
			events++
		}
		srv.rest(t, "POST", "/items/tags", map[string]any{"name": fmt.Sprintf("marker-%d", round)}, nil)
		var rows []post
		srv.rest(t, "GET", "/items/posts?limit=-1", nil, &rows)
		all := map[int64]post{}
		pub := map[int64]post{}
		for _, p := range rows {
			all[p.ID] = p
			if p.Status == "published" {
				pub[p.ID] = p
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for i, c := range clients {
			for _, rep := range []struct {
				coll *store.Collection[int64, post]
				want map[int64]post
			}{{c.all, all}, {c.pub, pub}} {
				if err := rep.coll.WaitFor(ctx, func() bool { return equalMaps(rep.coll.Snapshot(), rep.want) }); err != nil {
					t.Fatalf("manager %d: %v", i, diffRows("replica", rep.want, rep.coll.Snapshot()))
				}
			}
		}
		return time.Since(start), events
	}
	first, events := writeBurst(1)
	steady := measure(0)

	// Every manager reconnects at once; each replica gets its resync init
	// and follows the next burst.
	start = time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := c.m.Reconnect(ctx); err != nil {
				t.Errorf("manager %d: %v", i, err)
				return
			}
			for _, coll := range []*store.Collection[int64, post]{c.all, c.pub} {
				if err := coll.WaitFor(ctx, func() bool { return coll.Stats().Resyncs >= 1 }); err != nil {
					t.Errorf("manager %d: no resync: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	restored := time.Since(start)
	second, _ := writeBurst(2)
	after := measure(0)
	for i, c := range clients {
		for _, info := range c.m.ActiveSubscriptions() {
			if info.State != manager.StateActive {
				t.Fatalf("manager %d: %s is %v", i, info.UID, info.State)
			}
		}
		// The raw subscription was restored exactly once: its first init
		// and one resync init.
		if err := c.tags.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := c.tagInits.Load(); n != 2 {
			t.Fatalf("manager %d: %d inits of the tags subscription, want 2", i, n)
		}
	}
	if errs.Load() != 0 {
		t.Fatalf("%d errors reported, first: %q", errs.Load(), samples.errs)
	}
	t.Logf("%d managers (%d connections, %d server subscriptions): connected and subscribed in %v; a burst of %d writes replicated by all in %v; all reconnected and resynced in %v; the next burst in %v",
		managers, managers, 3*managers, connected.Round(time.Millisecond), events, first.Round(time.Millisecond), restored.Round(time.Millisecond), second.Round(time.Millisecond))
	t.Logf("client before connecting: %v", base)
	t.Logf("client at steady state:   %v (%.1f KiB heap per manager with 2 replicas of ~%d rows)", steady, float64(int64(steady.heapInUse)-int64(base.heapInUse))/1024/float64(managers), 200+burst/4)
	t.Logf("client after reconnect:   %v", after)
	t.Logf("server process RSS %.1f MiB", float64(rssKiB(srv.pid))/1024)
}
