package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The /graphql wire as docs/PROTOCOL.md §13 records it, frame by frame,
// against both targets: what directustest must reproduce and package
// graphql relies on.

type gqlWire struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialGQL(ctx context.Context, t *testing.T, srv Server) *gqlWire {
	t.Helper()
	u := "ws" + strings.TrimPrefix(srv.URL(), "http") + "/graphql"
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	if ws.Subprotocol() != "graphql-transport-ws" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	return &gqlWire{t: t, ws: ws}
}

func (w *gqlWire) send(ctx context.Context, frame string) {
	w.t.Helper()
	if err := w.ws.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		w.t.Fatalf("write %s: %v", frame, err)
	}
}

// read returns the next frame as a map, or the close status.
func (w *gqlWire) read(ctx context.Context) (map[string]any, websocket.StatusCode, string) {
	w.t.Helper()
	_, b, err := w.ws.Read(ctx)
	if err != nil {
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return nil, ce.Code, ce.Reason
		}
		w.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		w.t.Fatalf("frame is not JSON: %s", b)
	}
	return m, 0, ""
}

func (w *gqlWire) expectClose(ctx context.Context, code websocket.StatusCode, reason string) {
	w.t.Helper()
	for {
		m, c, r := w.read(ctx)
		if m != nil {
			continue
		}
		if c != code || r != reason {
			w.t.Fatalf("closed with %d %q, want %d %q", c, r, code, reason)
		}
		return
	}
}

func (w *gqlWire) expectType(ctx context.Context, typ string) map[string]any {
	w.t.Helper()
	m, c, r := w.read(ctx)
	if m == nil {
		w.t.Fatalf("closed with %d %q, want a %s frame", c, r, typ)
	}
	if m["type"] != typ {
		w.t.Fatalf("got %v, want type %s", m, typ)
	}
	return m
}

func (w *gqlWire) init(ctx context.Context, token string) {
	w.t.Helper()
	w.send(ctx, fmt.Sprintf(`{"type":"connection_init","payload":{"access_token":%q}}`, token))
	w.expectType(ctx, "connection_ack")
}

func TestGraphQLWire(t *testing.T) { run(t, scenarioGraphQLWire) }

func scenarioGraphQLWire(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	must(t, srv.Reset(ctx))
	cr := tg.Creds()
	wctx, cancel := within(ctx, eventTimeout)
	defer cancel()

	t.Run("no token", func(t *testing.T) {
		w := dialGQL(wctx, t, srv)
		w.send(wctx, `{"type":"connection_init"}`)
		w.expectClose(wctx, 4403, "Forbidden")
	})
	t.Run("bad token", func(t *testing.T) {
		w := dialGQL(wctx, t, srv)
		start := time.Now()
		w.send(wctx, `{"type":"connection_init","payload":{"access_token":"bad"}}`)
		m := w.expectType(wctx, "auth")
		if e, _ := m["error"].(map[string]any); m["status"] != "error" || e["code"] != "AUTH_FAILED" {
			t.Fatalf("auth frame %v", m)
		}
		w.expectClose(wctx, 4408, "Connection initialisation timeout")
		if d := time.Since(start); d < 2*time.Second {
			t.Fatalf("closed after %v, want graphql-ws's 3 s init timeout", d)
		}
	})
	t.Run("frame before the ack", func(t *testing.T) {
		w := dialGQL(wctx, t, srv)
		w.send(wctx, `{"type":"ping"}`)
		w.expectClose(wctx, 4403, "Forbidden")
	})
	t.Run("subscribe and events", func(t *testing.T) {
		w := dialGQL(wctx, t, srv)
		w.init(wctx, cr.AdminToken)
		w.send(wctx, `{"id":"a","type":"subscribe","payload":{"query":"subscription { posts_mutated { key event data { id title views } } }"}}`)
		w.send(wctx, `{"id":"b","type":"subscribe","payload":{"query":"subscription { posts_mutated(event: delete) { event key } }"}}`)
		w.send(wctx, `{"type":"ping"}`)
		w.expectType(wctx, "pong")
		ps, err := srv.REST().CreatePosts(wctx, Post{Title: "a", Views: 1}, Post{Title: "b"})
		must(t, err)
		for _, p := range ps {
			m := w.expectType(wctx, "next")
			want := fmt.Sprintf(`{"data":{"posts_mutated":{"key":"%d","event":"create","data":{"id":"%d","title":"%s","views":%d}}}}`, p.ID, p.ID, p.Title, p.Views)
			if got, _ := json.Marshal(m["payload"]); m["id"] != "a" || !jsonEqual(got, []byte(want)) {
				t.Fatalf("create: %v, want id a and %s", m, want)
			}
		}
		must(t, srv.REST().DeletePosts(wctx, ps[0].ID))
		seen := map[string]bool{}
		for range 2 {
			m := w.expectType(wctx, "next")
			id, _ := m["id"].(string)
			got, _ := json.Marshal(m["payload"])
			want := fmt.Sprintf(`{"data":{"posts_mutated":{"key":"%d","event":"delete","data":null}}}`, ps[0].ID)
			if id == "b" {
				want = fmt.Sprintf(`{"data":{"posts_mutated":{"event":"delete","key":"%d"}}}`, ps[0].ID)
			}
			if !jsonEqual(got, []byte(want)) {
				t.Fatalf("delete for %s: %s, want %s", id, got, want)
			}
			seen[id] = true
		}
		if !seen["a"] || !seen["b"] {
			t.Fatalf("deletes went to %v, want a and b", seen)
		}
		w.send(wctx, `{"id":"a","type":"subscribe","payload":{"query":"subscription { posts_mutated { key } }"}}`)
		w.expectClose(wctx, 4409, "Subscriber for a already exists")
	})
	t.Run("refusals", func(t *testing.T) {
		w := dialGQL(wctx, t, srv)
		w.init(wctx, cr.ReaderToken)
		for id, c := range map[string]struct{ query, message string }{
			"1": {`subscription { tags_mutated { key } }`, `Cannot query field "tags_mutated" on type "Subscription".`},
			"2": {`subscription { posts_mutated(filter: {id: {_eq: 1}}) { key } }`, `Unknown argument "filter" on field "Subscription.posts_mutated".`},
			"3": {`subscription { posts_mutated { key data { nope } } }`, `Cannot query field "nope" on type "posts".`},
			"4": {`subscription { posts_mutated(event: insert) { key } }`, `Value "insert" does not exist in "EventEnum" enum.`},
		} {
			b, _ := json.Marshal(map[string]any{"id": id, "type": "subscribe", "payload": map[string]string{"query": c.query}})
			w.send(wctx, string(b))
			m := w.expectType(wctx, "error")
			errs, _ := m["payload"].([]any)
			first, _ := func() (map[string]any, bool) {
				if len(errs) == 0 {
					return nil, false
				}
				e, ok := errs[0].(map[string]any)
				return e, ok
			}()
			msg, _ := first["message"].(string)
			// Directus may add a suggestion ("Did you mean …?").
			if m["id"] != id || !strings.HasPrefix(msg, strings.TrimSuffix(c.message, ".")) {
				t.Errorf("%s: %v, want id %s and %q", c.query, m, id, c.message)
			}
		}
	})
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
