package conn_test

// Security tests: secrets never leak into logs or errors on any auth path,
// wss:// with a private CA, and bounds that keep a hostile or flooding
// server from exhausting the client's memory or goroutines.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/protocol"
)

// leakWatch gathers every place a secret could surface: a debug-level log,
// OnError, the errors of state changes, and errors returned to the caller.
type leakWatch struct {
	logs    testutil.Buffer
	logger  *slog.Logger
	mu      sync.Mutex
	secrets []string
	errs    []error

	reasons chan conn.ConnectReason // OnConnect reasons
	failed  chan error              // failed connect attempts and re-authentications
	tokens  chan string             // OnRefreshToken
}

func newLeakWatch(secrets ...string) *leakWatch {
	w := &leakWatch{secrets: secrets, reasons: make(chan conn.ConnectReason, 64),
		failed: make(chan error, 256), tokens: make(chan string, 64)}
	w.logger = slog.New(slog.NewTextHandler(&w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return w
}

func (w *leakWatch) secret(s string) {
	w.mu.Lock()
	w.secrets = append(w.secrets, s)
	w.mu.Unlock()
}

func (w *leakWatch) err(err error) {
	if err == nil {
		return
	}
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

// config wires every callback of cfg to the watch.
func (w *leakWatch) config(cfg conn.Config) *conn.Config {
	cfg.Logger = w.logger
	cfg.OnError = func(err error) {
		w.err(err)
		if strings.Contains(err.Error(), "failed") {
			select {
			case w.failed <- err:
			default:
			}
		}
	}
	cfg.OnStateChange = func(sc conn.StateChange) { w.err(sc.Err) }
	cfg.OnConnect = func(_ *conn.Session, r conn.ConnectReason) { w.reasons <- r }
	cfg.OnRefreshToken = func(tok string) {
		w.secret(tok)
		select {
		case w.tokens <- tok:
		default:
		}
	}
	return fast(cfg)
}

func (w *leakWatch) waitReason(t *testing.T, want conn.ConnectReason) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-w.reasons:
			if r == want {
				return
			}
		case <-timeout:
			t.Fatalf("no OnConnect with reason %v", want)
		}
	}
}

func (w *leakWatch) waitFailure(t *testing.T, match func(error) bool) error {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-w.failed:
			if match(err) {
				return err
			}
		case <-timeout:
			t.Fatal("expected failure not reported")
			return nil
		}
	}
}

