package conn_test

// Regression tests against hostile or merely unlucky servers: credentials
// that must not follow a redirect, retry paths that must back off, races
// and hangs, and user callbacks that misbehave. Each would have failed on
// the code before the fix it guards.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/hostile"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/protocol"
)

// elsewhere is another host that records every request it receives: a
// redirect target that must never see the client.
type elsewhere struct {
	srv *hostile.Server
	mu  sync.Mutex
	got []*http.Request
}

func newElsewhere(t *testing.T) *elsewhere {
	e := &elsewhere{}
	e.srv = hostile.New(t, func(w http.ResponseWriter, r *http.Request) bool {
		e.mu.Lock()
		e.got = append(e.got, r.Clone(context.Background()))
		e.mu.Unlock()
		return false
	}, func(ctx context.Context, c *hostile.Conn) { c.Serve(ctx) })
	return e
}

func (e *elsewhere) requests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

// redirector answers every upgrade with a redirect to target.
func redirector(t *testing.T, status int, target func(r *http.Request) string) *hostile.Server {
	return hostile.New(t, func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, target(r), status)
		return true
	}, func(ctx context.Context, c *hostile.Conn) { c.Serve(ctx) })
}

// TestRedirectsAreNotFollowed: the upgrade is redirected to another host;
// that host never sees the client (no auth frame, no header, no token), and
// Connect fails with a *RedirectError that carries no token.
func TestRedirectsAreNotFollowed(t *testing.T) {
	for _, mode := range []conn.AuthMode{conn.AuthHandshake, conn.AuthStrict} {
		for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
			t.Run(fmt.Sprintf("%s/%d", mode, status), func(t *testing.T) {
				other := newElsewhere(t)
				r := redirector(t, status, func(r *http.Request) string { return other.srv.URL() + r.URL.RequestURI() })
				const secret = "s3cret-token-never-elsewhere"
				err := connectErr(t, fast(conn.Config{URL: r.URL(), Auth: conn.Auth{Mode: mode, Token: secret},
					Header: http.Header{"X-Api-Key": {secret}}}))
				var re *conn.RedirectError
				if !errors.As(err, &re) || !errors.Is(err, conn.ErrRedirect) {
					t.Fatalf("Connect: %v, want a *RedirectError", err)
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("token in the error: %v", err)
				}
				if n := other.requests(); n != 0 {
					t.Fatalf("the redirect target received %d requests", n)
				}
			})
		}
	}
}

// TestFollowRedirectsStaysOnTheHost: with FollowRedirects, a redirect on the
// same host is followed (without Referer, which would carry the strict-mode
// token), one to another host or from https to http is not.
func TestFollowRedirectsStaysOnTheHost(t *testing.T) {
	t.Run("same host", func(t *testing.T) {
		var referer atomic.Value
		referer.Store("")
		srv := hostile.New(t, func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/websocket" {
				http.Redirect(w, r, "/moved/websocket?"+r.URL.RawQuery, http.StatusFound)
				return true
			}
			referer.Store(r.Header.Get("Referer"))
			return false
		}, func(ctx context.Context, c *hostile.Conn) { c.Serve(ctx) })
		c := connect(t, fast(conn.Config{URL: srv.URL(), FollowRedirects: true, Auth: conn.Auth{Mode: conn.AuthStrict, Token: "tok"}}))
		if _, err := c.Ping(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if ref := referer.Load().(string); ref != "" {
			t.Fatalf("Referer %q sent on the redirect", ref)
		}
	})
	t.Run("another host", func(t *testing.T) {
		other := newElsewhere(t)
		r := redirector(t, http.StatusFound, func(r *http.Request) string { return other.srv.URL() + r.URL.RequestURI() })
		err := connectErr(t, fast(conn.Config{URL: r.URL(), FollowRedirects: true, Auth: conn.Auth{Token: "tok"}}))
		if !errors.Is(err, conn.ErrRedirect) || other.requests() != 0 {
			t.Fatalf("Connect: %v; the other host got %d requests", err, other.requests())
		}
	})
	t.Run("https to http", func(t *testing.T) {
		// Same host and port, but the redirect leaves TLS.
		var tlsSrv *httptest.Server
		tlsSrv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://"+tlsSrv.Listener.Addr().String()+r.URL.RequestURI(), http.StatusFound)
		}))
		defer tlsSrv.Close()
		err := connectErr(t, fast(conn.Config{URL: tlsSrv.URL, HTTPClient: tlsSrv.Client(), FollowRedirects: true, Auth: conn.Auth{Token: "tok"}}))
		var re *conn.RedirectError
		if !errors.As(err, &re) || !strings.Contains(re.Reason, "https") {
			t.Fatalf("Connect: %v, want a RedirectError for leaving https", err)
		}
	})
}

