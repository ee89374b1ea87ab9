package directustest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/directustest"
)

// An init of 100,000 rows (10,000 with -short) arrives in one frame.
func TestLargeInit(t *testing.T) {
	srv := newServer(t, nil)
	n := 100_000
	if testing.Short() {
		n = 10_000 // the same paths, a tenth of the rows
	}
	items := make([]map[string]any, n)
	for i := range items {
		items[i] = map[string]any{"title": fmt.Sprintf("post %d", i), "status": "published", "views": i}
	}
	if _, err := srv.Quiet().Create("posts", items...); err != nil {
		t.Fatal(err)
	}
	c := authClient(t, srv)
	start := time.Now()
	c.send(`{"type":"subscribe","collection":"posts","uid":"all","query":{"limit":-1}}`)
	f := c.next()
	var init struct {
		Event string            `json:"event"`
		Data  []json.RawMessage `json:"data"`
		UID   string            `json:"uid"`
	}
	if err := json.Unmarshal(f, &init); err != nil {
		t.Fatal(err)
	}
	if init.Event != "init" || len(init.Data) != n || init.UID != "all" {
		t.Fatalf("init with %d rows (%d bytes)", len(init.Data), len(f))
	}
	if want := fmt.Sprintf(`{"id":%d,"title":"post %d","status":"published","views":%d}`, n, n-1, n-1); string(init.Data[n-1]) != want {
		t.Fatalf("last row %s", init.Data[n-1])
	}
	t.Logf("%d-row init: %d bytes in %v", n, len(f), time.Since(start))
	// Without a limit the default limit (100) applies.
	c.send(`{"type":"subscribe","collection":"posts","uid":"default","query":{"fields":["id"]}}`)
	if err := json.Unmarshal(c.next(), &init); err != nil || len(init.Data) != 100 {
		t.Fatalf("default limit: %d rows, %v", len(init.Data), err)
	}
}

// 10,000 subscriptions on one connection (1,000 with -short), served in
// creation order.
func TestManySubscriptions(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	for i := range n {
		c.send(fmt.Sprintf(`{"type":"subscribe","collection":"posts","uid":"s%d","query":{"fields":["id"]}}`, i))
	}
	for i := range n {
		c.expect(fmt.Sprintf(`{"type":"subscription","event":"init","data":[],"uid":"s%d"}`, i))
	}
	start := time.Now()
	if _, err := srv.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		c.expect(fmt.Sprintf(`{"type":"subscription","event":"create","data":[{"id":1}],"uid":"s%d"}`, i))
	}
	t.Logf("one event to %d subscriptions: %v", n, time.Since(start))
	// Unsubscribing half of them one by one stays cheap.
	for i := 0; i < n; i += 2 {
		c.send(fmt.Sprintf(`{"type":"unsubscribe","uid":"s%d"}`, i))
	}
	for i := 0; i < n; i += 2 {
		c.expect(fmt.Sprintf(`{"type":"subscription","event":"unsubscribe","uid":"s%d"}`, i))
	}
	if got := len(srv.Subscriptions()); got != n/2 {
		t.Fatalf("%d subscriptions left", got)
	}
}

// 100 connections and concurrent writers: every connection sees the
// events in the same (commit) order.
func TestCommitOrder(t *testing.T) {
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: -1})
	const conns, writers, perWriter = 100, 4, 75
	clients := make([]*tclient, conns)
	for i := range clients {
		clients[i] = authClient(t, srv)
		clients[i].send(`{"type":"subscribe","collection":"posts","uid":"s","query":{"fields":["id","title"]}}`)
		clients[i].expect(`{"type":"subscription","event":"init","data":[],"uid":"s"}`)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if _, err := srv.Create("posts", map[string]any{"title": fmt.Sprintf("w%d-%d", w, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	const total = writers * perWriter
	var first []string
	for ci, c := range clients {
		var seq []string
		for range total {
			seq = append(seq, string(c.next()))
		}
		if ci == 0 {
			first = seq
			for i, f := range seq {
				if !strings.Contains(f, fmt.Sprintf(`"id":%d,`, i+1)) {
					t.Fatalf("event %d is %s: not in commit (id) order", i, f)
				}
			}
			continue
		}
		for i := range seq {
			if seq[i] != first[i] {
				t.Fatalf("connection %d event %d: %s, connection 0 had %s", ci, i, seq[i], first[i])
			}
		}
	}
}

// A client that stops reading blocks neither the writers nor the others.
func TestSlowClient(t *testing.T) {
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: -1})
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	slow, _, err := websocket.Dial(ctx, srv.WebSocketURL()+"?access_token="+directustest.AdminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	if err := slow.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","collection":"posts"}`)); err != nil {
		t.Fatal(err)
	}
	fast := authClient(t, srv)
	fast.send(`{"type":"subscribe","collection":"posts","uid":"f","query":{"fields":["id"]}}`)
	fast.next()
	big := strings.Repeat("x", 64<<10)
	const n = 300 // about 20 MB for the slow client, far beyond socket buffers
	start := time.Now()
	for range n {
		if _, err := srv.Create("posts", map[string]any{"title": big}); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("writes took %v with a stuck subscriber", el)
	}
	for i := range n {
		fast.expect(fmt.Sprintf(`{"type":"subscription","event":"create","data":[{"id":%d}],"uid":"f"}`, i+1))
	}
}

// A TLS server works for REST and WebSocket with its own client.
func TestTLS(t *testing.T) {
	srv := directustest.NewTLSServer(nil)
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL(), "https://127.0.0.1:") || !strings.HasPrefix(srv.WebSocketURL(), "wss://127.0.0.1:") {
		t.Fatalf("URLs %s %s", srv.URL(), srv.WebSocketURL())
	}
	if srv.Certificate() == nil {
		t.Fatal("no certificate")
	}
	if status, body := rest(t, srv, "GET", "/items/posts", directustest.AdminToken, ""); status != 200 || string(body) != `{"data":[]}` {
		t.Fatalf("REST over TLS: %d %s", status, body)
	}
	c, _, err := dial(t, srv.WebSocketURL(), &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	c.send(`{"type":"auth","access_token":"` + directustest.AdminToken + `"}`)
	c.expect(`{"type":"auth","status":"ok"}`)
	srv.DropConnections()
	if code, ok := c.waitClosed(frameTimeout); !ok || code != websocket.StatusAbnormalClosure {
		t.Fatalf("closed=%v code=%v, want 1006", ok, code)
	}
	if newServerNoTLS := directustest.NewServer(nil); newServerNoTLS.Certificate() != nil {
		t.Fatal("plain server has a certificate")
	} else {
		newServerNoTLS.Close()
	}
}
