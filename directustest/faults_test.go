package directustest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/directustest"
)

func TestDropConnections(t *testing.T) {
	srv := newServer(t, nil)
	a := authClient(t, srv)
	b := authClient(t, srv)
	srv.DropConnections()
	if n := srv.ConnCount(); n != 0 {
		t.Fatalf("ConnCount after DropConnections = %d", n)
	}
	for _, c := range []*tclient{a, b} {
		if code, ok := c.waitClosed(frameTimeout); !ok || code != websocket.StatusAbnormalClosure {
			t.Fatalf("closed=%v code=%v, want 1006", ok, code)
		}
	}
	// The listener is still up.
	authClient(t, srv)
}

// dialUntil dials until the upgrade succeeds (as a reconnecting client
// would), failing the test after the deadline.
func dialUntil(t *testing.T, url string, deadline time.Duration) *tclient {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		c, _, err := dial(t, url, nil)
		if err == nil {
			return c
		}
		if time.Now().After(end) {
			t.Fatalf("no connection within %v: %v", deadline, err)
		}
		time.Sleep(5 * time.Millisecond) // a client's retry delay
	}
}

func TestRefuseConnections(t *testing.T) {
	srv := newServer(t, nil)
	existing := authClient(t, srv)
	url := srv.WebSocketURL()
	srv.RefuseConnections(200 * time.Millisecond)
	if _, _, err := dial(t, url, nil); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing: %v, want ECONNREFUSED", err)
	}
	// Existing sockets are untouched.
	existing.send(`{"type":"ping","uid":"x"}`)
	existing.expect(`{"type":"pong","uid":"x"}`)
	c := dialUntil(t, url, frameTimeout)
	c.send(`{"type":"auth","access_token":"` + directustest.AdminToken + `"}`)
	c.expect(`{"type":"auth","status":"ok"}`)
	if srv.WebSocketURL() != url {
		t.Fatalf("URL changed: %s -> %s", url, srv.WebSocketURL())
	}
}

func TestStopStart(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	srv.Stop()
	if code, ok := c.waitClosed(frameTimeout); !ok || code != websocket.StatusAbnormalClosure {
		t.Fatalf("closed=%v code=%v, want 1006", ok, code)
	}
	if _, _, err := dial(t, srv.WebSocketURL(), nil); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while stopped: %v", err)
	}
	if _, err := srv.Client().Get(srv.URL() + "/server/ping"); err == nil {
		t.Fatal("REST answered while stopped")
	}
	srv.Start()
	authClient(t, srv)
}

