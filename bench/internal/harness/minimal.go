package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

// MinimalClient is the smallest hand-written client that keeps a correct
// replica of posts: one coder/websocket socket, one json.Unmarshal per frame
// into a struct whose data is typed, one map guarded by a RWMutex. It
// authenticates, subscribes with limit -1, answers the server's heartbeat,
// and applies init, create, update and delete, normalising delete keys that
// arrive as strings ("1521") or numbers (1521). It has no reconnect, no
// queue and no request correlation: it is the baseline, not a client to use.
type MinimalClient struct {
	Marks *Marks

	ws     *websocket.Conn
	cancel context.CancelFunc
	done   chan struct{}
	err    error

	mu   sync.RWMutex
	rows map[int64]Post
}

// frame is every server frame the client looks at. Data is decoded in the
// same pass as the envelope.
type frame struct {
	Type   string  `json:"type"`
	Event  string  `json:"event"`
	Status string  `json:"status"`
	UID    string  `json:"uid"` // the client's own uids are strings, echoed as such
	Data   payload `json:"data"`
}

// payload is the data of a subscription frame: rows (init, create, update)
// or keys (delete), chosen by the first element.
type payload struct {
	Rows []Post
	Keys []int64
}

// UnmarshalJSON decodes an array of rows with encoding/json, and an array of
// keys (JSON strings or numbers) by hand.
func (p *payload) UnmarshalJSON(b []byte) error {
	p.Rows, p.Keys = nil, nil
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil // not a collection subscription's data; ignored
	}
	j := skipSpace(b, i+1)
	if j < len(b) && (b[j] == '{' || b[j] == ']') {
		return json.Unmarshal(b, &p.Rows)
	}
	for _, f := range bytes.Split(b[i+1:bytes.LastIndexByte(b, ']')], []byte{','}) {
		f = bytes.TrimSpace(f)
		if len(f) > 1 && f[0] == '"' {
			f = f[1 : len(f)-1]
		}
		k, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return fmt.Errorf("delete key %q: %w", f, err)
		}
		p.Keys = append(p.Keys, k)
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// Start implements Client.
func (c *MinimalClient) Start(ctx context.Context, url, token string) error {
	wsURL := "ws" + strings.TrimPrefix(strings.TrimRight(url, "/"), "http") + "/websocket"
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		return err
	}
	ws.SetReadLimit(64 << 20)
	auth, _ := json.Marshal(map[string]string{"type": "auth", "access_token": token, "uid": "auth"})
	if err := ws.Write(ctx, websocket.MessageText, auth); err != nil {
		ws.CloseNow()
		return err
	}
	var f frame
	if err := c.read(ctx, ws, &f); err != nil {
		ws.CloseNow()
		return err
	}
	if f.Type != "auth" || f.Status != "ok" {
		ws.CloseNow()
		return fmt.Errorf("auth failed: %s %s", f.Type, f.Status)
	}
	sub := `{"type":"subscribe","collection":"posts","query":{"limit":-1},"uid":"posts"}`
	if err := ws.Write(ctx, websocket.MessageText, []byte(sub)); err != nil {
		ws.CloseNow()
		return err
	}
	c.ws, c.done = ws, make(chan struct{})
	c.rows = map[int64]Post{}
	rctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	synced := make(chan struct{})
	go c.loop(rctx, synced)
	select {
	case <-synced:
		return nil
	case <-c.done:
		return c.err
	case <-ctx.Done():
		_ = c.Close()
		return ctx.Err()
	}
}

func (c *MinimalClient) read(ctx context.Context, ws *websocket.Conn, f *frame) error {
	_, b, err := ws.Read(ctx)
	if err != nil {
		return err
	}
	return c.decode(b, f)
}

// decode is the client's one json.Unmarshal per frame.
func (c *MinimalClient) decode(b []byte, f *frame) error {
	*f = frame{}
	return json.Unmarshal(b, f)
}

func (c *MinimalClient) loop(ctx context.Context, synced chan struct{}) {
	defer close(c.done)
	var f frame
	for {
		if err := c.read(ctx, c.ws, &f); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				continue
			}
			c.err = err
			return
		}
		switch {
		case f.Type == "ping":
			if err := c.ws.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`)); err != nil {
				c.err = err
				return
			}
		case f.Type == "subscription" && f.UID == "posts":
			c.apply(&f)
			if f.Event == "init" && synced != nil {
				close(synced)
				synced = nil
			}
		}
	}
}

func (c *MinimalClient) apply(f *frame) {
	c.mu.Lock()
	switch f.Event {
	case "init":
		c.rows = make(map[int64]Post, len(f.Data.Rows))
		for _, r := range f.Data.Rows {
			c.rows[r.ID] = r
		}
	case "create", "update":
		for _, r := range f.Data.Rows {
			c.rows[r.ID] = r
		}
	case "delete":
		for _, k := range f.Data.Keys {
			delete(c.rows, k)
		}
	}
	c.mu.Unlock()
	f.Data = payload{} // the rows are in the map; do not keep the slice alive
	if c.Marks != nil {
		if f.Event == "init" {
			c.Marks.MarkInit()
		} else {
			c.Marks.Mark()
		}
	}
}

// Rows implements Client.
func (c *MinimalClient) Rows() []Post {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Post, 0, len(c.rows))
	for _, r := range c.rows {
		out = append(out, r)
	}
	return out
}

// Close implements Client.
func (c *MinimalClient) Close() error {
	if c.ws == nil {
		return nil
	}
	c.cancel()
	c.ws.CloseNow()
	<-c.done
	return nil
}
