package conn_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/conn"
)

// A session ended by an oversize frame must close its socket. It used to
// stay open (coder/websocket only sends a close frame on ErrMessageTooBig),
// and a server that kept writing blocked once the socket buffers were full.
func TestOversizeFrameClosesTheSocket(t *testing.T) {
	serverDone := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if answerAuth(ctx, ws) != nil {
			return
		}
		// One oversize frame, then small frames until the client's socket
		// is gone (or the test gives up).
		big := `{"type":"items","data":"` + strings.Repeat("x", 8192) + `"}`
		err = ws.Write(ctx, websocket.MessageText, []byte(big))
		for err == nil {
			err = ws.Write(ctx, websocket.MessageText, []byte(`{"type":"whatever","data":"`+strings.Repeat("y", 1024)+`"}`))
		}
		serverDone <- err
	}))
	defer srv.Close()
	defer cancel()

	c, err := conn.New(&conn.Config{URL: srv.URL, Auth: conn.Auth{Token: "t"}, ReadLimit: 4096, PingInterval: -1, Backoff: conn.Backoff{Initial: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	states := c.WatchState(ctxT(t))
	if err := c.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if sc := waitState(t, states, conn.StateReconnecting); !errors.Is(sc.Err, conn.ErrFrameTooLarge) {
		t.Fatalf("session ended by %v", sc.Err)
	}
	select {
	case err := <-serverDone:
		if errors.Is(err, context.Canceled) {
			t.Fatalf("server write ended by the test, not by the client: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the ended session's socket is still open: the server can still write into it")
	}
}
