package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// chromiumPath is Debian's chromium (apt-get install -y chromium).
const chromiumPath = "/usr/bin/chromium"

// The page in a real browser: headless Chromium opens it, its EventSource
// subscribes, a write on the server shows up in the page's text, and when
// the browser closes, the subscription ends.
//
// The test talks to Chromium over the DevTools protocol (CDP) with a tiny
// client on github.com/coder/websocket: Runtime.evaluate waits in the page,
// with a MutationObserver, until the text of the write appears.
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("REQUIRE_CHROMIUM=1 but %s is missing (apt-get install -y chromium): %v", chromiumPath, err)
		}
		t.Skipf("%s not found: install Debian's chromium (apt-get install -y chromium) to check the page in a real browser; with REQUIRE_CHROMIUM=1 this is a failure", chromiumPath)
	}
	a := startApp(t)
	start := time.Now()
	phase := func(what string) { t.Logf("%-40s after %v", what, time.Since(start).Round(time.Millisecond)) }
	ctx, cancel := context.WithTimeout(t.Context(), 4*waitLimit)
	defer cancel()

	br := startChromium(t, a.base+"/?collection=posts")

	// The page's EventSource made its subscription.
	uid := waitUID(t, a.started, "subscription of the page's stream")
	phase("the page subscribed")
	if uids := a.activeUIDs(t); len(uids) != 1 || uids[0] != uid {
		t.Fatalf("active subscriptions %v, want [%s]", uids, uid)
	}

	// A write on the server must appear in the page.
	title := fmt.Sprintf("seen by chromium %d", time.Now().UnixNano())
	if _, err := a.srv.Create("posts", map[string]any{"title": title, "status": "published", "views": 0}); err != nil {
		t.Fatal(err)
	}
	page := br.pageTarget(ctx, t, a.base)
	text := page.waitText(ctx, t, title)
	phase("the page shows the write")
	t.Logf("the page shows:\n%s", text)
	flat := strings.Join(strings.Fields(text), " ") // innerText collapses spaces
	for _, want := range []string{"Stream: live", "subscription " + uid, "subscribed: 0 rows", `create #1 "` + title + `" published`} {
		if !strings.Contains(flat, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	page.close()

	// The browser closes: its connections go, the request's context ends,
	// and the subscription with it.
	br.close(ctx, t)
	phase("chromium exited")
	if got := waitUID(t, a.ended, "end of the page's subscription"); got != uid {
		t.Fatalf("ended %s, want %s", got, uid)
	}
	phase("the subscription ended")
	if uids := a.activeUIDs(t); len(uids) != 0 {
		t.Fatalf("active subscriptions after the browser closed: %v", uids)
	}
}

// chromium is a headless Chromium in its own process group.
type chromium struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	devtools string // ws://127.0.0.1:PORT/devtools/browser/ID
	client   *http.Client
}

// devtoolsLine is what Chromium prints on stderr once its DevTools server
// listens (with --remote-debugging-port=0 it picks a free port).
var devtoolsLine = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// stderrWatch keeps Chromium's stderr for diagnostics and reports the
// DevTools address once.
type stderrWatch struct {
	mu    sync.Mutex
	buf   []byte
	found chan string
	once  sync.Once
}

func (w *stderrWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) < 1<<20 {
		w.buf = append(w.buf, p...)
	}
	if m := devtoolsLine.FindSubmatch(w.buf); m != nil {
		w.once.Do(func() { w.found <- string(m[1]) })
	}
	return len(p), nil
}

