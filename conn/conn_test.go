package conn_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/rest"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast shortens every timer so the suite runs in seconds.
func fast(cfg conn.Config) *conn.Config {
	if cfg.Backoff.Initial == 0 {
		cfg.Backoff = conn.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = -1
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	return &cfg
}

func newServer(t *testing.T, opts *directustest.Options) *directustest.Server {
	t.Helper()
	s := directustest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

func connect(t *testing.T, cfg *conn.Config) *conn.Conn {
	t.Helper()
	c, err := conn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return c
}

func connectErr(t *testing.T, cfg *conn.Config) error {
	t.Helper()
	c, err := conn.New(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Connect(ctx)
	if err == nil {
		t.Fatal("Connect succeeded, want an error")
	}
	if c.State() != conn.StateClosed {
		t.Errorf("state after failed Connect = %v, want closed", c.State())
	}
	return err
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitState waits until the Conn reaches want.
func waitState(t *testing.T, ch <-chan conn.StateChange, want conn.State) conn.StateChange {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case sc, ok := <-ch:
			if !ok {
				t.Fatalf("state channel closed before %v", want)
			}
			if sc.To == want {
				return sc
			}
		case <-timeout:
			t.Fatalf("state %v not reached", want)
		}
	}
}

// frames collects what OnSubscription receives.
type frames struct {
	mu   sync.Mutex
	msgs []*protocol.Message
	ch   chan *protocol.Message
}

func newFrames() *frames { return &frames{ch: make(chan *protocol.Message, 1024)} }

func (f *frames) on(m *protocol.Message) {
	f.mu.Lock()
	f.msgs = append(f.msgs, m)
	f.mu.Unlock()
	f.ch <- m
}

func (f *frames) next(t *testing.T) *protocol.Message {
	t.Helper()
	select {
	case m := <-f.ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no subscription frame")
		return nil
	}
}

// nextEvent skips frames until one with the given event arrives.
func (f *frames) nextEvent(t *testing.T, event string) *protocol.Message {
	t.Helper()
	for {
		if m := f.next(t); m.Event == event {
			return m
		}
	}
}

func subscribe(t *testing.T, c *conn.Conn, f *frames, uid string, q *protocol.Query) *protocol.Message {
	t.Helper()
	if err := c.Send(ctxT(t), protocol.SubscribeMessage{Collection: "posts", UID: protocol.UID(uid), Query: q}); err != nil {
		t.Fatal(err)
	}
	m := f.next(t)
	if m.Event != protocol.EventInit || string(m.UID) != uid {
		t.Fatalf("want init of %s, got %v", uid, m)
	}
	return m
}

// errorSink collects OnError reports.
type errorSink struct {
	mu   sync.Mutex
	errs []error
	ch   chan error
}

func newErrorSink() *errorSink { return &errorSink{ch: make(chan error, 1024)} }

func (e *errorSink) on(err error) {
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
	select {
	case e.ch <- err:
	default:
	}
}

func (e *errorSink) waitFor(t *testing.T, match func(error) bool) error {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-e.ch:
			if match(err) {
				return err
			}
		case <-timeout:
			t.Fatal("expected error not reported")
			return nil
		}
	}
}

func login(t *testing.T, s *directustest.Server, email, password string) (access, refresh string) {
	t.Helper()
	var out struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	c := rest.Client{Base: s.URL()}
	if err := c.Do(ctxT(t), http.MethodPost, "/auth/login", map[string]string{"email": email, "password": password}, &out); err != nil {
		t.Fatalf("login: %v", err)
	}
	return out.AccessToken, out.RefreshToken
}

func TestAuthFormsSucceed(t *testing.T) {
	srv := newServer(t, nil)
	jwt, err := srv.IssueToken(directustest.AdminEmail, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, refresh := login(t, srv, directustest.AdminEmail, directustest.AdminPassword)
	for name, auth := range map[string]conn.Auth{
		"static token":   {Token: directustest.AdminToken},
		"jwt":            {Token: jwt},
		"email/password": {Email: directustest.AdminEmail, Password: directustest.AdminPassword},
		"refresh token":  {RefreshToken: refresh},
		"token source": {TokenSource: func(context.Context) (string, error) {
			return directustest.ReaderToken, nil
		}},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFrames()
			c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: auth, OnSubscription: f.on}))
			if c.State() != conn.StateConnected {
				t.Fatalf("state %v", c.State())
			}
			// The identity works: posts is readable by both users.
			subscribe(t, c, f, "p", &protocol.Query{Fields: []string{"id"}})
		})
	}
}

