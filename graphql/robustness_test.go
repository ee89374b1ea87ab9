package graphql_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/graphql"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// errorSink collects OnError calls.
type errorSink struct {
	mu   sync.Mutex
	errs []error
	sig  chan struct{}
}

func newSink() *errorSink { return &errorSink{sig: make(chan struct{}, 1)} }

func (e *errorSink) add(err error) {
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
	select {
	case e.sig <- struct{}{}:
	default:
	}
}

func (e *errorSink) waitFor(t *testing.T, match func(error) bool) error {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		e.mu.Lock()
		for _, err := range e.errs {
			if match(err) {
				e.mu.Unlock()
				return err
			}
		}
		e.mu.Unlock()
		select {
		case <-e.sig:
		case <-deadline:
			t.Fatal("no matching OnError within 10 s")
		}
	}
}

func managerWith(t *testing.T, cfg graphql.Config) *graphql.Manager {
	t.Helper()
	if cfg.Backoff == (conn.Backoff{}) {
		cfg.Backoff = fastBackoff
	}
	m, err := graphql.New(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// A handler that panics is recovered and reported; the subscription goes on.
func TestHandlerPanicSurvived(t *testing.T) {
	s := newServer(t, nil)
	sink := newSink()
	m := managerWith(t, graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, OnError: sink.add})
	connect(t, m)
	rec := newRecorder()
	var calls atomic.Int32
	h := handlers.HandlerFunc(func(ev handlers.Event) error {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return rec.Handle(ev)
	})
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("title")}, h); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("posts", map[string]any{"title": "first"}, map[string]any{"title": "second"}); err != nil {
		t.Fatal(err)
	}
	var pe *protocol.PanicError
	sink.waitFor(t, func(err error) bool { return errors.As(err, &pe) })
	if pe.Value != "boom" || len(pe.Stack) == 0 {
		t.Fatalf("PanicError %+v", pe)
	}
	if got := eventStrings(rec.wait(t, 1)); got[0] != `create [{"title":"second"}]` {
		t.Fatalf("after the panic: %q", got)
	}
}

// A replica whose handler panics re-reads its snapshot and ends equal to
// the server.
func TestReplicaPanicResyncs(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	c := newReplica(t)
	var panicked atomic.Bool
	h := handlers.HandlerFunc(func(ev handlers.Event) error {
		if ev.Kind == handlers.KindCreate && panicked.CompareAndSwap(false, true) {
			panic("first create")
		}
		return c.Handle(ev)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Replicate(ctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title", "status", "views"}, Persistent: true}, h); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("posts", map[string]any{"title": "lost to the panic"}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, func() bool { return panicked.Load() && equalToServer(c, s.Items("posts")) }); err != nil {
		t.Fatalf("replica not resynced after the panic: %d rows, server %d", c.Len(), len(s.Items("posts")))
	}
}

// A handler that falls a whole queue behind: a plain subscription gets an
// ErrOverflow event in place of what was discarded.
func TestOverflow(t *testing.T) {
	s := newServer(t, nil)
	sink := newSink()
	m := managerWith(t, graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, OnError: sink.add, QueueSize: 2})
	connect(t, m)
	release := make(chan struct{})
	rec := newRecorder()
	var first atomic.Bool
	h := handlers.HandlerFunc(func(ev handlers.Event) error {
		if first.CompareAndSwap(false, true) {
			<-release
		}
		return rec.Handle(ev)
	})
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("id")}, h); err != nil {
		t.Fatal(err)
	}
	batch := make([]map[string]any, 10)
	for i := range batch {
		batch[i] = map[string]any{"title": "x"}
	}
	if _, err := s.Create("posts", batch...); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, func(err error) bool { return errors.Is(err, graphql.ErrOverflow) })
	close(release)
	var sawOverflow bool
	deadline := time.After(10 * time.Second)
	for !sawOverflow {
		select {
		case <-rec.signal:
		case <-deadline:
			t.Fatal("no ErrOverflow event")
		}
		rec.mu.Lock()
		for _, ev := range rec.events {
			sawOverflow = sawOverflow || (ev.Kind == handlers.KindError && errors.Is(ev.Err, graphql.ErrOverflow))
		}
		rec.mu.Unlock()
	}
}

// Writes that emit no event are corrected by the reconcile.
func TestReconcileCorrectsSilentWrites(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	c := newReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Replicate(ctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title", "status", "views"},
		Persistent: true, ReconcileInterval: 50 * time.Millisecond}, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Quiet().Create("posts", map[string]any{"title": "silent"}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, func() bool { return c.Len() == 1 && equalToServer(c, s.Items("posts")) }); err != nil {
		t.Fatalf("silent write not reconciled: %d rows", c.Len())
	}
}

