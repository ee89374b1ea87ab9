package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testApp is the example running in the background, with its hooks turned
// into channels.
type testApp struct {
	base    string
	srv     *directustest.Server
	started chan string // uids of streams whose subscription is live
	ended   chan string // uids of streams whose subscription has ended
	out     *testutil.Buffer
	client  *http.Client
}

// startApp runs the example on a free port, without its writer, until the
// test ends; the test fails if run returns an error.
func startApp(t *testing.T) *testApp {
	t.Helper()
	a := &testApp{started: make(chan string, 16), ended: make(chan string, 16), out: &testutil.Buffer{}}
	ready := make(chan struct{})
	cfg := config{Addr: "127.0.0.1:0"}
	cfg.listening = func(base string, srv *directustest.Server) {
		a.base, a.srv = base, srv
		close(ready)
	}
	cfg.streamStart = func(uid string) { a.started <- uid }
	cfg.streamEnd = func(uid string) { a.ended <- uid }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, a.out) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("run: %v\n%s", err, a.out.String())
	}
	a.client = &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		a.client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if t.Failed() {
			t.Logf("output of the example:\n%s", a.out.String())
		}
	})
	return a
}

// waitLimit bounds every wait for a signal. It is generous because a
// loaded machine is slow; a passing test never waits that long.
const waitLimit = 60 * time.Second

// waitUID waits for uid (any uid when empty) on ch.
func waitUID(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case uid := <-ch:
		return uid
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %v", what, waitLimit)
		return ""
	}
}

// activeUIDs reads /debug/subscriptions.
func (a *testApp) activeUIDs(t *testing.T) []string {
	t.Helper()
	resp, err := a.client.Get(a.base + "/debug/subscriptions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var infos []subscriptionInfo
	if err := json.NewDecoder(resp.Body).Decode(&infos); err != nil {
		t.Fatal(err)
	}
	uids := []string{}
	for _, in := range infos {
		if in.State != "active" || in.Collection != "posts" || in.Persistent {
			t.Errorf("unexpected subscription %+v", in)
		}
		uids = append(uids, in.UID)
	}
	return uids
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ name, data string }

// readEvents parses an SSE stream onto a channel, closed at the end.
func readEvents(r io.Reader) <-chan sseEvent {
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return ch
}

func nextEvent(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(waitLimit):
		t.Fatalf("no event within %v", waitLimit)
		return sseEvent{}
	}
}

// A stream subscribes with its request's context, streams a write made on
// the server, and its subscription disappears when the client disconnects.
func TestEventStream(t *testing.T) {
	a := startApp(t)

	reqCtx, disconnect := context.WithCancel(t.Context())
	defer disconnect()
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, a.base+"/events?collection=posts", nil)
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := readEvents(resp.Body)
	uid := waitUID(t, a.started, "stream subscription")

	hello := nextEvent(t, events)
	if hello.name != "hello" || hello.data != `{"uid":"`+uid+`"}` {
		t.Fatalf("first event %+v, want hello with uid %s", hello, uid)
	}
	if ev := nextEvent(t, events); ev.name != "change" || ev.data != `{"kind":"init","collection":"posts","rows":0}` {
		t.Fatalf("second event %+v, want the init", ev)
	}
	if uids := a.activeUIDs(t); len(uids) != 1 || uids[0] != uid {
		t.Fatalf("active subscriptions %v, want [%s]", uids, uid)
	}

	if _, err := a.srv.Create("posts", map[string]any{"title": "streamed", "status": "published", "views": 0}); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, events)
	if want := `{"kind":"create","collection":"posts","data":[{"id":1,"title":"streamed","status":"published","views":0}]}`; ev.name != "change" || ev.data != want {
		t.Fatalf("event %+v, want %s", ev, want)
	}
	if err := a.srv.Delete("posts", "1"); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); ev.data != `{"kind":"delete","collection":"posts","data":["1"]}` {
		t.Fatalf("event %+v, want the delete", ev)
	}

	// The client goes away: the request's context ends, and with it the
	// subscription, on the server too.
	disconnect()
	if got := waitUID(t, a.ended, "end of the stream's subscription"); got != uid {
		t.Fatalf("ended %s, want %s", got, uid)
	}
	if uids := a.activeUIDs(t); len(uids) != 0 {
		t.Fatalf("active subscriptions after the disconnect: %v", uids)
	}
	if n := len(a.srv.Subscriptions()); n != 0 {
		// The unsubscribe frame is on its way; the server sees it soon, and
		// the manager's view is what the example shows.
		t.Logf("server subscriptions right after the disconnect: %d", n)
	}
	if !strings.Contains(a.out.String(), `msg="subscription ended" uid=`+uid+` cause="context canceled"`) {
		t.Errorf("the end is not logged:\n%s", a.out.String())
	}
}

// Two streams are two subscriptions; each ends with its own request.
func TestStreamsEndIndependently(t *testing.T) {
	a := startApp(t)
	open := func() (string, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/events", nil)
		resp, err := a.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return waitUID(t, a.started, "stream subscription"), cancel
	}
	uid1, close1 := open()
	uid2, close2 := open()
	defer close2()
	if uids := a.activeUIDs(t); len(uids) != 2 {
		t.Fatalf("active %v, want %s and %s", uids, uid1, uid2)
	}
	close1()
	if got := waitUID(t, a.ended, "end"); got != uid1 {
		t.Fatalf("ended %s, want %s", got, uid1)
	}
	if uids := a.activeUIDs(t); len(uids) != 1 || uids[0] != uid2 {
		t.Fatalf("active %v, want [%s]", uids, uid2)
	}
}

func TestPageAndErrors(t *testing.T) {
	a := startApp(t)
	get := func(path string) (int, string) {
		resp, err := a.client.Get(a.base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/"); code != http.StatusOK || !strings.Contains(body, "new EventSource(") {
		t.Fatalf("GET / = %d %.80q", code, body)
	}
	// A collection the server refuses fails before the stream starts.
	if code, body := get("/events?collection=nope"); code != http.StatusForbidden || !strings.Contains(body, "FORBIDDEN") {
		t.Fatalf("GET /events?collection=nope = %d %q", code, body)
	}
	if uids := a.activeUIDs(t); len(uids) != 0 {
		t.Fatalf("a refused subscription is listed: %v", uids)
	}
}

// The program stops by itself after -duration, ending open streams.
func TestDuration(t *testing.T) {
	var out testutil.Buffer
	started := make(chan string, 1)
	var base string
	cfg := config{Addr: "127.0.0.1:0", Duration: time.Second, WriteEvery: 10 * time.Millisecond}
	ready := make(chan struct{})
	cfg.listening = func(b string, _ *directustest.Server) { base = b; close(ready) }
	cfg.streamStart = func(uid string) { started <- uid }
	done := make(chan error, 1)
	go func() { done <- run(t.Context(), cfg, &out) }()
	<-ready
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	// The writer's changes arrive until the server stops and ends the stream.
	var creates int
	for ev := range readEvents(resp.Body) {
		if strings.Contains(ev.data, `"kind":"create"`) {
			creates++
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if creates == 0 {
		t.Fatalf("the writer's creates were not streamed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), `msg="subscription ended" uid=sse-1`) {
		t.Fatalf("the stream's subscription did not end:\n%s", out.String())
	}
}