func (w *leakWatch) latestToken(t *testing.T) string {
	t.Helper()
	select {
	case tok := <-w.tokens:
		for {
			select {
			case tok = <-w.tokens:
			default:
				return tok
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh token handed out")
		return ""
	}
}

// check fails the test if a secret shows up anywhere, and makes sure the
// watch saw something at all.
func (w *leakWatch) check(t *testing.T, returned ...error) {
	t.Helper()
	for _, err := range returned {
		w.err(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	logs := w.logs.String()
	if logs == "" || len(w.errs) == 0 {
		t.Fatalf("nothing logged (%d bytes) or reported (%d errors): the paths were not exercised", len(logs), len(w.errs))
	}
	for _, s := range w.secrets {
		if s == "" {
			continue
		}
		if strings.Contains(logs, s) {
			t.Errorf("secret %.8s… in the logs:\n%s", s, logs)
		}
		for _, err := range w.errs {
			if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), s) {
				t.Errorf("secret %.8s… in an error: %v", s, err)
			}
		}
	}
}

func logout(t *testing.T, srv *directustest.Server, refresh string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"refresh_token": refresh})
	resp, err := http.Post(srv.URL()+"/auth/logout", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
}

// TestSecretsNeverExposedDuringReauthAndReconnect extends
// TestSecretsNeverLogged (first connects) to the paths a long-running
// client takes: re-authentication after TOKEN_EXPIRED with a login and with
// rotating refresh tokens, a refresh token revoked mid-session, strict mode
// reconnecting through dial errors and 401s with a token source, proactive
// refresh with a token source, and failed auth in public mode.
func TestSecretsNeverExposedDuringReauthAndReconnect(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	t.Run("email/password, then rotated and revoked refresh tokens", func(t *testing.T) {
		srv := newServer(t, nil)
		w := newLeakWatch(directustest.AdminPassword)
		c := connect(t, w.config(conn.Config{URL: srv.URL(), Auth: conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword}}))
		w.waitReason(t, conn.ReasonConnected)
		rt := w.latestToken(t)
		// TOKEN_EXPIRED: re-authentication with the refresh token, rotated.
		srv.ExpireTokens()
		w.waitReason(t, conn.ReasonReauthenticated)
		if next := w.latestToken(t); next == rt {
			t.Fatal("refresh token not rotated")
		} else {
			rt = next
		}
		// The refresh token is revoked; the next re-authentication fails,
		// and the client falls back to its login on a new session.
		logout(t, srv, rt)
		srv.ExpireTokens()
		w.waitFailure(t, func(err error) bool { return errors.Is(err, protocol.ErrAuthFailed) })
		w.waitReason(t, conn.ReasonReconnected)
		_ = c.Close()
		w.check(t)
	})

	t.Run("refresh token only, revoked mid-session", func(t *testing.T) {
		srv := newServer(t, nil)
		_, rt := login(t, srv, directustest.AdminEmail, directustest.AdminPassword)
		w := newLeakWatch(rt)
		c := connect(t, w.config(conn.Config{URL: srv.URL(), Auth: conn.Auth{RefreshToken: rt}}))
		current := w.latestToken(t)
		srv.ExpireTokens()
		w.waitReason(t, conn.ReasonReauthenticated)
		current = w.latestToken(t)
		logout(t, srv, current)
		srv.ExpireTokens()
		// The re-authentication fails, then the reconnect attempts (reported
		// once: they all fail the same way).
		w.waitFailure(t, func(err error) bool { return strings.Contains(err.Error(), "re-authentication") })
		w.waitFailure(t, func(err error) bool { return strings.Contains(err.Error(), "connect attempt") })
		_ = c.Close()
		w.check(t)
	})

	t.Run("strict mode reconnecting with a token source", func(t *testing.T) {
		srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthStrict})
		w := newLeakWatch()
		var bad atomic.Bool
		source := func(context.Context) (string, error) {
			if bad.Load() {
				tok := "bad-token-" + strings.Repeat("q", 20)
				w.secret(tok)
				return tok, nil
			}
			tok, err := srv.IssueToken(directustest.AdminEmail, time.Hour)
			w.secret(tok)
			return tok, err
		}
		c := connect(t, w.config(conn.Config{URL: srv.URL(), Auth: conn.Auth{Mode: conn.AuthStrict, TokenSource: source}}))
		// The server goes away: every redial fails with the token in the
		// URL of the failed request.
		srv.Stop()
		var de *conn.DialError
		w.waitFailure(t, func(err error) bool { return errors.As(err, &de) })
		// It comes back but the source now hands out a token it refuses.
		bad.Store(true)
		srv.Start()
		w.waitFailure(t, func(err error) bool { return errors.Is(err, conn.ErrUnauthorized) })
		bad.Store(false)
		w.waitReason(t, conn.ReasonReconnected)
		_ = c.Close()
		w.check(t)
	})

	t.Run("proactive refresh with a token source, then a refused token", func(t *testing.T) {
		authSeen := make(chan struct{}, 16)
		srv := newServer(t, &directustest.Options{OnFrame: func(f directustest.Frame) {
			if f.Inbound && bytes.Contains(f.Data, []byte(`"type":"auth"`)) {
				select {
				case authSeen <- struct{}{}:
				default:
				}
			}
		}})
		w := newLeakWatch()
		var refuse atomic.Bool
		source := func(context.Context) (string, error) {
			if refuse.Load() {
				tok := "refused-" + strings.Repeat("r", 24)
				w.secret(tok)
				return tok, nil
			}
			// Two seconds: refreshed about a second before exp.
			tok, err := srv.IssueToken(directustest.AdminEmail, 2*time.Second)
			w.secret(tok)
			return tok, err
		}
		c := connect(t, w.config(conn.Config{URL: srv.URL(), Auth: conn.Auth{TokenSource: source}}))
		<-authSeen // the handshake
		<-authSeen // a proactive refresh
		refuse.Store(true)
		// Normally the refresh before exp is refused. On a loaded machine
		// the token may expire first (the re-authentication after
		// TOKEN_EXPIRED is refused instead), or the refresh may time out
		// (the next connect attempt is refused instead). Each way, the
		// refused token goes through paths whose errors and logs are checked.
		w.waitFailure(t, func(err error) bool { return errors.Is(err, protocol.ErrAuthFailed) })
		_ = c.Close()
		w.check(t)
	})

	t.Run("public mode, refused credentials", func(t *testing.T) {
		srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthPublic})
		secret := "public-bad-" + strings.Repeat("p", 16)
		w := newLeakWatch(secret)
		for _, auth := range []conn.Auth{
			{Mode: conn.AuthPublic, Token: secret},
			{Mode: conn.AuthPublic, Email: directustest.AdminEmail, Password: secret},
			{Mode: conn.AuthPublic, RefreshToken: secret},
		} {
			err := connectErr(t, w.config(conn.Config{URL: srv.URL(), Auth: auth}))
			if !errors.Is(err, protocol.ErrAuthFailed) {
				t.Errorf("%v: err = %v, want AUTH_FAILED", auth, err)
			}
			w.err(err)
		}
		w.check(t)
	})
}