func TestAuthFailuresAreTyped(t *testing.T) {
	srv := newServer(t, nil)
	_, refresh := login(t, srv, directustest.AdminEmail, directustest.AdminPassword)
	// Use the refresh token once, so that it is rotated away.
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{RefreshToken: refresh}}))
	_ = c.Close()

	for name, auth := range map[string]conn.Auth{
		"bad token":       {Token: "not-a-valid-token"},
		"wrong password":  {Email: directustest.AdminEmail, Password: "wrong"},
		"rotated refresh": {RefreshToken: refresh},
		"unknown email":   {Email: "nobody@example.com", Password: "x"},
	} {
		t.Run(name, func(t *testing.T) {
			err := connectErr(t, fast(conn.Config{URL: srv.URL(), Auth: auth}))
			var se *protocol.ServerError
			if !errors.Is(err, protocol.ErrAuthFailed) || !errors.As(err, &se) || se.Type != "auth" {
				t.Fatalf("err = %v, want an auth AUTH_FAILED *ServerError", err)
			}
		})
	}
	t.Run("token source error", func(t *testing.T) {
		// A failing token source may be transient: Connect retries until
		// its context ends and returns the last error with the deadline.
		boom := errors.New("vault unreachable")
		var calls atomic.Int64
		c, _ := conn.New(fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{
			TokenSource: func(context.Context) (string, error) { calls.Add(1); return "", boom },
		}}))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		err := c.Connect(ctx)
		if !errors.Is(err, boom) || !errors.Is(err, context.DeadlineExceeded) || calls.Load() < 2 {
			t.Fatalf("err = %v after %d calls", err, calls.Load())
		}
	})
}

func TestStrictMode(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthStrict})
	f := newFrames()
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Mode: conn.AuthStrict, Token: directustest.AdminToken}, OnSubscription: f.on}))
	subscribe(t, c, f, "s", nil)

	err := connectErr(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Mode: conn.AuthStrict, Token: "bad"}}))
	var ue *conn.UpgradeError
	if !errors.Is(err, conn.ErrUnauthorized) || !errors.As(err, &ue) || ue.StatusCode != 401 {
		t.Fatalf("bad token: err = %v, want 401", err)
	}
	if strings.Contains(err.Error(), "bad") && strings.Contains(err.Error(), "access_token") {
		t.Fatalf("token in error: %v", err)
	}
	// Handshake credentials against a strict server: the upgrade has no token.
	err = connectErr(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}))
	if !errors.Is(err, conn.ErrUnauthorized) {
		t.Fatalf("handshake against strict: err = %v, want 401", err)
	}
}

func TestPublicMode(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthPublic})
	f := newFrames()
	c := connect(t, fast(conn.Config{URL: srv.URL(), OnSubscription: f.on}))
	if _, err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// The Public role cannot read posts.
	if err := c.Send(ctxT(t), protocol.SubscribeMessage{Collection: "posts", UID: "q"}); err != nil {
		t.Fatal(err)
	}
	if m := f.next(t); !errors.Is(m.Err, protocol.ErrForbidden) || m.UID != "q" {
		t.Fatalf("public subscribe: %v", m)
	}
	// With a token the connection authenticates in-band.
	c2 := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Mode: conn.AuthPublic, Token: directustest.AdminToken}, OnSubscription: f.on}))
	subscribe(t, c2, f, "ok", nil)
	// A bad token in public mode fails Connect even though the server keeps
	// the socket open as Public.
	err := connectErr(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Mode: conn.AuthPublic, Token: "bad"}}))
	if !errors.Is(err, protocol.ErrAuthFailed) {
		t.Fatalf("err = %v", err)
	}
}