// TestMessageNeverShowsItsRefreshToken: an auth reply's refresh token does
// not appear when a Message is printed by value or pointer, logged, or
// marshalled to JSON.
func TestMessageNeverShowsItsRefreshToken(t *testing.T) {
	m, err := protocol.DecodeMessage([]byte(`{"type":"auth","status":"ok","uid":"a","refresh_token":"s3cret-refresh"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	bv, _ := json.Marshal(*m)
	for _, s := range []string{fmt.Sprintf("%v", *m), fmt.Sprintf("%+v", *m), fmt.Sprintf("%#v", *m), fmt.Sprintf("%+v", m),
		fmt.Sprintf("%v", []protocol.Message{*m}), string(b), string(bv), m.LogValue().String(), fmt.Sprint(struct{ M protocol.Message }{*m})} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("refresh token shown: %s", s)
		}
	}
	if m.RefreshToken != "s3cret-refresh" {
		t.Fatal("the field itself must keep the token")
	}
}

// TestRetryAfterIsHonoured: a server answering 503 with Retry-After: 1 is
// not asked again within that second, whatever the backoff says.
func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	var attempts atomic.Int64
	srv := hostile.New(t, func(w http.ResponseWriter, r *http.Request) bool {
		attempts.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}, nil)
	c, err := conn.New(fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	err = c.Connect(ctx)
	var ue *conn.UpgradeError
	if !errors.As(err, &ue) || ue.StatusCode != 503 || ue.RetryAfter != time.Second {
		t.Fatalf("Connect: %v, want the 503 with its Retry-After", err)
	}
	// 10 ms backoff would give ~200 attempts; Retry-After allows 3.
	if n := attempts.Load(); n > 3 {
		t.Fatalf("%d attempts in 2.5 s against Retry-After: 1", n)
	}
}

// TestTokenExpiredRightAfterTheHandshake: a TOKEN_EXPIRED that follows the
// handshake's auth ok at once (a JWT within a second of its exp) is not
// taken for a second handshake reply: the client re-authenticates.
func TestTokenExpiredRightAfterTheHandshake(t *testing.T) {
	srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) {
		f, err := c.ReadType(ctx, "auth")
		if err != nil {
			return
		}
		// Both frames in one go, before the client can clean up.
		if c.Sendf(ctx, `{"type":"auth","status":"ok","uid":%s}`, f.UID) != nil ||
			c.Send(ctx, `{"type":"auth","status":"error","error":{"code":"TOKEN_EXPIRED","message":"Token expired."}}`) != nil {
			return
		}
		c.Serve(ctx)
	})
	reasons := make(chan conn.ConnectReason, 8)
	connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"},
		OnConnect: func(_ *conn.Session, r conn.ConnectReason) { reasons <- r }}))
	if err := srv.WaitCount(ctxT(t), "auth", 2); err != nil {
		t.Fatalf("no re-authentication after TOKEN_EXPIRED: %v", err)
	}
	for _, want := range []conn.ConnectReason{conn.ReasonConnected, conn.ReasonReauthenticated} {
		select {
		case r := <-reasons:
			if r != want {
				t.Fatalf("OnConnect %v, want %v", r, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no OnConnect %v", want)
		}
	}
}

// TestTokenExpiredAfterEveryAuthBacksOff: a server that expires the token
// right after every auth ok is answered by re-authentications on the
// backoff's schedule, not in a loop, and the client stays idle.
func TestTokenExpiredAfterEveryAuthBacksOff(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) {
		for {
			f, err := c.ReadType(ctx, "auth")
			if err != nil {
				return
			}
			if c.Sendf(ctx, `{"type":"auth","status":"ok","uid":%s}`, f.UID) != nil ||
				c.Send(ctx, `{"type":"auth","status":"error","error":{"code":"TOKEN_EXPIRED","message":"Token expired."}}`) != nil {
				return
			}
		}
	})
	cpu := testutil.CPUTime()
	// Backoff 100 ms doubling: within 2 s, at most 1+5 auth frames
	// (0.1+0.2+0.4+0.8 = 1.5 s, the fifth wait ends at 3.1 s).
	connect(t, &conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}, PingInterval: -1,
		Backoff: conn.Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: -1}})
	window := time.NewTimer(2 * time.Second)
	<-window.C
	if n := srv.Count("auth"); n > 6 || n < 3 {
		t.Fatalf("%d auth frames in 2 s, want the backoff's 3 to 6", n)
	}
	if used := testutil.CPUTime() - cpu; used > time.Second {
		t.Fatalf("the client used %v of CPU in 2 s", used)
	}
}

// TestCloseFromEveryCallback: Close called from inside OnConnect,
// OnSubscription, OnStateChange and OnError returns, and the Conn closes.
func TestCloseFromEveryCallback(t *testing.T) {
	for _, where := range []string{"OnConnect", "OnSubscription", "OnStateChange", "OnError"} {
		t.Run(where, func(t *testing.T) {
			srv := newServer(t, nil)
			closed := make(chan error, 1)
			var c *conn.Conn
			var once sync.Once
			closeNow := func() { once.Do(func() { closed <- c.Close() }) }
			cfg := fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}})
			switch where {
			case "OnConnect":
				cfg.OnConnect = func(*conn.Session, conn.ConnectReason) { closeNow() }
			case "OnSubscription":
				cfg.OnSubscription = func(*protocol.Message) { closeNow() }
			case "OnStateChange":
				cfg.OnStateChange = func(sc conn.StateChange) {
					if sc.To == conn.StateConnected {
						closeNow()
					}
				}
			case "OnError":
				cfg.OnError = func(error) { closeNow() }
			}
			var err error
			c, err = conn.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.Connect(ctxT(t))
			switch where {
			case "OnSubscription":
				_ = c.Send(ctxT(t), protocol.SubscribeMessage{Collection: "posts", UID: "s"})
			case "OnError":
				srv.Inject([]byte(`not json`))
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatalf("Close from %s did not return", where)
			}
			if st := c.State(); st != conn.StateClosed {
				t.Fatalf("state %v after Close", st)
			}
		})
	}
}

// TestCloseIsBoundedByBlockedCallbacks: a blocked OnError neither starves
// OnStateChange nor keeps Close from returning after CloseTimeout, with an
// error that names it.
func TestCloseIsBoundedByBlockedCallbacks(t *testing.T) {
	srv := newServer(t, nil)
	release := make(chan struct{})
	defer close(release)
	blocked := make(chan struct{}, 1)
	states := make(chan conn.StateChange, 16)
	cfg := fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, CloseTimeout: 300 * time.Millisecond,
		OnError: func(error) {
			select {
			case blocked <- struct{}{}:
			default:
			}
			<-release
		},
		OnStateChange: func(sc conn.StateChange) { states <- sc }})
	c, err := conn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	srv.Inject([]byte(`not json`))
	<-blocked
	srv.DropConnections()
	// OnStateChange hears the reconnect while OnError is stuck.
	for sc := range states {
		if sc.To == conn.StateReconnecting {
			break
		}
	}
	start := time.Now()
	err = c.Close()
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v with a blocked OnError", took)
	}
	if !errors.Is(err, conn.ErrCloseTimeout) || !strings.Contains(err.Error(), "OnError") {
		t.Fatalf("Close: %v, want ErrCloseTimeout naming OnError", err)
	}
}

// TestCloseOfADeadLinkIsPrompt: a server that stops reading (it never
// answers the close frame) does not hold Close for coder/websocket's 5 s
// close handshake, and Connect returns within its context when the server
// never answers the handshake auth.
func TestCloseOfADeadLinkIsPrompt(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	t.Run("Close", func(t *testing.T) {
		srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) {
			if c.AcceptAuth(ctx) != nil {
				return
			}
			<-ctx.Done() // never reads again
		})
		c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}}))
		start := time.Now()
		_ = c.Close()
		if took := time.Since(start); took > 2500*time.Millisecond {
			t.Fatalf("Close of a dead link took %v", took)
		}
	})
	t.Run("Connect", func(t *testing.T) {
		srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) { <-ctx.Done() })
		c, err := conn.New(fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}, AuthTimeout: time.Minute}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = c.Connect(ctx)
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Fatalf("Connect with a 500 ms context took %v", took)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Connect: %v", err)
		}
	})
}

// TestNoCredentialsAgainstAServerThatRequiresThem: public mode without
// credentials against a handshake-mode server fails Connect at once with
// ErrAuthRequired instead of reconnecting for ever.
func TestNoCredentialsAgainstAServerThatRequiresThem(t *testing.T) {
	srv := newServer(t, nil)
	start := time.Now()
	err := connectErr(t, fast(conn.Config{URL: srv.URL()}))
	if !errors.Is(err, conn.ErrAuthRequired) || !errors.Is(err, protocol.ErrAuthFailed) {
		t.Fatalf("Connect: %v, want ErrAuthRequired", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Connect took %v", took)
	}
}

// TestExpiredJWTWithoutTokenSourceEndsOnce: a JWT as the only credential
// ends the Conn, reported once, when it has expired: no reconnect can
// succeed with it.
func TestExpiredJWTWithoutTokenSourceEndsOnce(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	srv := newServer(t, nil)
	jwt, err := srv.IssueToken(directustest.AdminEmail, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var errorsSeen atomic.Int64
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: jwt},
		OnError: func(err error) {
			if errors.Is(err, conn.ErrCredentialsExpired) {
				errorsSeen.Add(1)
			}
		}}))
	states := c.WatchState(ctxT(t))
	sc := waitState(t, states, conn.StateClosed)
	if !errors.Is(sc.Err, conn.ErrCredentialsExpired) {
		t.Fatalf("closed by %v, want ErrCredentialsExpired", sc.Err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := errorsSeen.Load(); n != 1 {
		t.Fatalf("ErrCredentialsExpired reported %d times, want once", n)
	}
}

// TestRepeatedFailuresReportedOnce: a server that refuses every reconnect
// the same way is reported once to OnError, however many attempts there
// are.
func TestRepeatedFailuresReportedOnce(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	srv := newServer(t, nil)
	var reported atomic.Int64
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		OnError: func(err error) {
			if strings.Contains(err.Error(), "connect attempt") {
				reported.Add(1)
			}
		}}))
	states := c.WatchState(ctxT(t))
	srv.Stop()
	waitState(t, states, conn.StateReconnecting)
	// 10 ms doubling to 50 ms: about 20 attempts in a second.
	time.Sleep(time.Second) // the window over which attempts are counted
	srv.Start()
	waitState(t, states, conn.StateConnected)
	if n := reported.Load(); n != 1 {
		t.Fatalf("%d reports for one run of identical failures", n)
	}
}

// TestCallbackPanicsAreRecovered: a panic in OnConnect, OnStateChange,
// OnError, OnSubscription or TokenSource is reported as a
// *protocol.PanicError with its stack, and the Conn goes on.
func TestCallbackPanicsAreRecovered(t *testing.T) {
	srv := newServer(t, nil)
	panics := make(chan *protocol.PanicError, 16)
	var sourced atomic.Int64
	cfg := fast(conn.Config{URL: srv.URL(),
		Auth: conn.Auth{TokenSource: func(context.Context) (string, error) {
			if sourced.Add(1) == 1 {
				panic("token source")
			}
			return directustest.AdminToken, nil
		}},
		OnConnect:      func(*conn.Session, conn.ConnectReason) { panic("on connect") },
		OnStateChange:  func(conn.StateChange) { panic("on state change") },
		OnSubscription: func(*protocol.Message) { panic("on subscription") },
		OnError: func(err error) {
			var pe *protocol.PanicError
			if errors.As(err, &pe) {
				panics <- pe
				return
			}
			if strings.Contains(err.Error(), "protocol error") {
				panic("on error")
			}
		}})
	c := connect(t, cfg)
	if err := c.Send(ctxT(t), protocol.SubscribeMessage{Collection: "posts", UID: "p"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(seen) < 4 {
		select {
		case pe := <-panics:
			seen[pe.Callback] = true
			if len(pe.Stack) == 0 && pe.Callback != "TokenSource" {
				t.Errorf("%s: no stack", pe.Callback)
			}
		case <-timeout:
			t.Fatalf("panics reported: %v", seen)
		}
	}
	srv.Inject([]byte(`not json`)) // OnError panics: logged only
	if _, err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("the Conn did not go on: %v", err)
	}
}

// TestBackoffValidation: options that would not back off are refused.
func TestBackoffValidation(t *testing.T) {
	for _, b := range []conn.Backoff{{Factor: 0.5}, {Jitter: 2}, {Initial: -1}, {Initial: time.Minute, Max: time.Second}, {MaxAttempts: -1}} {
		_, err := conn.New(&conn.Config{URL: "http://x", Backoff: b})
		var ce *protocol.ConfigError
		if !errors.As(err, &ce) || !strings.HasPrefix(ce.Field, "Backoff.") {
			t.Errorf("%+v: %v, want a ConfigError on Backoff", b, err)
		}
	}
}

// TestRateLimitedRequests: a server whose limiter drops a request and says
// REQUESTS_EXCEEDED (with no uid, as Directus does): a write fails with that
// typed error instead of the request timeout, a ping is sent again and
// succeeds, and the writer waits the delay the server named.
func TestRateLimitedRequests(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) {
		if c.AcceptAuth(ctx) != nil {
			return
		}
		dropped := map[string]bool{}
		for {
			f, err := c.Read(ctx)
			if err != nil {
				return
			}
			// Every request is dropped the first time.
			if key := f.Type + string(f.UID); !dropped[key] && f.Type != "pong" {
				dropped[key] = true
				if c.Send(ctx, `{"type":"server","status":"error","error":{"code":"REQUESTS_EXCEEDED","message":"Too many messages, retry after 200ms."}}`) != nil {
					return
				}
				continue
			}
			switch f.Type {
			case "ping":
				_ = c.Sendf(ctx, `{"type":"pong","uid":%s}`, f.UID)
			case "items":
				_ = c.Sendf(ctx, `{"type":"items","data":{},"uid":%s}`, f.UID)
			}
		}
	})
	limited := make(chan time.Duration, 8)
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}, RequestTimeout: time.Minute,
		OnRateLimited: func(d time.Duration) { limited <- d }}))
	start := time.Now()
	_, err := c.Items(ctxT(t), protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionCreate, Data: map[string]any{"title": "x"}})
	if !errors.Is(err, protocol.ErrRequestsExceeded) {
		t.Fatalf("create: %v, want ErrRequestsExceeded", err)
	}
	var rl *conn.RateLimitedError
	if !errors.As(err, &rl) || rl.Resent != 0 {
		t.Fatalf("create: %v, want a RateLimitedError without resend", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("create failed after %v", took)
	}
	if d := <-limited; d != 200*time.Millisecond {
		t.Fatalf("OnRateLimited(%v), want 200ms", d)
	}
	if _, err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("ping after a drop: %v", err)
	}
	if n := srv.Count("ping"); n != 2 {
		t.Fatalf("%d pings on the wire, want the dropped one and its resend", n)
	}
}

// TestFloodDuringTheHookIsBounded: frames that arrive while a slow OnConnect
// hook runs are held (they must follow the hook), but only up to
// MaxHeldBytes: past it the session is dropped rather than buffer a flood
// for as long as the hook takes.
func TestFloodDuringTheHookIsBounded(t *testing.T) {
	const limit, size = 8 << 20, 16 << 10
	var sent atomic.Int64
	floodEnded := make(chan struct{})
	srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) {
		if c.AcceptAuth(ctx) != nil {
			return
		}
		defer close(floodEnded)
		data := strings.Repeat("f", size)
		for i := 0; ; i++ {
			if c.Sendf(ctx, `{"type":"subscription","event":"create","uid":"s","data":[{"id":%d,"t":%q}]}`, i, data) != nil {
				return // the client dropped the session
			}
			if sent.Add(size) > 256<<20 {
				return
			}
		}
	})
	release := make(chan struct{})
	var hooks atomic.Int64
	c, err := conn.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}, PingInterval: -1, MaxHeldBytes: limit,
		Backoff: conn.Backoff{Initial: time.Minute}, // one session only
		OnConnect: func(*conn.Session, conn.ConnectReason) {
			if hooks.Add(1) == 1 {
				<-release // a hook that takes its time while the server floods
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	states := c.WatchState(ctxT(t))
	go func() { _ = c.Connect(context.Background()) }()
	before := heapStats()
	// The session is dropped while the hook still runs: the server's writes fail.
	select {
	case <-floodEnded:
	case <-time.After(30 * time.Second):
		t.Fatalf("the flood went on: %d MiB written", sent.Load()>>20)
	}
	after := heapStats()
	if sent.Load() > 256<<20 {
		t.Fatalf("the client took %d MiB during the hook without dropping the session", sent.Load()>>20)
	}
	close(release)
	sc := waitState(t, states, conn.StateReconnecting)
	if !errors.Is(sc.Err, protocol.ErrProtocol) {
		t.Fatalf("session ended by %v, want the held-frames protocol error", sc.Err)
	}
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("server wrote %d MiB during the hook; heap in use %+.1f MiB", sent.Load()>>20, float64(grown)/(1<<20))
	if grown > 4*limit {
		t.Fatalf("heap grew by %d MiB for a hold limit of %d MiB", grown>>20, limit>>20)
	}
}

// TestCloseBoundedWhileTheHookBlocks: Close returns after CloseTimeout
// although the OnConnect hook never returns, says so with ErrCloseTimeout,
// and the Conn delivers nothing once the hook finally returns.
func TestCloseBoundedWhileTheHookBlocks(t *testing.T) {
	srv := hostile.New(t, nil, func(ctx context.Context, c *hostile.Conn) {
		if c.AcceptAuth(ctx) != nil {
			return
		}
		_ = c.Sendf(ctx, `{"type":"subscription","event":"create","uid":"s","data":[{"id":1}]}`)
		<-ctx.Done()
	})
	inHook, release := make(chan struct{}), make(chan struct{})
	var delivered atomic.Int64
	c, err := conn.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: "t"}, PingInterval: -1, CloseTimeout: 200 * time.Millisecond,
		OnConnect: func(*conn.Session, conn.ConnectReason) {
			close(inHook)
			<-release
		},
		OnSubscription: func(*protocol.Message) { delivered.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Connect(context.Background()) }()
	<-inHook
	start := time.Now()
	err = c.Close()
	took := time.Since(start)
	if !errors.Is(err, conn.ErrCloseTimeout) || took > 5*time.Second {
		t.Fatalf("Close returned %v after %v, want ErrCloseTimeout after about 200 ms", err, took)
	}
	if s := c.State(); s != conn.StateClosed {
		t.Fatalf("state %v after Close", s)
	}
	close(release)
	// The supervisor ends once the hook returns (goleak checks it) and
	// delivers nothing: the held frame stays held.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := delivered.Load(); n != 0 {
		t.Fatalf("%d frames delivered after Close", n)
	}
}
