package manager_test

import (
	"context"
	"fmt"
	"log"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

type Post struct {
	ID     int    `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
}

// connectManager starts a manager on the embedded server with the admin's
// static token, which is what a Go service would use against Directus.
func connectManager(srv *directustest.Server) *manager.Manager {
	m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}
	return m
}

// A live feed of published posts, newest first, as in the composable's
// "live feed" example.
func Example_liveFeed() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	m := connectManager(srv)
	defer m.Close()

	lines := make(chan string, 10)
	_, err := m.Subscribe(context.Background(), manager.SubscribeOptions{
		Collection: "posts",
		UID:        "live-feed",
		Query: &protocol.Query{
			Fields: []string{"id", "title", "status"},
			Filter: map[string]any{"status": map[string]any{"_eq": "published"}},
			Sort:   []string{"-id"},
		},
	}, handlers.Typed[Post]{
		OnInit: func(ev handlers.Event, posts []Post) error {
			lines <- fmt.Sprintf("feed starts with %d posts", len(posts))
			return nil
		},
		OnCreate: func(ev handlers.Event, posts []Post) error {
			for _, p := range posts {
				lines <- "new post: " + p.Title
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	// A batch create gives one create event per item; the draft does not
	// match the filter and produces none.
	_, _ = srv.Create("posts",
		map[string]any{"title": "Hello", "status": "published"},
		map[string]any{"title": "not yet", "status": "draft"},
		map[string]any{"title": "World", "status": "published"})
	for range 3 {
		fmt.Println(<-lines)
	}
	// Output:
	// feed starts with 0 posts
	// new post: Hello
	// new post: World
}

// Global notifications: a persistent subscription made once at start-up
// survives UnsubscribeAll, which ends the page-scoped ones, as in the
// composable's "global notifications" example.
func Example_globalNotifications() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	_ = srv.AddCollection(directustest.Collection{Name: "notifications", KeyType: directustest.IntegerKey, Fields: []string{"id", "subject"}})
	m := connectManager(srv)
	defer m.Close()

	notes := make(chan string, 10)
	_, err := m.Subscribe(context.Background(), manager.SubscribeOptions{
		Collection: "notifications",
		UID:        "global-notifications",
		Event:      protocol.EventCreate,
		Persistent: true,
	}, handlers.Typed[struct{ Subject string }]{
		OnCreate: func(ev handlers.Event, items []struct{ Subject string }) error {
			notes <- "notification: " + items[0].Subject
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	// A page subscribes to posts, then the user navigates away.
	if _, err := m.Subscribe(context.Background(), manager.SubscribeOptions{Collection: "posts"}, handlers.Funcs{}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("page subscriptions ended:", m.UnsubscribeAll())
	fmt.Println("still subscribed:", m.HasSubscription("global-notifications"))

	_, _ = srv.Create("notifications", map[string]any{"subject": "Your export is ready"})
	fmt.Println(<-notes)
	// Output:
	// page subscriptions ended: 1
	// still subscribed: true
	// notification: Your export is ready
}

// A chat channel: the messages of one channel, for as long as the user stays
// in it. The Scope plays the component: closing it leaves the channel.
func Example_chatChannel() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	_ = srv.AddCollection(directustest.Collection{Name: "messages", KeyType: directustest.IntegerKey, Fields: []string{"id", "channel", "text"}})
	m := connectManager(srv)
	defer m.Close()

	type message struct {
		Channel string `json:"channel"`
		Text    string `json:"text"`
	}
	room := m.NewScope(context.Background())
	said := make(chan string, 10)
	_, err := room.Subscribe(context.Background(), manager.SubscribeOptions{
		Collection: "messages",
		UID:        "chat-general",
		Query:      &protocol.Query{Filter: map[string]any{"channel": map[string]any{"_eq": "general"}}},
	}, handlers.Typed[message]{
		OnCreate: func(ev handlers.Event, msgs []message) error {
			for _, msg := range msgs {
				said <- msg.Channel + ": " + msg.Text
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, _ = srv.Create("messages", map[string]any{"channel": "random", "text": "not for us"})
	_, _ = srv.Create("messages", map[string]any{"channel": "general", "text": "hi all"})
	fmt.Println(<-said)

	fmt.Println("left the channel, subscriptions ended:", room.Close())
	fmt.Println("still subscribed:", m.HasSubscription("chat-general"))
	// Output:
	// general: hi all
	// left the channel, subscriptions ended: 1
	// still subscribed: false
}

// Watching the connection, as the composable's reactive isConnected.
func ExampleManager_WatchState() {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	m := connectManager(srv)
	defer m.Close()

	states := m.WatchState(context.Background())
	fmt.Println("connected:", m.IsConnected())
	srv.DropConnections() // the server crashes; the manager reconnects
	for sc := range states {
		fmt.Println(sc.From, "->", sc.To)
		if sc.To == conn.StateConnected {
			break
		}
	}
	fmt.Println("connected:", m.IsConnected())
	// Output:
	// connected: true
	// connected -> reconnecting
	// reconnecting -> connected
	// connected: true
}
