// Package hostile is a small WebSocket server for tests that play a
// misbehaving or failing Directus: each connection runs a script the test
// writes against a Conn, and the server counts what clients send, so that a
// test can assert that a client stays within its backoff budget however the
// server behaves. Only tests import it.
package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
)

// Server serves a script per WebSocket connection. Upgrades go to Script;
// plain HTTP requests go to HTTP, when set, before the upgrade (for
// redirects and refusals).
type Server struct {
	srv      *httptest.Server
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	upgrades atomic.Int64

	mu     sync.Mutex
	counts map[string]int
	change chan struct{}
}

// Script runs one connection; it returns when it is done with it (the
// connection is then closed without a close frame).
type Script func(ctx context.Context, c *Conn)

// New starts a server; it is closed when the test ends. http, when not nil,
// answers a request first: returning true means it handled the request
// (for instance with a redirect) and no upgrade follows.
func New(t testing.TB, http1 func(w http.ResponseWriter, r *http.Request) bool, script Script) *Server {
	t.Helper()
	s := &Server{counts: map[string]int{}, change: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if http1 != nil && http1(w, r) {
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		s.upgrades.Add(1)
		s.wg.Add(1)
		defer s.wg.Done()
		defer ws.CloseNow()
		ws.SetReadLimit(-1)
		script(s.ctx, &Conn{ws: ws, s: s, Request: r})
	}))
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and every script.
func (s *Server) Close() {
	s.cancel()
	s.srv.Close()
	s.wg.Wait()
}

// URL is the server's http:// base URL.
func (s *Server) URL() string { return s.srv.URL }

// Upgrades returns the number of WebSocket upgrades accepted.
func (s *Server) Upgrades() int { return int(s.upgrades.Load()) }

// Count returns how many frames of a type clients sent ("auth",
// "subscribe", "items", …; "" counts every frame).
func (s *Server) Count(typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[typ]
}

// WaitCount waits until Count(typ) reaches n or ctx ends.
func (s *Server) WaitCount(ctx context.Context, typ string, n int) error {
	for {
		s.mu.Lock()
		got, ch := s.counts[typ], s.change
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d %q frames of %d: %w", got, typ, n, ctx.Err())
		}
	}
}

func (s *Server) count(typ string) {
	s.mu.Lock()
	s.counts[typ]++
	s.counts[""]++
	close(s.change)
	s.change = make(chan struct{})
	s.mu.Unlock()
}

// Conn is one client connection of a script.
type Conn struct {
	ws      *websocket.Conn
	s       *Server
	Request *http.Request // the upgrade request
}

// Frame is one frame a client sent.
type Frame struct {
	Type string
	UID  json.RawMessage // as sent, null when absent
	Raw  []byte
}

// Read reads the next frame and counts it.
func (c *Conn) Read(ctx context.Context) (Frame, error) {
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	var head struct {
		Type string          `json:"type"`
		UID  json.RawMessage `json:"uid"`
	}
	_ = json.Unmarshal(b, &head)
	if head.UID == nil {
		head.UID = json.RawMessage("null")
	}
	c.s.count(head.Type)
	return Frame{Type: head.Type, UID: head.UID, Raw: b}, nil
}

// ReadType reads frames until one of type typ, answering the client's pings
// meanwhile.
func (c *Conn) ReadType(ctx context.Context, typ string) (Frame, error) {
	for {
		f, err := c.Read(ctx)
		if err != nil || f.Type == typ {
			return f, err
		}
		if f.Type == "ping" {
			if err := c.Sendf(ctx, `{"type":"pong","uid":%s}`, f.UID); err != nil {
				return f, err
			}
		}
	}
}

// Send writes one text frame.
func (c *Conn) Send(ctx context.Context, frame string) error {
	return c.ws.Write(ctx, websocket.MessageText, []byte(frame))
}

// Sendf writes one text frame built by fmt.Sprintf.
func (c *Conn) Sendf(ctx context.Context, format string, a ...any) error {
	return c.Send(ctx, fmt.Sprintf(format, a...))
}

// AcceptAuth reads the client's auth frame and answers it with "ok".
func (c *Conn) AcceptAuth(ctx context.Context) error {
	f, err := c.ReadType(ctx, "auth")
	if err != nil {
		return err
	}
	return c.Sendf(ctx, `{"type":"auth","status":"ok","uid":%s}`, f.UID)
}

// Serve answers what a client sends until ctx ends or the client leaves:
// auth ok, pong, an empty init for every subscribe, the unsubscribe
// acknowledgement, an empty items reply. A script calls it once it is done
// misbehaving.
func (c *Conn) Serve(ctx context.Context) {
	for {
		f, err := c.Read(ctx)
		if err != nil {
			return
		}
		switch f.Type {
		case "auth":
			err = c.Sendf(ctx, `{"type":"auth","status":"ok","uid":%s}`, f.UID)
		case "ping":
			err = c.Sendf(ctx, `{"type":"pong","uid":%s}`, f.UID)
		case "subscribe":
			err = c.Sendf(ctx, `{"type":"subscription","event":"init","data":[],"uid":%s}`, stringUID(f.UID))
		case "unsubscribe":
			err = c.Sendf(ctx, `{"type":"subscription","event":"unsubscribe","uid":%s}`, stringUID(f.UID))
		case "items":
			err = c.Sendf(ctx, `{"type":"items","data":[],"uid":%s}`, f.UID)
		}
		if err != nil {
			return
		}
	}
}

// CloseNow drops the connection without a close frame.
func (c *Conn) CloseNow() { _ = c.ws.CloseNow() }

// stringUID turns a uid into the string form Directus uses on subscription
// frames.
func stringUID(uid json.RawMessage) string {
	if len(uid) > 0 && uid[0] == '"' {
		return string(uid)
	}
	b, _ := json.Marshal(string(uid))
	return string(b)
}

// StringUID is the uid as Directus echoes it on subscription frames: always
// a JSON string.
func StringUID(uid json.RawMessage) string { return stringUID(uid) }
