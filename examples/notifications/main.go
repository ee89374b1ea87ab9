// Command notifications shows a persistent subscription outliving the
// page-scoped ones, as in the useDirectusRealtime composable's "global
// notifications" example.
//
// At start-up the app subscribes, persistently, to the creation of
// notifications (an event-only subscription: no data to load, just the new
// items). Then it simulates page navigations: like a Nuxt app's route
// guard, each navigation calls UnsubscribeAll, which ends the previous
// page's subscriptions, and the new page subscribes to what it shows. After
// each navigation a notification is created, and the persistent
// subscription delivers it. On the embedded server the server then
// restarts, and the persistent subscription comes back with the connection.
//
//	go run ./examples/notifications
//	go run ./examples/notifications -url http://127.0.0.1:8055 -token <static token>
//
// Against a real Directus the collection (-collection, default
// notifications) must exist with a "subject" field; each navigation
// creates one item in it, over the WebSocket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

type config struct {
	URL        string        // a real Directus; empty starts the embedded server
	Token      string        // its static token
	Collection string        // the notifications collection
	Pages      int           // how many navigations
	Every      time.Duration // pause between navigations
}

// Notification is an item of the notifications collection.
type Notification struct {
	ID      any    `json:"id"`
	Subject string `json:"subject"`
}

// A page and the subscriptions it makes while it is shown.
type page struct {
	path string
	subs []manager.SubscribeOptions
}

var pages = []page{
	{"/posts", []manager.SubscribeOptions{{
		Collection: "posts",
		Query:      &protocol.Query{Fields: []string{"id", "title"}, Filter: map[string]any{"status": map[string]any{"_eq": "published"}}},
	}}},
	{"/drafts", []manager.SubscribeOptions{{
		Collection: "posts",
		Query:      &protocol.Query{Fields: []string{"id", "title"}, Filter: map[string]any{"status": map[string]any{"_eq": "draft"}}},
	}}},
	{"/tags", []manager.SubscribeOptions{
		{Collection: "tags", Query: &protocol.Query{Fields: []string{"id", "name"}}},
		{Collection: "posts", Event: protocol.EventCreate}, // a "new posts" badge
	}},
}

