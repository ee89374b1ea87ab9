package conn_test

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
)

// A Reconnect asked for while a session is being authenticated is not
// answered by that session, which was dialed before the request: a newer
// one replaces it. (Before the fix the request was taken as answered and
// Reconnect waited for a session that never came.)
func TestReconnectDuringTheHandshake(t *testing.T) {
	var target atomic.Pointer[conn.Conn]
	var auths atomic.Int64
	reconnected := make(chan error, 1)
	srv := newServer(t, &directustest.Options{OnFrame: func(f directustest.Frame) {
		if !f.Inbound || !bytes.Contains(f.Data, []byte(`"type":"auth"`)) || auths.Add(1) != 1 {
			return
		}
		// The first session is between its dial and its auth reply.
		c := target.Load()
		go func() { reconnected <- c.Reconnect(ctxT(t)) }()
		for deadline := time.Now().Add(5 * time.Second); c.ReconnectRequests() == 0; {
			if time.Now().After(deadline) {
				t.Error("Reconnect did not register its request")
				return
			}
			time.Sleep(time.Millisecond) // polling a counter; there is no signal for it
		}
	}})
	c, err := conn.New(fast(conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	target.Store(c)
	if err := c.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-reconnected; err != nil {
		t.Fatalf("Reconnect asked for during the handshake: %v", err)
	}
	if id := c.Session().ID(); id < 2 {
		t.Fatalf("still on session %d", id)
	}
	if n := auths.Load(); n < 2 {
		t.Fatalf("%d handshakes, want a second one", n)
	}
}