func TestUpgradeForbidden(t *testing.T) {
	srv := newServer(t, &directustest.Options{ConnLimit: 1})
	connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}))
	err := connectErr(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}))
	if !errors.Is(err, conn.ErrUpgradeForbidden) || errors.Is(err, conn.ErrUnauthorized) {
		t.Fatalf("connection limit: err = %v, want 403", err)
	}
	srv2 := newServer(t, nil)
	err = connectErr(t, fast(conn.Config{URL: srv2.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		Header: http.Header{"Origin": {"http://evil.example"}}}))
	if !errors.Is(err, conn.ErrUpgradeForbidden) {
		t.Fatalf("foreign origin: err = %v, want 403", err)
	}
}

func TestWrongPathTimesOut(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	srv := newServer(t, nil)
	c, err := conn.New(fast(conn.Config{URL: strings.TrimSuffix(srv.WebSocketURL(), "/websocket") + "/websocket/nope",
		Auth: conn.Auth{Token: directustest.AdminToken}, DialTimeout: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = c.Connect(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline (the upgrade is never answered)", err)
	}
	_ = c.Close()
}

func TestHeartbeatAnswered(t *testing.T) {
	var pings, pongs atomic.Int64
	pinged := make(chan struct{}, 100)
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: 50 * time.Millisecond, OnFrame: func(f directustest.Frame) {
		switch {
		case !f.Inbound && string(f.Data) == `{"type":"ping"}`:
			pings.Add(1)
			select {
			case pinged <- struct{}{}:
			default:
			}
		case f.Inbound && string(f.Data) == `{"type":"pong"}`:
			pongs.Add(1)
		}
	}})
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}))
	first := c.Session().ID()
	for i := 0; i < 6; i++ {
		<-pinged
	}
	if c.State() != conn.StateConnected || c.Session().ID() != first {
		t.Fatalf("connection replaced while answering pings: state %v", c.State())
	}
	if pongs.Load() < 5 {
		t.Fatalf("%d pings, %d pongs", pings.Load(), pongs.Load())
	}
}

func TestSilentServerIsLeft(t *testing.T) {
	srv := newServer(t, nil)
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		PingInterval: 30 * time.Millisecond, PingTimeout: 60 * time.Millisecond}))
	states := c.WatchState(ctxT(t))
	first := c.Session().ID()
	srv.Stall(true)
	sc := waitState(t, states, conn.StateReconnecting)
	if !errors.Is(sc.Err, conn.ErrHeartbeatTimeout) {
		t.Fatalf("cause = %v, want ErrHeartbeatTimeout", sc.Err)
	}
	srv.Stall(false)
	waitState(t, states, conn.StateConnected)
	if c.Session().ID() == first {
		t.Fatal("same session after reconnect")
	}
}

func TestReconnectAfterDropRestartAndRefusal(t *testing.T) {
	srv := newServer(t, nil)
	var reasons []conn.ConnectReason
	var mu sync.Mutex
	errs := newErrorSink()
	f := newFrames()
	var c *conn.Conn
	cfg := fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, OnError: errs.on, OnSubscription: f.on,
		OnConnect: func(s *conn.Session, r conn.ConnectReason) {
			mu.Lock()
			reasons = append(reasons, r)
			mu.Unlock()
			// Restore a subscription on the new session.
			_ = s.Send(s.Context(), protocol.SubscribeMessage{Collection: "posts", UID: "live"})
		}})
	c = connect(t, cfg)
	states := c.WatchState(ctxT(t))
	f.nextEvent(t, protocol.EventInit)

	srv.DropConnections()
	if sc := waitState(t, states, conn.StateReconnecting); sc.Err == nil {
		t.Fatal("no cause for the drop")
	}
	waitState(t, states, conn.StateConnected)
	f.nextEvent(t, protocol.EventInit)

	srv.Restart()
	waitState(t, states, conn.StateReconnecting)
	waitState(t, states, conn.StateConnected)
	f.nextEvent(t, protocol.EventInit)

	srv.RefuseConnections(200 * time.Millisecond)
	srv.DropConnections()
	waitState(t, states, conn.StateReconnecting)
	errs.waitFor(t, func(err error) bool { return strings.Contains(err.Error(), "connect attempt") })
	waitState(t, states, conn.StateConnected)
	f.nextEvent(t, protocol.EventInit)

	// The restored subscription delivers.
	if _, err := srv.Create("posts", map[string]any{"title": "after"}); err != nil {
		t.Fatal(err)
	}
	if m := f.nextEvent(t, protocol.EventCreate); m.UID != "live" {
		t.Fatalf("event on %q", m.UID)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []conn.ConnectReason{conn.ReasonConnected, conn.ReasonReconnected, conn.ReasonReconnected, conn.ReasonReconnected}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Fatalf("hook reasons %v, want %v", reasons, want)
	}
}