func main() {
	var cfg config
	flag.StringVar(&cfg.URL, "url", "", "base URL of a real Directus, e.g. http://127.0.0.1:8055 (default: an embedded server)")
	flag.StringVar(&cfg.Token, "token", "", "static token of a Directus user (with -url)")
	flag.StringVar(&cfg.Collection, "collection", "notifications", "the notifications collection (with -url it must exist, with a subject field)")
	flag.IntVar(&cfg.Pages, "pages", 5, "number of page navigations")
	flag.DurationVar(&cfg.Every, "every", 700*time.Millisecond, "time spent on each page")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// An interrupt is a clean exit, even in the middle of the setup.
	if err := run(ctx, cfg, os.Stdout); err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("notifications", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	log := slog.New(slog.NewTextHandler(stdout, nil))
	if cfg.Collection == "" {
		cfg.Collection = "notifications"
	}
	baseURL, token := cfg.URL, cfg.Token
	var srv *directustest.Server
	if baseURL == "" {
		srv = directustest.NewServer(nil)
		defer srv.Close()
		err := srv.AddCollection(directustest.Collection{Name: cfg.Collection, KeyType: directustest.IntegerKey, Fields: []string{"id", "subject"}})
		if err != nil {
			return err
		}
		baseURL, token = srv.URL(), directustest.AdminToken
		log.Info("embedded Directus started", "url", baseURL)
	}

	m, err := manager.New(&conn.Config{URL: baseURL, Auth: conn.Auth{Token: token}, Logger: log}, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}

	// At start-up, once: the global notifications. Persistent, so that
	// UnsubscribeAll spares it; event-only (create), so its init carries no
	// data and every later event is one new notification.
	delivered := make(chan Notification, 64)
	var count atomic.Int64
	restored := make(chan struct{}, 1)
	global, err := m.Subscribe(ctx, manager.SubscribeOptions{
		Collection: cfg.Collection,
		UID:        "global-notifications",
		Event:      protocol.EventCreate,
		Persistent: true,
	}, handlers.Typed[Notification]{
		OnInit: func(ev handlers.Event, _ []Notification) error {
			// After a reconnect the manager restores the subscription and
			// delivers a fresh init with Resync set. Notifications created
			// while the connection was down are not replayed: an event-only
			// subscription has no state to catch up with.
			if ev.Resync {
				log.Info("notifications restored after a reconnect")
				select {
				case restored <- struct{}{}:
				default:
				}
			}
			return nil
		},
		OnCreate: func(ev handlers.Event, items []Notification) error {
			for _, n := range items {
				count.Add(1)
				log.Info("notification", "subject", n.Subject)
				select {
				case delivered <- n:
				default: // nobody is waiting for that many
				}
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", cfg.Collection, err)
	}
	log.Info("subscribed", "uid", global.UID(), "persistent", global.Persistent())

	// notify creates a notification over the WebSocket, as a backend job
	// would, and waits until the persistent subscription delivered it.
	sent := 0
	notify := func(subject string) error {
		_, err := m.Items(ctx, protocol.ItemsMessage{Collection: cfg.Collection, Action: protocol.ActionCreate, Data: map[string]any{"subject": subject}})
		if err != nil {
			return fmt.Errorf("create a notification: %w", err)
		}
		sent++
		timeout := time.NewTimer(30 * time.Second)
		defer timeout.Stop()
		for {
			select {
			case n := <-delivered:
				if n.Subject == subject {
					return nil
				}
			case <-timeout.C:
				return fmt.Errorf("notification %q was not delivered", subject)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}

	for i := range cfg.Pages {
		p := pages[i%len(pages)]
		// The route guard: leaving a page ends its subscriptions, all of
		// them but the persistent ones.
		ended := m.UnsubscribeAll()
		for _, opts := range p.subs {
			// Not persistent: the next navigation ends them (so would ctx).
			// A real page would render their events; here nothing does.
			if _, err := m.Subscribe(ctx, opts, handlers.Funcs{}); err != nil {
				return fmt.Errorf("page %s: %w", p.path, err)
			}
		}
		log.Info("navigated", "page", p.path, "ended", ended, "active", activeUIDs(m))

		if err := notify(fmt.Sprintf("notification %d, on %s", i+1, p.path)); err != nil {
			return err
		}
		if !m.HasSubscription(global.UID()) {
			return errors.New("the persistent subscription ended")
		}
		select {
		case <-time.After(cfg.Every): // time spent on the page, for a reader to follow
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	if srv != nil {
		// The server restarts; the connection comes back by itself and the
		// persistent subscription with it.
		log.Info("restarting the server")
		srv.Restart()
		select {
		case <-restored:
		case <-time.After(60 * time.Second):
			return errors.New("the persistent subscription was not restored")
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := notify("after the restart"); err != nil {
			return err
		}
	}

	// Every notification was awaited above, so the counts agree; say so in
	// words, and fail if they ever do not.
	if got := count.Load(); got != int64(sent) {
		return fmt.Errorf("%d notifications created, %d delivered", sent, got)
	}
	log.Info("ok: every notification delivered", "created", sent, "delivered", sent, "lost", 0)

	// Leaving the app: UnsubscribeAll ends the last page's subscriptions;
	// only Close (or Unsubscribe by uid) ends the persistent one.
	ended := m.UnsubscribeAll()
	log.Info("left the app", "page_subscriptions_unsubscribed", ended, "still_active", activeUIDs(m))
	return nil
}

func activeUIDs(m *manager.Manager) []string {
	var uids []string
	for _, in := range m.ActiveSubscriptions() {
		uids = append(uids, in.UID)
	}
	return uids
}