// TestWSSWithCustomCA connects over wss:// to a server whose certificate is
// signed by a CA only the application trusts, through Config.HTTPClient;
// without it the dial fails and the x509 error stays reachable, even in
// strict mode where the failed URL carries the token.
func TestWSSWithCustomCA(t *testing.T) {
	srv := directustest.NewTLSServer(nil)
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL %s", srv.URL())
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(trusting.CloseIdleConnections)

	f := newFrames()
	c := connect(t, fast(conn.Config{URL: srv.URL(), HTTPClient: trusting, Auth: conn.Auth{Token: directustest.AdminToken}, OnSubscription: f.on}))
	subscribe(t, c, f, "tls", nil)
	if _, err := srv.Create("posts", map[string]any{"title": "over tls"}); err != nil {
		t.Fatal(err)
	}
	if m := f.nextEvent(t, protocol.EventCreate); !bytes.Contains(m.Data, []byte("over tls")) {
		t.Fatalf("create over wss: %s", m.Data)
	}
	_ = c.Close()

	for _, auth := range []conn.Auth{
		{Token: directustest.AdminToken},
		{Mode: conn.AuthStrict, Token: directustest.AdminToken},
	} {
		c, err := conn.New(fast(conn.Config{URL: srv.URL(), Auth: auth})) // system roots only
		if err != nil {
			t.Fatal(err)
		}
		// The certificate error ends the first Connect at once (no retry
		// mends the client's trust); the bound only keeps a regression
		// from waiting for ever (a loaded machine takes its time over the
		// TLS handshake).
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = c.Connect(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v without the CA: Connect retried until its deadline: %v", auth, err)
		}
		if st := c.State(); st != conn.StateClosed {
			t.Errorf("%v without the CA: state %v, want closed", auth, st)
		}
		var unknown x509.UnknownAuthorityError
		var verify *tls.CertificateVerificationError
		if err == nil || !errors.As(err, &unknown) || !errors.As(err, &verify) {
			t.Errorf("%v without the CA: err = %v, want an x509.UnknownAuthorityError within reach of errors.As", auth, err)
		}
		if err != nil && strings.Contains(err.Error(), directustest.AdminToken) {
			t.Errorf("%v: token in the error: %v", auth, err)
		}
		if verify != nil && strings.Contains(verify.Error(), directustest.AdminToken) {
			t.Errorf("%v: token in the TLS cause: %v", auth, verify)
		}
	}
}

// misbehave serves the WebSocket endpoint with serve, a misbehaving server.
// serve returns when the client is gone.
func misbehave(t *testing.T, serve func(ctx context.Context, ws *websocket.Conn)) string {
	t.Helper()
	var wg sync.WaitGroup
	// Hijacked connections outlive the request's context: this one ends
	// every handler at cleanup.
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer ws.CloseNow()
		ws.SetReadLimit(-1)
		serve(ctx, ws)
	}))
	t.Cleanup(func() {
		cancel()
		srv.Close()
		wg.Wait()
	})
	return srv.URL
}

// answerAuth reads the client's handshake auth frame and accepts it.
func answerAuth(ctx context.Context, ws *websocket.Conn) error {
	_, b, err := ws.Read(ctx)
	if err != nil {
		return err
	}
	var m struct {
		UID json.RawMessage `json:"uid"`
	}
	_ = json.Unmarshal(b, &m)
	return ws.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"auth","status":"ok","uid":%s}`, m.UID))
}

func heapStats() runtime.MemStats {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// TestReadLimitBoundsMemory: a hostile server streams a 512 MiB frame. The
// session ends with ErrFrameTooLarge once the 1 MiB read limit is passed,
// and the client never allocates anything near the frame's size.
func TestReadLimitBoundsMemory(t *testing.T) {
	const frameSize = 512 << 20
	var sent atomic.Int64
	url := misbehave(t, func(ctx context.Context, ws *websocket.Conn) {
		if answerAuth(ctx, ws) != nil {
			return
		}
		w, err := ws.Writer(ctx, websocket.MessageText)
		if err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		_, _ = w.Write([]byte(`{"type":"items","data":"`))
		for sent.Load() < frameSize {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
		_ = w.Close()
	})
	before := heapStats()
	c, err := conn.New(&conn.Config{URL: url, Auth: conn.Auth{Token: "t"}, ReadLimit: 1 << 20, PingInterval: -1,
		Backoff: conn.Backoff{Initial: time.Minute}}) // no second session during the check
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	states := c.WatchState(ctxT(t))
	if err := c.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	sc := waitState(t, states, conn.StateReconnecting)
	after := heapStats()
	if !errors.Is(sc.Err, conn.ErrFrameTooLarge) {
		t.Fatalf("session ended by %v, want ErrFrameTooLarge", sc.Err)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("server streamed %d MiB of a %d MiB frame; client allocated %.1f MiB in total, heap in use %+.1f MiB",
		sent.Load()>>20, frameSize>>20, float64(allocated)/(1<<20), (float64(after.HeapInuse)-float64(before.HeapInuse))/(1<<20))
	if allocated > 32<<20 {
		t.Fatalf("client allocated %d MiB reading a frame over a 1 MiB limit", allocated>>20)
	}
}

