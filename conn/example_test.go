package conn_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/protocol"
)

// A Conn on its own: subscribe in the OnConnect hook, so that the
// subscription is restored on every new session, and read the frames.
func Example() {
	srv := directustest.NewServer(nil)
	defer srv.Close()

	frames := make(chan *protocol.Message, 10)
	c, err := conn.New(&conn.Config{
		URL:  srv.URL(), // http://host:port; "/websocket" is appended
		Auth: conn.Auth{Token: directustest.AdminToken},
		OnConnect: func(s *conn.Session, reason conn.ConnectReason) {
			_ = s.Send(s.Context(), protocol.SubscribeMessage{Collection: "posts", UID: "posts", Query: &protocol.Query{Fields: []string{"id", "title"}}})
		},
		OnSubscription: func(m *protocol.Message) { frames <- m },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}
	init := <-frames
	fmt.Println(init.Event, init.UID, string(init.Data))

	_, _ = srv.Create("posts", map[string]any{"title": "hello"})
	ev := <-frames
	fmt.Println(ev.Event, ev.UID, string(ev.Data))
	// Output:
	// init posts []
	// create posts [{"id":1,"title":"hello"}]
}

// Items requests over the WebSocket, with typed errors.
func ExampleConn_Items() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	c, _ := conn.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}})
	defer c.Close()
	if err := c.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}
	reply, err := c.Items(context.Background(), protocol.ItemsMessage{
		Collection: "posts", Action: protocol.ActionCreate,
		Data:  map[string]any{"title": "via websocket"},
		Query: &protocol.Query{Fields: []string{"id", "title"}},
	})
	fmt.Println(string(reply.Data), err)

	_, err = c.Items(context.Background(), protocol.ItemsMessage{Collection: "directus_users", Action: protocol.ActionRead})
	var se *protocol.ServerError
	fmt.Println(errors.Is(err, protocol.ErrInvalidCollection), errors.As(err, &se) && se.Type == "items")
	// Output:
	// {"id":1,"title":"via websocket"} <nil>
	// true true
}

// Typed errors for a rejected login.
func ExampleServerError() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	c, _ := conn.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Email: directustest.AdminEmail, Password: "wrong"}})
	defer c.Close()
	err := c.Connect(context.Background())
	fmt.Println(errors.Is(err, protocol.ErrAuthFailed))
	fmt.Println(err)
	// Output:
	// true
	// directus: auth error AUTH_FAILED: Authentication handshake failed.
}
