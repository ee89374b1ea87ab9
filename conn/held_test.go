package conn_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/protocol"
)

// TestFloodWhileHeldIsBounded: subscription frames that arrive while the
// session holds them back (here after TOKEN_EXPIRED, while the server never
// answers the re-authentication) are bounded: past 16 MiB the client drops
// the session rather than buffer a flood for as long as AuthTimeout lasts
// (Config.MaxHeldBytes, here 16 MiB).
func TestFloodWhileHeldIsBounded(t *testing.T) {
	// What the client may hold, plus what socket buffers hold on the way
	// (slack), is what the server can write before the session is dropped;
	// the flood is well above that. The quick loop holds less.
	maxHeld := int64(16 << 20)
	if testing.Short() {
		maxHeld = 4 << 20
	}
	const slack = 8 << 20
	flood := int(maxHeld) + 2*slack
	const size = 1 << 10
	type outcome struct {
		sent     int
		complete bool
	}
	result := make(chan outcome, 1)
	url := misbehave(t, func(ctx context.Context, ws *websocket.Conn) {
		if answerAuth(ctx, ws) != nil {
			return
		}
		// The client pings once it is connected: answer, then expire its
		// token and flood it while it waits for a re-authentication reply
		// that never comes.
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var m struct {
				Type string          `json:"type"`
				UID  json.RawMessage `json:"uid"`
			}
			if json.Unmarshal(b, &m) == nil && m.Type == "ping" {
				if ws.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"pong","uid":%s}`, m.UID)) != nil {
					return
				}
				break
			}
		}
		if ws.Write(ctx, websocket.MessageText, []byte(`{"type":"auth","status":"error","error":{"code":"TOKEN_EXPIRED","message":"Token expired."}}`)) != nil {
			return
		}
		data := strings.Repeat("y", size)
		sent := 0
		for i := 0; sent < flood; i++ {
			frame := fmt.Appendf(nil, `{"type":"subscription","event":"create","uid":"s","data":[{"id":%d,"t":%q}]}`, i, data)
			if ws.Write(ctx, websocket.MessageText, frame) != nil {
				result <- outcome{sent: sent}
				return
			}
			sent += len(frame)
		}
		result <- outcome{sent: sent, complete: true}
		<-ctx.Done()
	})
	var delivered atomic.Int64
	c, err := conn.New(&conn.Config{URL: url, Auth: conn.Auth{Token: "t"}, PingInterval: -1, AuthTimeout: time.Minute, MaxHeldBytes: maxHeld,
		Backoff:        conn.Backoff{Initial: time.Minute}, // one session only
		OnSubscription: func(*protocol.Message) { delivered.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The flood takes its time under the race detector on a loaded
	// machine: the state watch lasts as long as the flood may.
	watch, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	states := c.WatchState(watch)
	if err := c.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	var got outcome
	select {
	case got = <-result:
	case <-time.After(2 * time.Minute):
		t.Fatal("flood neither completed nor cut")
	}
	t.Logf("the server wrote %d MiB of a %d MiB flood before the client dropped the session", got.sent>>20, flood>>20)
	if got.complete || got.sent > int(maxHeld)+slack {
		t.Fatalf("the client accepted %d MiB of frames it had to hold back", got.sent>>20)
	}
	sc := waitState(t, states, conn.StateReconnecting)
	if !errors.Is(sc.Err, protocol.ErrProtocol) {
		t.Fatalf("session ended by %v, want a protocol error", sc.Err)
	}
	if delivered.Load() != 0 {
		t.Fatalf("%d frames delivered before re-authentication", delivered.Load())
	}
}