// TestPendingRequestsCapped: against a server that answers nothing, at most
// MaxPendingRequests requests are on the wire; the others wait for a slot,
// spawn no goroutine of their own, and fail with ErrTimeout.
func TestPendingRequestsCapped(t *testing.T) {
	const limit = 8
	var onWire atomic.Int64
	wire := make(chan struct{}, 1024)
	srv := newServer(t, &directustest.Options{OnFrame: func(f directustest.Frame) {
		if f.Inbound && bytes.Contains(f.Data, []byte(`"type":"items"`)) {
			onWire.Add(1)
			wire <- struct{}{}
		}
	}})
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		MaxPendingRequests: limit, RequestTimeout: time.Minute}))
	srv.Stall(true)
	defer srv.Stall(false)
	read := protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionRead}

	// limit requests take every slot and wait for replies that never come.
	held := make(chan error, limit)
	for range limit {
		go func() {
			_, err := c.Items(context.Background(), read)
			held <- err
		}()
	}
	for range limit {
		select {
		case <-wire:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d requests reached the server", onWire.Load())
		}
	}

	// A flood of further requests waits at the cap and times out.
	const flood = 500
	base := runtime.NumGoroutine()
	var wg sync.WaitGroup
	errs := make(chan error, flood)
	for range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := c.Items(ctx, read)
			errs <- err
		}()
	}
	if n := runtime.NumGoroutine() - base; n > flood+10 {
		t.Errorf("%d goroutines for %d waiting requests", n, flood)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, conn.ErrTimeout) {
			t.Fatalf("waiting request: %v, want ErrTimeout", err)
		}
	}
	if n := onWire.Load(); n != limit {
		t.Fatalf("%d requests reached the server, want %d", n, limit)
	}
	_ = c.Close()
	for range limit {
		if err := <-held; !errors.Is(err, protocol.ErrClosed) {
			t.Errorf("pending request after Close: %v", err)
		}
	}
}

// TestErrorCallbacksBoundedUnderFlood: a flood of malformed frames while
// OnError is blocked neither stalls the connection (a ping still gets its
// pong) nor queues more than the notifier's cap of callbacks.
func TestErrorCallbacksBoundedUnderFlood(t *testing.T) {
	const flood = 20000
	srv := newServer(t, nil)
	release := make(chan struct{})
	var calls atomic.Int64
	c := connect(t, fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
		OnError: func(err error) {
			if calls.Add(1) == 1 {
				<-release
			}
		}}))
	before := heapStats()
	for i := range flood {
		srv.Inject(fmt.Appendf(nil, `not json %d`, i))
	}
	// The pong comes after every injected frame: the read loop went
	// through all of them while the callback was blocked.
	if _, err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("ping during the flood: %v", err)
	}
	during := heapStats()
	close(release)
	_ = c.Close() // runs the queued callbacks before it returns
	n := calls.Load()
	t.Logf("%d malformed frames: %d OnError calls, heap in use %+.1f MiB while blocked", flood, n,
		(float64(during.HeapInuse)-float64(before.HeapInuse))/(1<<20))
	// The notifier runs callbacks in batches taken off its queue: at most
	// one batch (taken before the block) and one full queue wait.
	if n < 4096 || n > 2*4096 {
		t.Fatalf("%d OnError calls for %d malformed frames, want between the cap (4096) and twice the cap", n, flood)
	}
	if grown := int64(during.HeapInuse) - int64(before.HeapInuse); grown > 16<<20 {
		t.Fatalf("heap grew by %d MiB during the flood", grown>>20)
	}
}