func TestReconnectNowAndMaxAttempts(t *testing.T) {
	srv := newServer(t, nil)
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		Backoff: conn.Backoff{Initial: time.Hour, Max: time.Hour, MaxAttempts: 3}}))
	first := c.Session().ID()
	if err := c.Reconnect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if c.Session().ID() <= first {
		t.Fatal("Reconnect kept the session")
	}
	// With the server gone, Reconnect cuts the hour-long backoff short;
	// after three failed attempts the Conn gives up.
	states := c.WatchState(ctxT(t))
	srv.Stop()
	waitState(t, states, conn.StateReconnecting)
	for c.State() != conn.StateClosed {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_ = c.Reconnect(ctx)
		cancel()
	}
	if err := c.Send(ctxT(t), protocol.PingMessage{}); !errors.Is(err, protocol.ErrClosed) {
		t.Fatalf("Send after giving up: %v", err)
	}
}

func TestTokenExpiredReauthKeepsConnectionAndSubscriptions(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthTimeout: 2 * time.Second})
	f := newFrames()
	errs := newErrorSink()
	hooks := make(chan conn.ConnectReason, 10)
	// OnRefreshToken runs on the notification goroutine, after the
	// hook; collect the tokens on a channel and wait for them.
	rotated := make(chan string, 10)
	c := connect(t, fast(conn.Config{URL: srv.URL(),
		Auth:           conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword},
		OnSubscription: f.on, OnError: errs.on,
		OnConnect:      func(s *conn.Session, r conn.ConnectReason) { hooks <- r },
		OnRefreshToken: func(tok string) { rotated <- tok },
	}))
	<-hooks
	subscribe(t, c, f, "kept", nil)
	first := c.Session().ID()

	srv.ExpireTokens()
	errs.waitFor(t, func(err error) bool { return errors.Is(err, protocol.ErrTokenExpired) })
	if r := <-hooks; r != conn.ReasonReauthenticated {
		t.Fatalf("hook reason %v", r)
	}
	if c.Session().ID() != first || c.State() != conn.StateConnected {
		t.Fatal("the connection was replaced")
	}
	// The subscription made before expiry still delivers.
	if _, err := srv.Create("posts", map[string]any{"title": "after re-auth"}); err != nil {
		t.Fatal(err)
	}
	if m := f.nextEvent(t, protocol.EventCreate); m.UID != "kept" {
		t.Fatalf("event on %q", m.UID)
	}
	var tokens [2]string
	for i := range tokens {
		select {
		case tokens[i] = <-rotated:
		case <-time.After(5 * time.Second):
			t.Fatalf("refresh tokens not rotated: %d seen", i)
		}
	}
	if tokens[0] == tokens[1] {
		t.Fatal("the re-authentication handed out the same refresh token")
	}
}

