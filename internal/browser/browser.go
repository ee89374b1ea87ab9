// Package browser runs Debian's headless Chromium for tests and talks to
// it over the DevTools protocol (CDP) with github.com/coder/websocket: a
// page is opened, and the test waits inside it, with a MutationObserver,
// until its text shows what it expects.
package browser

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

// Path is Debian's chromium (apt-get install -y chromium).
const Path = "/usr/bin/chromium"

// Require skips the test when Chromium is missing, or fails it when
// REQUIRE_CHROMIUM=1 (as in CI).
func Require(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		if os.Getenv("REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("REQUIRE_CHROMIUM=1 but %s is missing (apt-get install -y chromium): %v", Path, err)
		}
		t.Skipf("%s not found: install Debian's chromium (apt-get install -y chromium) to check the page in a real browser; with REQUIRE_CHROMIUM=1 this is a failure", Path)
	}
}

// Chromium is a headless Chromium in its own process group, killed at the
// test's end.
type Chromium struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	devtools string // ws://127.0.0.1:PORT/devtools/browser/ID
	client   *http.Client
}

var devtoolsLine = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// stderrWatch keeps Chromium's stderr and reports the DevTools address.
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

// Start opens url in a new headless Chromium; it waits at most limit for
// its DevTools server.
func Start(t *testing.T, url string, limit time.Duration) *Chromium {
	t.Helper()
	stderr := &stderrWatch{found: make(chan string, 1)}
	cmd := exec.Command(Path,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		// Without these Chromium tries outbound connections, which the
		// test machines refuse.
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(),
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		url)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the cleanup kills every child too
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := &Chromium{cmd: cmd, exited: make(chan struct{}), client: &http.Client{Transport: &http.Transport{}}}
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
	case <-br.exited:
		t.Fatalf("chromium exited: %v\n%s", cmd.ProcessState, stderr.String())
	case <-time.After(limit):
		t.Fatalf("chromium printed no DevTools address within %v:\n%s", limit, stderr.String())
	}
	return br
}

// Page connects to the tab whose URL starts with prefix.
func (br *Chromium) Page(ctx context.Context, t *testing.T, prefix string) *CDP {
	t.Helper()
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
		if tg.Type == "page" && strings.HasPrefix(tg.URL, prefix) {
			return Dial(ctx, t, tg.WebSocketDebuggerURL)
		}
	}
	t.Fatalf("no page target for %s among %+v", prefix, targets)
	return nil
}

// Close asks Chromium to quit (Browser.close) and waits for it to exit.
func (br *Chromium) Close(ctx context.Context, t *testing.T) {
	t.Helper()
	c := Dial(ctx, t, br.devtools)
	_, _ = c.Call(ctx, "Browser.close", nil) // it may drop the socket before it answers
	c.Close()
	select {
	case <-br.exited:
	case <-ctx.Done():
		t.Fatal("chromium did not exit after Browser.close")
	}
}

// CDP is a minimal DevTools protocol client: one request at a time.
type CDP struct {
	conn *websocket.Conn
	id   int64
}

// Dial connects to a DevTools WebSocket.
func Dial(ctx context.Context, t *testing.T, url string) *CDP {
	t.Helper()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(16 << 20)
	return &CDP{conn: c}
}

// Close drops the connection.
func (c *CDP) Close() { _ = c.conn.CloseNow() }

// Call sends a command and returns its result, skipping events.
func (c *CDP) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
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
			continue
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("%s: %d %s", method, resp.Error.Code, resp.Error.Message)
		}
		return resp.Result, nil
	}
}

// WaitText waits, inside the page, at most limit until its text contains
// want, and returns the text. The page is watched with a
// MutationObserver: no polling.
func (c *CDP) WaitText(ctx context.Context, t *testing.T, want string, limit time.Duration) string {
	t.Helper()
	wantJS, _ := json.Marshal(want)
	expr := `new Promise((resolve, reject) => {
  const want = ` + string(wantJS) + `;
  const text = () => document.body ? document.body.innerText : "";
  if (text().includes(want)) { resolve(text()); return; }
  const obs = new MutationObserver(() => {
    if (text().includes(want)) { obs.disconnect(); resolve(text()); }
  });
  obs.observe(document, {childList: true, subtree: true, characterData: true});
  setTimeout(() => { obs.disconnect(); reject(new Error("not shown in time; the page shows: " + text())); }, ` + fmt.Sprint(limit.Milliseconds()) + `);
})`
	var res json.RawMessage
	var err error
	// A page still loading replaces its execution context (about:blank,
	// then the page): evaluate again in the new one.
	for range 10 {
		res, err = c.Call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true})
		if err == nil || !strings.Contains(err.Error(), "Execution context was destroyed") {
			break
		}
	}
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