func (w *stderrWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

func startChromium(t *testing.T, url string) *chromium {
	t.Helper()
	stderr := &stderrWatch{found: make(chan string, 1)}
	cmd := exec.Command(chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		// Without these Chromium tries outbound connections, which this
		// machine refuses.
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(),
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		url)
	cmd.Stderr = stderr
	// Its own process group, so that the cleanup kills the renderer and
	// every other child too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := &chromium{cmd: cmd, exited: make(chan struct{}), client: &http.Client{Transport: &http.Transport{}}}
	go func() {
		_ = cmd.Wait()
		close(br.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-br.exited
		br.client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("chromium's stderr:\n%s", stderr.String())
		}
	})
	select {
	case br.devtools = <-stderr.found:
		t.Logf("chromium's DevTools up after %v", time.Since(start).Round(time.Millisecond))
	case <-br.exited:
		t.Fatalf("chromium exited: %v\n%s", cmd.ProcessState, stderr.String())
	case <-time.After(2 * waitLimit):
		t.Fatalf("chromium printed no DevTools address within %v:\n%s", 2*waitLimit, stderr.String())
	}
	return br
}

// pageTarget connects to the tab showing the example's page.
func (br *chromium) pageTarget(ctx context.Context, t *testing.T, base string) *cdp {
	t.Helper()
	// ws://127.0.0.1:PORT/devtools/browser/ID -> http://127.0.0.1:PORT/json/list
	hostPort := strings.SplitN(strings.TrimPrefix(br.devtools, "ws://"), "/", 2)[0]
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPort+"/json/list", nil)
	resp, err := br.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var targets []struct {
		Type, URL            string
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		if tg.Type == "page" && strings.HasPrefix(tg.URL, base) {
			return dialCDP(ctx, t, tg.WebSocketDebuggerURL)
		}
	}
	t.Fatalf("no page target for %s among %+v", base, targets)
	return nil
}

// close asks Chromium to quit (Browser.close) and waits for it to exit.
func (br *chromium) close(ctx context.Context, t *testing.T) {
	t.Helper()
	c := dialCDP(ctx, t, br.devtools)
	// The browser may drop the socket before it answers.
	_, _ = c.call(ctx, "Browser.close", nil)
	c.close()
	select {
	case <-br.exited:
	case <-ctx.Done():
		t.Fatal("chromium did not exit after Browser.close")
	}
}

// cdp is a minimal DevTools protocol client: one request at a time.
type cdp struct {
	conn *websocket.Conn
	id   int64
}

func dialCDP(ctx context.Context, t *testing.T, url string) *cdp {
	t.Helper()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(16 << 20)
	return &cdp{conn: c}
}

func (c *cdp) close() { _ = c.conn.CloseNow() }

// call sends a command and returns its result, skipping the events that
// come in between.
func (c *cdp) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	c.id++
	req, err := json.Marshal(map[string]any{"id": c.id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	if err := c.conn.Write(ctx, websocket.MessageText, req); err != nil {
		return nil, err
	}
	for {
		_, b, err := c.conn.Read(ctx)
		if err != nil {
			return nil, err
		}
		var resp struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &resp); err != nil {
			return nil, err
		}
		if resp.ID != c.id {
			continue // an event, or the answer to something else
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("%s: %d %s", method, resp.Error.Code, resp.Error.Message)
		}
		return resp.Result, nil
	}
}

// waitText waits, inside the page, until its text contains want, and
// returns the text. The page is watched with a MutationObserver: no polling.
func (c *cdp) waitText(ctx context.Context, t *testing.T, want string) string {
	t.Helper()
	wantJS, _ := json.Marshal(want)
	expr := `new Promise((resolve, reject) => {
  const want = ` + string(wantJS) + `;
  const text = () => document.body ? document.body.innerText : "";
  if (text().includes(want)) { resolve(text()); return; }
  const obs = new MutationObserver(() => {
    if (text().includes(want)) { obs.disconnect(); resolve(text()); }
  });
  obs.observe(document.documentElement, {childList: true, subtree: true, characterData: true});
  setTimeout(() => { obs.disconnect(); reject(new Error("not shown in time; the page shows: " + text())); }, ` + fmt.Sprint(waitLimit.Milliseconds()) + `);
})`
	res, err := c.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		t.Fatal(err)
	}
	if out.ExceptionDetails != nil {
		t.Fatalf("in the page: %s", out.ExceptionDetails.Exception.Description)
	}
	text, ok := out.Result.Value.(string)
	if !ok {
		t.Fatal(errors.New("Runtime.evaluate returned no text"))
	}
	return text
}