func TestProactiveRefreshBeforeJWTExpiry(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	var issued atomic.Int64
	errs := newErrorSink()
	var auths atomic.Int64
	authSeen := make(chan struct{}, 10)
	srv := newServer(t, &directustest.Options{OnFrame: func(f directustest.Frame) {
		if f.Inbound && bytes.Contains(f.Data, []byte(`"type":"auth"`)) {
			auths.Add(1)
			select {
			case authSeen <- struct{}{}:
			default:
			}
		}
	}})
	c := connect(t, fast(conn.Config{URL: srv.URL(), OnError: errs.on, Auth: conn.Auth{
		TokenSource: func(context.Context) (string, error) {
			issued.Add(1)
			return srv.IssueToken(directustest.AdminEmail, 2*time.Second)
		},
	}}))
	first := c.Session().ID()
	// Each 2-second token is replaced about a second before its exp; keep
	// watching until the first one has certainly expired.
	start := time.Now()
	for time.Since(start) < 2500*time.Millisecond {
		<-authSeen
	}
	if c.Session().ID() != first {
		t.Fatal("session replaced instead of refreshed")
	}
	errs.mu.Lock()
	defer errs.mu.Unlock()
	for _, err := range errs.errs {
		if errors.Is(err, protocol.ErrTokenExpired) {
			t.Fatal("TOKEN_EXPIRED reached the client despite the refresh")
		}
	}
	if issued.Load() < 2 {
		t.Fatalf("token source called %d times", issued.Load())
	}
}

func TestRepliesOutOfOrderAndNoReply(t *testing.T) {
	srv := newServer(t, nil)
	for i := 0; i < 20; i++ {
		if _, err := srv.Create("posts", map[string]any{"title": fmt.Sprint("p", i), "views": i}); err != nil {
			t.Fatal(err)
		}
	}
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}))
	srv.SetReorder(8)
	var wg sync.WaitGroup
	errc := make(chan error, 40)
	for i := 0; i < 20; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			rep, err := c.Items(ctxT(t), protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionRead,
				Query: &protocol.Query{Fields: []string{"views"}, Filter: map[string]any{"views": map[string]any{"_eq": i}}}})
			if err == nil && string(rep.Data) != fmt.Sprintf(`[{"views":%d}]`, i) {
				err = fmt.Errorf("reply for views=%d: %s", i, rep.Data)
			}
			errc <- err
		}()
		go func() {
			defer wg.Done()
			_, err := c.Ping(ctxT(t))
			errc <- err
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	srv.SetReorder(0)

	// A request that never gets a reply fails with ErrTimeout and leaves
	// the connection usable.
	srv.Stall(true)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := c.Items(ctx, protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionRead})
	cancel()
	if !errors.Is(err, conn.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	srv.Stall(false)
	if _, err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Errors of requests are typed.
	_, err = c.Items(ctxT(t), protocol.ItemsMessage{Collection: "directus_users", Action: protocol.ActionRead})
	if !errors.Is(err, protocol.ErrInvalidCollection) {
		t.Fatalf("system collection: %v", err)
	}
}

func TestBadFramesAreReportedAndSkipped(t *testing.T) {
	srv := newServer(t, nil)
	errs := newErrorSink()
	f := newFrames()
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		OnError: errs.on, OnSubscription: f.on, ReadLimit: 4096}))
	first := c.Session().ID()
	for _, frame := range []string{`this is not json`, `[1,2,3]`, `{"uid":"x"}`, `{"type":"subscription"}`, `{"type":"pong","uid":{}}`} {
		srv.Inject([]byte(frame))
		var pe *protocol.ProtocolError
		errs.waitFor(t, func(err error) bool { return errors.As(err, &pe) })
	}
	// Unknown types are ignored silently; server errors without uid are reported.
	srv.Inject([]byte(`{"type":"collab","event":{"x":1}}`))
	srv.Inject([]byte(`{"type":"server","status":"error","error":{"code":"REQUESTS_EXCEEDED","message":"Too many messages, retry after 10ms."}}`))
	got := errs.waitFor(t, func(err error) bool { return errors.Is(err, protocol.ErrRequestsExceeded) })
	var se *protocol.ServerError
	if !errors.As(got, &se) || se.Type != "server" || se.UID != "" {
		t.Fatalf("server error: %#v", got)
	}
	if c.Session().ID() != first {
		t.Fatal("bad frames replaced the session")
	}
	errs.mu.Lock()
	for _, err := range errs.errs {
		if strings.Contains(err.Error(), "collab") {
			t.Errorf("unknown type reported: %v", err)
		}
	}
	errs.mu.Unlock()

	// An oversize frame ends the session, which is replaced.
	states := c.WatchState(ctxT(t))
	srv.Inject([]byte(`{"type":"items","data":"` + strings.Repeat("x", 8192) + `"}`))
	sc := waitState(t, states, conn.StateReconnecting)
	if !errors.Is(sc.Err, conn.ErrFrameTooLarge) {
		t.Fatalf("cause = %v, want ErrFrameTooLarge", sc.Err)
	}
	waitState(t, states, conn.StateConnected)
}

