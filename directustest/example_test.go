package directustest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/directustest"
)

// exchange writes a frame (unless empty) and prints the next frame read.
func exchange(ctx context.Context, c *websocket.Conn, frame string) {
	if frame != "" {
		if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
			fmt.Println("write:", err)
			return
		}
	}
	_, data, err := c.Read(ctx)
	if err != nil {
		fmt.Println("read:", err)
		return
	}
	fmt.Println(string(data))
}

// A server with the seeded data model; a raw WebSocket client
// authenticates, subscribes and sees the event of a write made from Go.
func ExampleNewServer() {
	srv := directustest.NewServer(nil)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.WebSocketURL(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.CloseNow()

	exchange(ctx, c, `{"type":"auth","access_token":"`+directustest.AdminToken+`","uid":"a"}`)
	exchange(ctx, c, `{"type":"subscribe","collection":"posts","uid":42,"query":{"fields":["id","title"]}}`)
	if _, err := srv.Create("posts", map[string]any{"title": "hello", "status": "published"}); err != nil {
		fmt.Println(err)
		return
	}
	exchange(ctx, c, "")
	if err := srv.Delete("posts", "1"); err != nil { // as DELETE /items/posts/1 would
		fmt.Println(err)
		return
	}
	exchange(ctx, c, "")
	// Output:
	// {"type":"auth","status":"ok","uid":"a"}
	// {"type":"subscription","event":"init","data":[],"uid":"42"}
	// {"type":"subscription","event":"create","data":[{"id":1,"title":"hello"}],"uid":"42"}
	// {"type":"subscription","event":"delete","data":["1"],"uid":"42"}
}

// The REST subset can be driven with any HTTP client (or curl); its writes
// produce the same events.
func ExampleServer_URL() {
	srv := directustest.NewServer(nil)
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL()+"/items/posts", strings.NewReader(`{"title":"from REST"}`))
	req.Header.Set("Authorization", "Bearer "+directustest.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// 200 {"data":{"id":1,"title":"from REST","status":null,"views":null}}
}

// Quiet writes change the data without any event, like a Flow with "emit
// events" off; a client only notices on its next read.
func ExampleServer_Quiet() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.WebSocketURL()+"?access_token="+directustest.AdminToken, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.CloseNow()

	exchange(ctx, c, `{"type":"subscribe","collection":"posts","uid":"s","query":{"fields":["title"]}}`)
	if _, err := srv.Quiet().Create("posts", map[string]any{"title": "silent"}); err != nil {
		fmt.Println(err)
		return
	}
	exchange(ctx, c, `{"type":"ping","uid":"p"}`) // no event came before the pong
	exchange(ctx, c, `{"type":"items","collection":"posts","action":"read","query":{"fields":["title"]},"uid":1}`)
	fmt.Println(srv.Items("posts"))
	// Output:
	// {"type":"subscription","event":"init","data":[],"uid":"s"}
	// {"type":"pong","uid":"p"}
	// {"type":"items","data":[{"title":"silent"}],"uid":1}
	// [map[id:1 status:<nil> title:silent views:<nil>]]
}

// Faults: DropConnections cuts every socket like a crash (1006).
func ExampleServer_DropConnections() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.WebSocketURL()+"?access_token="+directustest.AdminToken, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.CloseNow()

	srv.DropConnections()
	_, _, err = c.Read(ctx)
	fmt.Println(websocket.CloseStatus(err) == -1, srv.ConnCount())
	// Output:
	// true 0
}

// ExpireTokens ends every JWT-based session at once, with Directus'
// follow-up: TOKEN_EXPIRED, then AUTH_TIMEOUT and a close unless the client
// re-authenticates within AuthTimeout.
func ExampleServer_ExpireTokens() {
	srv := directustest.NewServer(&directustest.Options{AuthTimeout: 100 * time.Millisecond})
	defer srv.Close()
	jwt, err := srv.IssueToken(directustest.AdminEmail, time.Hour)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.WebSocketURL(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.CloseNow()

	exchange(ctx, c, `{"type":"auth","access_token":"`+jwt+`"}`)
	srv.ExpireTokens()
	exchange(ctx, c, "")
	exchange(ctx, c, "")
	_, _, err = c.Read(ctx)
	fmt.Println(websocket.CloseStatus(err))
	// Output:
	// {"type":"auth","status":"ok"}
	// {"type":"auth","status":"error","error":{"code":"TOKEN_EXPIRED","message":"Token expired."}}
	// {"type":"auth","status":"error","error":{"code":"AUTH_TIMEOUT","message":"Authentication timed out."}}
	// StatusNoStatusRcvd
}