func TestRestart(t *testing.T) {
	srv := newServer(t, nil)
	if _, err := srv.Create("posts", map[string]any{"title": "kept"}); err != nil {
		t.Fatal(err)
	}
	_, body := rest(t, srv, "POST", "/auth/login", "", `{"email":"admin@example.com","password":"d1r3ctus"}`)
	rt := jsonPath(t, body, "data", "refresh_token").(string)
	jwt := jsonPath(t, body, "data", "access_token").(string)

	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"posts","uid":"s"}`)
	c.next()
	if len(srv.Subscriptions()) != 1 {
		t.Fatal("subscription not registered")
	}
	srv.Restart()
	if code, ok := c.waitClosed(frameTimeout); !ok || code != websocket.StatusAbnormalClosure {
		t.Fatalf("closed=%v code=%v, want 1006", ok, code)
	}
	if n := len(srv.Subscriptions()); n != 0 {
		t.Fatalf("%d subscriptions survived the restart", n)
	}
	// Data, JWT secret and refresh tokens survive.
	c2 := mustDial(t, srv.WebSocketURL())
	c2.send(`{"type":"auth","access_token":"` + jwt + `"}`)
	c2.expect(`{"type":"auth","status":"ok"}`)
	c2.send(`{"type":"subscribe","collection":"posts","uid":"s","query":{"fields":["title"]}}`)
	c2.expect(`{"type":"subscription","event":"init","data":[{"title":"kept"}],"uid":"s"}`)
	if status, body := rest(t, srv, "POST", "/auth/refresh", "", `{"refresh_token":"`+rt+`"}`); status != 200 {
		t.Fatalf("refresh after restart: %d %s", status, body)
	}
}

func TestStall(t *testing.T) {
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: 50 * time.Millisecond})
	c := authClient(t, srv)
	c.keepPing.Store(true)
	c.expect(`{"type":"ping"}`)
	c.send(`{"type":"pong"}`)
	srv.Stall(true)
	c.send(`{"type":"ping","uid":"lost"}`)
	// Requests are still processed while stalled; their replies are lost.
	c.send(`{"type":"items","collection":"posts","action":"create","data":{"title":"while stalled"},"uid":"i"}`)
	other := make(chan struct{})
	go func() {
		// A write from elsewhere completes even though nothing is sent.
		_, _ = srv.Create("posts", map[string]any{"title": "x"})
		close(other)
	}()
	<-other
	// Several heartbeat periods pass: no ping, no close.
	time.Sleep(200 * time.Millisecond) // observing silence needs time to pass
	if f, ok := c.nextFrame(0); ok {
		t.Fatalf("frame while stalled: %s", f)
	}
	if srv.ConnCount() != 1 {
		t.Fatal("connection closed while stalled")
	}
	srv.Stall(false)
	// The heartbeat resumes; the lost pong never arrives.
	c.keepPing.Store(false)
	c.send(`{"type":"ping","uid":"back"}`)
	c.expect(`{"type":"pong","uid":"back"}`)
	if got := srv.Items("posts"); len(got) != 2 {
		t.Fatalf("items = %v", got)
	}
}

func TestInject(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthPublic})
	a := mustDial(t, srv.WebSocketURL())
	b := mustDial(t, srv.WebSocketURL())
	waitConns(t, srv, 2)
	srv.Inject([]byte("this is not json"))
	a.expect("this is not json")
	b.expect("this is not json")
}

func TestFrameDelay(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	const delay = 100 * time.Millisecond
	srv.SetFrameDelay(delay)
	start := time.Now()
	for i := range 5 {
		c.send(fmt.Sprintf(`{"type":"ping","uid":%d}`, i))
	}
	for i := range 5 {
		c.expect(fmt.Sprintf(`{"type":"pong","uid":%d}`, i))
	}
	if el := time.Since(start); el < delay {
		t.Fatalf("frames arrived after %v, want >= %v", el, delay)
	}
	srv.SetFrameDelay(0)
	c.expectNothing()
}

func TestReorder(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	srv.SetReorder(10)
	const n = 100
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"type":"ping","uid":%d}`, i)
		c.send(b.String())
		b.Reset()
	}
	seen := map[string]bool{}
	inOrder := true
	for i := range n {
		f := string(c.next())
		if seen[f] {
			t.Fatalf("duplicate %s", f)
		}
		seen[f] = true
		if f != fmt.Sprintf(`{"type":"pong","uid":%d}`, i) {
			inOrder = false
		}
	}
	for i := range n {
		if !seen[fmt.Sprintf(`{"type":"pong","uid":%d}`, i)] {
			t.Fatalf("pong %d missing", i)
		}
	}
	if inOrder {
		t.Fatal("frames were not reordered")
	}
	srv.SetReorder(0)
	c.expectNothing()
}

// Close cuts everything, including upgrades hanging on a wrong path, and
// leaves no goroutine behind.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := directustest.NewServer(&directustest.Options{HeartbeatPeriod: 10 * time.Millisecond, AuthTimeout: time.Minute})
	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"posts","uid":"s"}`)
	c.next()
	handshaking := mustDial(t, srv.WebSocketURL())
	hung := make(chan error, 1)
	go func() {
		_, _, err := websocket.Dial(context.Background(), srv.WebSocketURL()+"/elsewhere", nil)
		hung <- err
	}()
	jwt, _ := srv.IssueToken(directustest.AdminEmail, time.Hour)
	withJWT := mustDial(t, srv.WebSocketURL()+"?access_token="+jwt) // arms an expiry timer
	srv.RefuseConnections(time.Hour)                                // arms the reopen timer
	srv.SetFrameDelay(time.Hour)
	c.send(`{"type":"ping"}`) // a frame held by the delay
	srv.Close()
	srv.Close() // idempotent
	if err := <-hung; err == nil {
		t.Fatal("the hanging upgrade succeeded")
	}
	for _, cl := range []*tclient{c, handshaking, withJWT} {
		if _, ok := cl.waitClosed(frameTimeout); !ok {
			t.Fatal("client still connected after Close")
		}
	}
	http.DefaultClient.CloseIdleConnections()
}