func TestInitOf100000RowsInOneFrame(t *testing.T) {
	if testing.Short() {
		t.Skip("large init")
	}
	srv := newServer(t, nil)
	rows := make([]map[string]any, 100_000)
	for i := range rows {
		rows[i] = map[string]any{"title": fmt.Sprint("row ", i), "status": "published", "views": i}
	}
	if _, err := srv.Quiet().Create("posts", rows...); err != nil {
		t.Fatal(err)
	}
	f := newFrames()
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, OnSubscription: f.on}))
	m := subscribe(t, c, f, "all", &protocol.Query{Limit: -1})
	var items []json.RawMessage
	if err := json.Unmarshal(m.Data, &items); err != nil || len(items) != 100_000 {
		t.Fatalf("init: %d rows, %v (frame %d bytes)", len(items), err, len(m.Data))
	}
}

func TestHookRunsBeforeFramesOfItsSession(t *testing.T) {
	srv := newServer(t, nil)
	var hookDone atomic.Uint64 // id of the last session whose hook returned
	violations := make(chan string, 10)
	f := newFrames()
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		OnConnect: func(s *conn.Session, r conn.ConnectReason) {
			_ = s.Send(s.Context(), protocol.SubscribeMessage{Collection: "posts", UID: "h"})
			// Not synchronisation: a slow hook widens the window in which
			// the init could overtake it if frames were not held back.
			time.Sleep(20 * time.Millisecond)
			hookDone.Store(s.ID())
		},
		OnSubscription: func(m *protocol.Message) {
			if hookDone.Load() < m.Session {
				violations <- fmt.Sprintf("frame of session %d before its hook", m.Session)
			}
			f.on(m)
		}}))
	f.nextEvent(t, protocol.EventInit)
	for i := 0; i < 3; i++ {
		if err := c.Reconnect(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		f.nextEvent(t, protocol.EventInit)
	}
	select {
	case v := <-violations:
		t.Fatal(v)
	default:
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthStrict})
	var buf testutil.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	errs := newErrorSink()
	secret := "s3cret-" + strings.Repeat("z", 8)
	// Strict mode with a bad token: 401, logged and returned without it.
	err := connectErr(t, fast(conn.Config{URL: srv.URL(), Logger: logger, OnError: errs.on, Auth: conn.Auth{Mode: conn.AuthStrict, Token: secret}}))
	// Strict mode against a closed port: the dial error would carry the URL.
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	c, _ := conn.New(fast(conn.Config{URL: srv.URL(), Logger: logger, OnError: errs.on, Auth: conn.Auth{Mode: conn.AuthStrict, Token: secret}}))
	err2 := c.Connect(ctx)
	cancel()
	_ = c.Close()
	srv.Start()
	// Handshake with a bad password and a bad refresh token.
	srv2 := newServer(t, nil)
	err3 := connectErr(t, fast(conn.Config{URL: srv2.URL(), Logger: logger, OnError: errs.on, Auth: conn.Auth{Email: directustest.AdminEmail, Password: secret}}))
	err4 := connectErr(t, fast(conn.Config{URL: srv2.URL(), Logger: logger, OnError: errs.on, Auth: conn.Auth{RefreshToken: secret}}))
	for _, e := range []error{err, err2, err3, err4} {
		if e != nil && strings.Contains(e.Error(), secret) {
			t.Errorf("secret in error: %v", e)
		}
	}
	errs.mu.Lock()
	for _, e := range errs.errs {
		if strings.Contains(e.Error(), secret) {
			t.Errorf("secret in reported error: %v", e)
		}
	}
	errs.mu.Unlock()
	if strings.Contains(buf.String(), secret) {
		t.Errorf("secret in logs:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "connect attempt failed") {
		t.Errorf("the dial failures were not logged at all:\n%s", buf.String())
	}
}