// Public mode with a credential sends the token in the upgrade URL.
func TestPublicModeTokenInURL(t *testing.T) {
	s := newServer(t, &directustest.Options{GraphQLAuthMode: directustest.AuthPublic})
	m := newManager(t, s, conn.Auth{Mode: conn.AuthPublic, Token: directustest.ReaderToken})
	connect(t, m)
	rec := newRecorder()
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("title")}, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("posts", map[string]any{"title": "public"}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 1)
}

// A server that acknowledges and then stops answering: the session is
// replaced after PingInterval+PingTimeout, and a frame that is not JSON
// does not end anything.
func TestSilentServerReplaced(t *testing.T) {
	var sessions atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{graphql.Subprotocol}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		if _, _, err := ws.Read(ctx); err != nil { // connection_init
			return
		}
		sessions.Add(1)
		_ = ws.Write(ctx, websocket.MessageText, []byte(`{"type":"connection_ack"}`))
		_ = ws.Write(ctx, websocket.MessageText, []byte(`not json {`))
		// The first ping (the client's check that its subscribes were
		// read) is answered; the heartbeat's are not.
		if _, _, err := ws.Read(ctx); err != nil {
			return
		}
		_ = ws.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`))
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	m := managerWith(t, graphql.Config{URL: srv.URL, Auth: conn.Auth{Token: "t"},
		PingInterval: 50 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	states := m.WatchState(t.Context())
	connect(t, m)
	waitState(t, states, conn.StateReconnecting)
	waitState(t, states, conn.StateConnected)
	if n := sessions.Load(); n < 2 {
		t.Fatalf("%d sessions, want a replacement", n)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
}

// No frame leaks a credential, and an upgrade that is not graphql-ws is
// reported as such.
func TestWrongEndpoint(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil) // no subprotocol
		if err != nil {
			return
		}
		defer ws.CloseNow()
		_, _, _ = ws.Read(r.Context())
	}))
	defer srv.Close()
	sink := newSink()
	m := managerWith(t, graphql.Config{URL: srv.URL, Auth: conn.Auth{Token: "secret-token"}, OnError: sink.add})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := m.Connect(ctx); err == nil {
		t.Fatal("connected to an endpoint without graphql-transport-ws")
	}
	err := sink.waitFor(t, func(error) bool { return true })
	if !strings.Contains(err.Error(), graphql.Subprotocol) || strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("error %q", err)
	}
	_ = m.Close()
	srv.CloseClientConnections()
}

// Close may be called from a handler and from a callback.
func TestCloseFromCallbacks(t *testing.T) {
	s := newServer(t, nil)
	closed := make(chan error, 1)
	var m *graphql.Manager
	m = managerWith(t, graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.AdminToken}})
	connect(t, m)
	h := handlers.HandlerFunc(func(handlers.Event) error {
		closed <- m.Close()
		return nil
	})
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("id")}, h); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close from a handler did not return")
	}
	if m.State() != conn.StateClosed {
		t.Fatalf("state %v", m.State())
	}

	states := make(chan error, 1)
	var m2 *graphql.Manager
	m2 = managerWith(t, graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		OnStateChange: func(sc conn.StateChange) {
			if sc.To == conn.StateConnected {
				states <- m2.Close()
			}
		}})
	connect(t, m2)
	select {
	case err := <-states:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close from OnStateChange did not return")
	}
}

// A refresh token is exchanged over REST (/auth/refresh) for the access
// token of each session; it rotates, and the newest one is used.
func TestRefreshTokenAuth(t *testing.T) {
	s := newServer(t, &directustest.Options{AccessTokenTTL: time.Second})
	resp, err := s.Client().Post(s.URL()+"/auth/login", "application/json",
		strings.NewReader(`{"email":"`+directustest.AdminEmail+`","password":"`+directustest.AdminPassword+`","mode":"json"}`))
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		Data struct {
			RefreshToken string `json:"refresh_token"`
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil || login.Data.RefreshToken == "" {
		t.Fatalf("login: %v %+v", err, login)
	}
	m := newManager(t, s, conn.Auth{RefreshToken: login.Data.RefreshToken})
	connect(t, m)
	states := m.WatchState(t.Context())
	// The access token lives 1 s (less than the renewal margin): every
	// session refreshes, with the rotated refresh token.
	for range 3 {
		s.DropConnections()
		waitState(t, states, conn.StateConnected)
	}
	rec := newRecorder()
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("title")}, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("posts", map[string]any{"title": "refreshed"}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 1)
}

// Reconnect replaces the session and restores the subscriptions.
func TestReconnect(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	rec := newRecorder()
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("title"), Persistent: true}, rec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("posts", map[string]any{"title": "after Reconnect"}); err != nil {
		t.Fatal(err)
	}
	if got := eventStrings(rec.wait(t, 1)); got[0] != `create [{"title":"after Reconnect"}]` {
		t.Fatalf("got %q", got)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconnect(ctx); !errors.Is(err, protocol.ErrClosed) {
		t.Fatalf("Reconnect after Close: %v", err)
	}
}
