package directustest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/directustest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const frameTimeout = 5 * time.Second

var heartbeatPing = []byte(`{"type":"ping"}`)

// tclient is a raw WebSocket client: a reader goroutine queues every frame
// except server heartbeat pings, which it answers with {"type":"pong"} while
// autoPong is on.
type tclient struct {
	t        testing.TB
	ws       *websocket.Conn
	autoPong atomic.Bool
	keepPing atomic.Bool // deliver heartbeat pings instead of filtering them

	mu      sync.Mutex
	cond    *sync.Cond
	frames  [][]byte
	done    bool
	readErr error
	doneCh  chan struct{}
	syncSeq int
}

func dialOpts(hdr http.Header, client *http.Client) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: client}
}

// dial connects and starts the reader. It returns the HTTP response and
// error of a refused upgrade.
func dial(t testing.TB, url string, opts *websocket.DialOptions) (*tclient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		return nil, resp, err
	}
	c := &tclient{t: t, ws: ws, doneCh: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	c.autoPong.Store(true)
	ws.SetReadLimit(-1)
	go c.readLoop()
	t.Cleanup(func() {
		_ = ws.CloseNow()
		<-c.doneCh
	})
	return c, resp, nil
}

func mustDial(t testing.TB, url string) *tclient {
	t.Helper()
	c, _, err := dial(t, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

func (c *tclient) readLoop() {
	defer close(c.doneCh)
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.done, c.readErr = true, err
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		if bytes.Equal(data, heartbeatPing) && !c.keepPing.Load() {
			if c.autoPong.Load() {
				_ = c.ws.Write(context.Background(), websocket.MessageText, []byte(`{"type":"pong"}`))
			}
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, data)
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

func (c *tclient) send(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("send %s: %v", s, err)
	}
}

// nextFrame waits for the next frame; ok is false on timeout or when the
// connection ended first.
func (c *tclient) nextFrame(timeout time.Duration) ([]byte, bool) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.frames) == 0 && !c.done && time.Now().Before(deadline) {
		c.cond.Wait()
	}
	if len(c.frames) == 0 {
		return nil, false
	}
	f := c.frames[0]
	c.frames = c.frames[1:]
	return f, true
}

func (c *tclient) next() []byte {
	c.t.Helper()
	f, ok := c.nextFrame(frameTimeout)
	if !ok {
		c.t.Fatalf("no frame within %v (closed: %v)", frameTimeout, c.closeErr())
	}
	return f
}

// expect reads the next frame and compares it to want exactly.
func (c *tclient) expect(want string) {
	c.t.Helper()
	got := c.next()
	if string(got) != want {
		c.t.Fatalf("frame mismatch\n got: %s\nwant: %s", got, want)
	}
}

// nextJSON reads the next frame into a map.
func (c *tclient) nextJSON() map[string]any {
	c.t.Helper()
	f := c.next()
	var m map[string]any
	if err := json.Unmarshal(f, &m); err != nil {
		c.t.Fatalf("frame %s: %v", f, err)
	}
	return m
}

// sync sends a ping with a fresh uid and returns every frame that arrived
// before its pong: since the server answers in order, this proves that
// nothing else is pending.
func (c *tclient) sync() [][]byte {
	c.t.Helper()
	c.syncSeq++
	uid := fmt.Sprintf("sync-%d", c.syncSeq)
	c.send(`{"type":"ping","uid":"` + uid + `"}`)
	pong := `{"type":"pong","uid":"` + uid + `"}`
	var out [][]byte
	for {
		f := c.next()
		if string(f) == pong {
			return out
		}
		out = append(out, f)
	}
}

// expectNothing asserts that no frame is pending.
func (c *tclient) expectNothing() {
	c.t.Helper()
	if extra := c.sync(); len(extra) > 0 {
		c.t.Fatalf("unexpected frames: %s", joinFrames(extra))
	}
}

// waitClosed waits until the connection ended and returns the close code
// the client saw (1006 for an abnormal closure).
func (c *tclient) waitClosed(timeout time.Duration) (websocket.StatusCode, bool) {
	select {
	case <-c.doneCh:
	case <-time.After(timeout):
		return 0, false
	}
	return closeCode(c.closeErr()), true
}

func (c *tclient) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

func closeCode(err error) websocket.StatusCode {
	if err == nil {
		return 0
	}
	code := websocket.CloseStatus(err)
	if code == -1 {
		return websocket.StatusAbnormalClosure
	}
	return code
}

func joinFrames(fs [][]byte) string {
	var b strings.Builder
	for _, f := range fs {
		b.Write(f)
		b.WriteByte('\n')
	}
	return b.String()
}

// authClient dials and authenticates with the admin static token.
func authClient(t testing.TB, srv *directustest.Server) *tclient {
	t.Helper()
	c := mustDial(t, srv.WebSocketURL())
	c.send(`{"type":"auth","access_token":"` + directustest.AdminToken + `"}`)
	c.expect(`{"type":"auth","status":"ok"}`)
	return c
}

// rest performs a REST call with the given token ("" for none).
func rest(t testing.TB, srv *directustest.Server, method, path, token, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func newServer(t testing.TB, opts *directustest.Options) *directustest.Server {
	t.Helper()
	srv := directustest.NewServer(opts)
	t.Cleanup(srv.Close)
	return srv
}

func waitConns(t testing.TB, srv *directustest.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	if err := srv.WaitConns(ctx, n); err != nil {
		t.Fatalf("WaitConns(%d): %v (have %d)", n, err, srv.ConnCount())
	}
}

func contains(b []byte, sub string) bool { return strings.Contains(string(b), sub) }