func TestStateWatchAndClose(t *testing.T) {
	srv := newServer(t, nil)
	var seen []conn.State
	var mu sync.Mutex
	c, err := conn.New(fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		OnStateChange: func(sc conn.StateChange) {
			mu.Lock()
			seen = append(seen, sc.To)
			mu.Unlock()
		}}))
	if err != nil {
		t.Fatal(err)
	}
	states := c.WatchState(context.Background())
	if c.State() != conn.StateIdle {
		t.Fatalf("new conn state %v", c.State())
	}
	if err := c.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	srv.DropConnections()
	waitState(t, states, conn.StateReconnecting)
	waitState(t, states, conn.StateConnected)
	_ = c.Close()
	waitState(t, states, conn.StateClosed)
	if _, ok := <-states; ok {
		t.Fatal("state channel open after Close")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []conn.State{conn.StateConnecting, conn.StateConnected, conn.StateReconnecting, conn.StateConnected, conn.StateClosed}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("callback saw %v, want %v", seen, want)
	}
	if err := c.Send(ctxT(t), protocol.PingMessage{}); !errors.Is(err, protocol.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := c.Ping(ctxT(t)); !errors.Is(err, protocol.ErrClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}
	if err := c.Connect(ctxT(t)); !errors.Is(err, protocol.ErrClosed) {
		t.Fatalf("Connect after Close: %v", err)
	}
}

func TestConnectCanceled(t *testing.T) {
	srv := newServer(t, nil)
	srv.Stop()
	c, _ := conn.New(fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Connect(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	var de *conn.DialError
	if !errors.As(err, &de) {
		t.Fatalf("last attempt's error missing: %v", err)
	}
	if c.State() != conn.StateClosed {
		t.Fatalf("state %v", c.State())
	}
}

// A TOKEN_EXPIRED that arrives while the first OnConnect runs keeps the
// frames after it held until the re-authentication's OnConnect: the connect
// release delivers only what came before the expiry.
func TestTokenExpiredDuringConnectHook(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthTimeout: 5 * time.Second})
	expired := make(chan struct{}, 1)
	var mu sync.Mutex
	var order []string
	record := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	forbidden := make(chan struct{})
	var c *conn.Conn
	cfg := fast(conn.Config{URL: srv.URL(),
		Auth: conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword},
		OnError: func(err error) {
			if errors.Is(err, protocol.ErrTokenExpired) {
				expired <- struct{}{}
			}
		},
		OnConnect: func(s *conn.Session, r conn.ConnectReason) {
			record("hook " + r.String())
			if r != conn.ReasonConnected {
				return
			}
			_ = s.Send(s.Context(), protocol.SubscribeMessage{Collection: "posts", UID: "x"})
			// The pong comes after the init: the subscription exists (and
			// its init is held) before the token expires.
			if _, err := c.Ping(s.Context()); err != nil {
				t.Error(err)
			}
			srv.ExpireTokens()
			<-expired // the read loop has handled TOKEN_EXPIRED
			// The expired identity turns the event into a FORBIDDEN frame;
			// the pong that follows it proves the frame has been read.
			if _, err := srv.Create("posts", map[string]any{"title": "while expired"}); err != nil {
				t.Error(err)
			}
			if _, err := c.Ping(s.Context()); err != nil {
				t.Error(err)
			}
			record("hook done")
		},
		OnSubscription: func(m *protocol.Message) {
			if m.Err != nil {
				record("frame " + string(m.Err.Code))
				close(forbidden)
				return
			}
			record("frame " + m.Event)
		},
	})
	c, err := conn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	<-forbidden
	mu.Lock()
	defer mu.Unlock()
	want := "[hook connected hook done frame init hook reauthenticated frame FORBIDDEN]"
	if fmt.Sprint(order) != want {
		t.Fatalf("order %v, want %s", order, want)
	}
}
