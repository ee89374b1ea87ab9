package ops_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/opstest"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/ops"
)

func probe(t *testing.T, h http.Handler) (int, ops.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body ops.Health
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("probe body %q: %v", rec.Body.String(), err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	return rec.Code, body
}

func waitState(t *testing.T, ch <-chan conn.StateChange, want conn.State) {
	t.Helper()
	for {
		select {
		case sc, ok := <-ch:
			if !ok {
				t.Fatalf("state channel closed before %v", want)
			}
			if sc.To == want {
				return
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("state %v not reached", want)
		}
	}
}

// Readiness across a restart of the server: 200, 503 naming the
// connection while the server is down, 200 again once it is back; liveness
// stays 200 throughout: a Directus that is down is not a stuck library.
func TestProbesAcrossRestart(t *testing.T) {
	e := opstest.Start(t, &ops.Options{StuckAfter: time.Millisecond})
	ready, live := e.Src.ReadyHandler(), e.Src.LiveHandler()
	if code, h := probe(t, ready); code != http.StatusOK || !h.OK || len(h.Problems) != 0 {
		t.Fatalf("ready while connected: %d %+v", code, h)
	}
	states := e.M.WatchState(opstest.Ctx(t))
	before := time.Now()
	e.Srv.Stop()
	waitState(t, states, conn.StateReconnecting)
	code, h := probe(t, ready)
	if code != http.StatusServiceUnavailable || h.OK || len(h.Problems) != 1 {
		t.Fatalf("ready while the server is down: %d %+v", code, h)
	}
	if p := h.Problems[0]; p.What != "connection" || p.Reason != "reconnecting" || p.Since.Before(before) {
		t.Fatalf("problem %+v", p)
	}
	// Down for a while: failed attempts and backoffs are progress.
	for i := 0; i < 3; i++ {
		n := e.M.Conn().Stats().ConnectFailures
		for e.M.Conn().Stats().ConnectFailures == n {
			time.Sleep(2 * time.Millisecond) // polling a counter: no signal for a failed attempt
		}
		if code, h := probe(t, live); code != http.StatusOK {
			t.Fatalf("live while the server is down: %d %+v", code, h)
		}
	}
	e.Srv.Start()
	waitState(t, states, conn.StateConnected)
	if code, h := probe(t, ready); code != http.StatusOK || !h.OK {
		t.Fatalf("ready after the restart: %d %+v", code, h)
	}
}

// A replica that is not synced, or failing, makes readiness fail with its
// name.
func TestReadyWaitsForReplicas(t *testing.T) {
	e := opstest.Start(t, nil)
	unsynced := opstest.NewPosts(t)
	remove, err := e.Src.AddReplica("late", unsynced)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Src.AddReplica("late", unsynced); err == nil {
		t.Fatal("a name registered twice was accepted")
	}
	code, h := probe(t, e.Src.ReadyHandler())
	if code != http.StatusServiceUnavailable || len(h.Problems) != 1 || h.Problems[0].What != "replica late" || h.Problems[0].Reason != "not synced" {
		t.Fatalf("with an unsynced replica: %d %+v", code, h)
	}
	remove()
	if code, h := probe(t, e.Src.ReadyHandler()); code != http.StatusOK {
		t.Fatalf("after removing it: %d %+v", code, h)
	}

	// The reader loses its permission: the reconcile is refused, the
	// replica emptied and failing.
	e.Revoke(t)
	_ = e.Posts.Reconcile(opstest.Ctx(t))
	code, h = probe(t, e.Src.ReadyHandler())
	if code != http.StatusServiceUnavailable || len(h.Problems) != 1 || h.Problems[0].What != "replica posts" ||
		!strings.Contains(h.Problems[0].Reason, "refused") || h.Problems[0].Since.IsZero() {
		t.Fatalf("with a refused replica: %d %+v", code, h)
	}

	// A new session: the server refuses the replica's subscription.
	states := e.M.WatchState(opstest.Ctx(t))
	e.Srv.DropConnections()
	waitState(t, states, conn.StateConnected)
	for deadline := time.Now().Add(15 * time.Second); e.Posts.Subscription().State() != manager.StateFailed; {
		if time.Now().After(deadline) {
			t.Fatalf("the subscription is %v, not failed", e.Posts.Subscription().State())
		}
		select {
		case <-e.Posts.Subscription().Done():
			t.Fatal("the subscription ended")
		case <-time.After(5 * time.Millisecond): // polling a state: no signal for a refused restore
		}
	}
	code, h = probe(t, e.Src.ReadyHandler())
	if code != http.StatusServiceUnavailable || len(h.Problems) != 1 || !strings.Contains(h.Problems[0].Reason, "subscription refused") {
		t.Fatalf("with a refused subscription: %d %+v", code, h)
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// A handler that blocks while events wait for it fails liveness after
// StuckAfter, naming its subscription; once it runs again liveness passes.
func TestLiveFailsForABlockedHandler(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e := opstest.Start(t, &ops.Options{StuckAfter: time.Minute, Now: clock.Now})
	b := opstest.NewBlocker()
	defer b.Release()
	sub, err := e.M.Subscribe(opstest.Ctx(t), manager.SubscribeOptions{Collection: "posts", Persistent: true}, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Src.AddSubscription("blocked", sub); err != nil {
		t.Fatal(err)
	}
	e.Create(t, "first")
	<-b.Entered
	e.Create(t, "second") // waits in the queue
	if code, h := probe(t, e.Src.LiveHandler()); code != http.StatusOK {
		t.Fatalf("live at first: %d %+v", code, h)
	}
	// The heartbeat keeps the connection reading: a ping and its pong
	// stand for it between the steps of the clock.
	heartbeat := func() {
		if _, err := e.M.Conn().Ping(opstest.Ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(30 * time.Second)
	heartbeat()
	if code, h := probe(t, e.Src.LiveHandler()); code != http.StatusOK {
		t.Fatalf("live before StuckAfter: %d %+v", code, h)
	}
	clock.Advance(31 * time.Second)
	heartbeat()
	code, h := probe(t, e.Src.LiveHandler())
	if code != http.StatusServiceUnavailable || len(h.Problems) != 1 || h.Problems[0].What != "subscription blocked" {
		t.Fatalf("live with a blocked handler: %d %+v", code, h)
	}
	b.Release()
	if err := sub.Flush(opstest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if code, h := probe(t, e.Src.LiveHandler()); code != http.StatusOK {
		t.Fatalf("live once the handler runs: %d %+v", code, h)
	}
}

// The status page and its data never show the token or a query's values.
func TestStatusShowsNoSecret(t *testing.T) {
	e := opstest.Start(t, nil)
	e.Create(t, "shown")
	srv := httptest.NewServer(http.StripPrefix("/debug/directus", e.Src.StatusHandler(nil)))
	defer srv.Close()
	for _, path := range []string{"/debug/directus/", "/debug/directus/status.json"} {
		body := get(t, srv.URL+path)
		for _, secret := range []string{opstest.Secret, directustest.ReaderPassword, directustest.ReaderToken} {
			if strings.Contains(body, secret) {
				t.Errorf("%s shows a secret %q", path, secret)
			}
		}
	}
	// The page loads nothing from elsewhere: no CDN, no external script.
	page := get(t, srv.URL+"/debug/directus/")
	for _, external := range []string{"http://", "https://", " src=", "<link"} {
		if strings.Contains(page, external) {
			t.Errorf("the page refers to something external: %q", external)
		}
	}
	var snap pageSnap
	if err := json.Unmarshal([]byte(get(t, srv.URL+"/debug/directus/status.json")), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Subscriptions) != 1 || snap.Subscriptions[0].Name != "posts" || snap.Subscriptions[0].UID != "posts-replica" {
		t.Fatalf("subscriptions %+v", snap.Subscriptions)
	}
	q, _ := json.Marshal(snap.Subscriptions[0].Query)
	if want := `{"filter":{"_or":[{"title":{"_neq":"[redacted]"}},{"status":{"_in":["[redacted]","[redacted]","[redacted]"]}}]},"limit":-1}`; string(q) != want {
		t.Fatalf("query shown as %s, want %s", q, want)
	}
	if len(snap.Replicas) != 1 || snap.Replicas[0].Rows == 0 || !snap.Replicas[0].Synced || snap.Replicas[0].Stats.Reconciles != 1 {
		t.Fatalf("replicas %+v", snap.Replicas)
	}
}

// The event stream sends a snapshot at once and another when an event
// changed the counts.
func TestStatusEventsStream(t *testing.T) {
	e := opstest.Start(t, nil)
	srv := httptest.NewServer(e.Src.StatusHandler(&ops.StatusOptions{Interval: 10 * time.Millisecond}))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(opstest.Ctx(t), http.MethodGet, srv.URL+"/debug/directus/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	next := func() pageSnap {
		for lines.Scan() {
			if data, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
				var s pageSnap
				if err := json.Unmarshal([]byte(data), &s); err != nil {
					t.Fatal(err)
				}
				return s
			}
		}
		t.Fatalf("stream ended: %v", lines.Err())
		return pageSnap{}
	}
	first := next()
	if len(first.Subscriptions) != 1 {
		t.Fatalf("first snapshot %+v", first)
	}
	e.Create(t, "streamed")
	for s := next(); ; s = next() {
		if s.Subscriptions[0].Events > first.Subscriptions[0].Events && s.Events > first.Events {
			break
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// pageSnap is the part of a Snapshot's JSON the tests read, as the page's
// script does.
type pageSnap struct {
	Events        uint64 `json:"events"`
	Subscriptions []struct {
		Name   string `json:"name"`
		UID    string `json:"uid"`
		State  string `json:"state"`
		Events uint64 `json:"events"`
		Query  any    `json:"query"`
	} `json:"subscriptions"`
	Replicas []struct {
		Name   string `json:"name"`
		Rows   int    `json:"rows"`
		Synced bool   `json:"synced"`
		Stats  struct{ Reconciles uint64 }
	} `json:"replicas"`
	Conn struct{ State string } `json:"conn"`
}

// A connected Conn that reads nothing for StuckAfter (its read loop does
// not run: the server's heartbeat would bring frames) fails liveness; one
// frame read is progress again.
func TestLiveFailsForAConnThatReadsNothing(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e := opstest.Start(t, &ops.Options{StuckAfter: time.Minute, Now: clock.Now})
	if code, h := probe(t, e.Src.LiveHandler()); code != http.StatusOK {
		t.Fatalf("live at first: %d %+v", code, h)
	}
	clock.Advance(time.Minute)
	code, h := probe(t, e.Src.LiveHandler())
	if code != http.StatusServiceUnavailable || len(h.Problems) != 1 || h.Problems[0].What != "connection" ||
		!strings.Contains(h.Problems[0].Reason, "no frame read") {
		t.Fatalf("live without a frame for a minute: %d %+v", code, h)
	}
	if _, err := e.M.Conn().Ping(opstest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if code, h := probe(t, e.Src.LiveHandler()); code != http.StatusOK {
		t.Fatalf("live after a pong: %d %+v", code, h)
	}
}

// A Conn that gave up (here: after Backoff.MaxAttempts) fails liveness
// at once: it will never make progress again. A Conn closed by Close is
// not stuck.
func TestLiveFailsWhenTheConnGaveUp(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.ReaderToken},
		Backoff: conn.Backoff{Initial: time.Millisecond, Max: time.Millisecond, MaxAttempts: 2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Connect(opstest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	src := ops.NewSource(m, nil)
	states := m.WatchState(opstest.Ctx(t))
	srv.Stop()
	waitState(t, states, conn.StateClosed)
	code, h := probe(t, src.LiveHandler())
	if code != http.StatusServiceUnavailable || len(h.Problems) != 1 || !strings.Contains(h.Problems[0].Reason, "gave up") {
		t.Fatalf("live after giving up: %d %+v", code, h)
	}

	closed := opstest.Start(t, nil)
	if err := closed.M.Close(); err != nil {
		t.Fatal(err)
	}
	if code, h := probe(t, closed.Src.LiveHandler()); code != http.StatusOK {
		t.Fatalf("live after Close: %d %+v", code, h)
	}
}

// A named subscription that ended frees its name.
func TestEndedSubscriptionFreesItsName(t *testing.T) {
	e := opstest.Start(t, nil)
	sub, err := e.M.Subscribe(opstest.Ctx(t), manager.SubscribeOptions{Collection: "posts", Persistent: true}, opstest.NewBlocker())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Src.AddSubscription("mine", sub); err != nil {
		t.Fatal(err)
	}
	if n := named(e.Src.Snapshot(), "mine"); n != 1 {
		t.Fatalf("%d subscriptions named mine", n)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	<-sub.Done()
	if n := named(e.Src.Snapshot(), "mine"); n != 0 {
		t.Fatalf("%d subscriptions named mine after Unsubscribe", n)
	}
	again, err := e.M.Subscribe(opstest.Ctx(t), manager.SubscribeOptions{Collection: "posts", Persistent: true}, opstest.NewBlocker())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Src.AddSubscription("mine", again); err != nil {
		t.Fatalf("the name of an ended subscription is still taken: %v", err)
	}
}

func named(s ops.Snapshot, name string) int {
	n := 0
	for _, si := range s.Subscriptions {
		if si.Name == name {
			n++
		}
	}
	return n
}
