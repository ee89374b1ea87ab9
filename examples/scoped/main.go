// Command scoped is a web server in which every request owns a scoped
// subscription: the subscription lives exactly as long as the request.
//
// GET /events?collection=posts is a Server-Sent-Events stream: the handler
// subscribes with the request's context and streams the collection's
// changes until the browser goes away, which cancels the context and so
// ends the subscription. GET / is a small page that shows the stream, and
// GET /debug/subscriptions lists the manager's active subscriptions, where
// each open page shows up and disappears when it is closed.
//
// By default an embedded Directus (directustest) is started and a writer
// goroutine changes posts every couple of seconds.
//
//	go run ./examples/scoped                  # then open http://127.0.0.1:8080/
//	go run ./examples/scoped -url http://127.0.0.1:8055 -token <static token>
//
// Against a real Directus nothing is written: change items in the Directus
// app and watch them arrive.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

//go:embed index.html
var page []byte

type config struct {
	Addr       string        // where the web server listens
	URL        string        // a real Directus; empty starts the embedded server
	Token      string        // its static token
	Duration   time.Duration // 0 runs until interrupted
	WriteEvery time.Duration // the embedded writer's pace; 0 turns it off

	// Hooks for the tests; nil in the program.
	listening   func(base string, srv *directustest.Server) // the server is up
	streamStart func(uid string)                            // a stream's subscription is live
	streamEnd   func(uid string)                            // a stream's subscription has ended
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "listen address of the web server")
	flag.StringVar(&cfg.URL, "url", "", "base URL of a real Directus, e.g. http://127.0.0.1:8055 (default: an embedded server)")
	flag.StringVar(&cfg.Token, "token", "", "static token of a Directus user (with -url)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (default: run until interrupted)")
	flag.DurationVar(&cfg.WriteEvery, "write-every", 2*time.Second, "pause between two writes on the embedded server; 0 writes nothing")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// An interrupt is a clean exit, even in the middle of the setup.
	if err := run(ctx, cfg, os.Stdout); err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("scoped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	log := slog.New(slog.NewTextHandler(stdout, nil))

	baseURL, token := cfg.URL, cfg.Token
	var srv *directustest.Server
	if baseURL == "" {
		srv = directustest.NewServer(nil)
		defer srv.Close()
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

	a := &app{m: m, log: log, streamStart: cfg.streamStart, streamEnd: cfg.streamEnd}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.page)
	mux.HandleFunc("GET /events", a.events)
	mux.HandleFunc("GET /debug/subscriptions", a.subscriptions)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	// -duration counts from here, once the server is ready to listen.
	var cancel context.CancelFunc
	if cfg.Duration > 0 {
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Every request's context derives from ctx: when the program stops,
		// open streams end and so do their subscriptions.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- hs.Serve(ln) })
	base := "http://" + ln.Addr().String()
	log.Info("open the page", "url", base+"/", "subscriptions", base+"/debug/subscriptions")
	if cfg.listening != nil {
		cfg.listening(base, srv)
	}

	if srv != nil && cfg.WriteEvery > 0 {
		wg.Go(func() { writer(ctx, srv, cfg.WriteEvery, log) })
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		cancel() // stops the writer
		wg.Wait()
		return fmt.Errorf("web server: %w", err)
	}
	log.Info("shutting down")
	shutdownCtx, cancelShutdown := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancelShutdown()
	err = hs.Shutdown(shutdownCtx)
	wg.Wait()
	return err
}

type app struct {
	m           *manager.Manager
	log         *slog.Logger
	seq         atomic.Int64
	streamStart func(string)
	streamEnd   func(string)
}

func (a *app) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(page)
}

// change is what the page receives for each event.
type change struct {
	Kind       string          `json:"kind"`
	Collection string          `json:"collection"`
	Resync     bool            `json:"resync,omitempty"`
	Rows       *int            `json:"rows,omitempty"` // for an init: how many rows it carried
	Data       json.RawMessage `json:"data,omitempty"` // items, or the keys of a delete
}

// events streams one collection's changes for as long as the client stays.
func (a *app) events(w http.ResponseWriter, r *http.Request) {
	collection := r.URL.Query().Get("collection")
	if collection == "" {
		collection = "posts"
	}
	ctx := r.Context()
	uid := fmt.Sprintf("sse-%d", a.seq.Add(1))

	// One writer at a time: the loop below and the keepalive.
	var mu sync.Mutex
	rc := http.NewResponseController(w)
	write := func(frame string) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := io.WriteString(w, frame); err != nil {
			return err
		}
		return rc.Flush()
	}
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return write(fmt.Sprintf("event: %s\ndata: %s\n\n", event, b))
	}

	// The loop is the subscription: it starts with the loop, lasts while
	// the request does (ctx), and breaking out of it unsubscribes. Two
	// pages on the same collection share one server subscription; each has
	// its own uid and init.
	started := false
	for ev, err := range a.m.Events(ctx, manager.SubscribeOptions{Collection: collection, UID: uid}) {
		if err != nil && !started {
			status := http.StatusBadGateway
			if errors.Is(err, protocol.ErrForbidden) || errors.Is(err, protocol.ErrInvalidCollection) {
				status = http.StatusForbidden
			}
			a.log.Warn("subscribe failed", "collection", collection, "err", err)
			http.Error(w, err.Error(), status)
			return
		}
		if err != nil {
			// The browser left, or the manager closed.
			a.log.Info("subscription ended", "uid", uid, "cause", err)
			break
		}
		if !started {
			started = true
			a.log.Info("client subscribed", "uid", uid, "collection", collection, "remote", r.RemoteAddr)
			if a.streamStart != nil {
				a.streamStart(uid)
			}
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			if send("hello", map[string]string{"uid": uid}) != nil {
				break
			}
			stop := keepalive(ctx, write)
			defer stop()
		}
		if send("change", toChange(ev)) != nil {
			// The client is gone but the request has not noticed yet.
			a.log.Info("subscription ended", "uid", uid, "cause", "write failed")
			break
		}
	}
	// The loop has unsubscribed by the time it returns.
	if started && a.streamEnd != nil {
		a.streamEnd(uid)
	}
}

// keepalive writes a comment now and then, which keeps proxies from
// closing an idle stream, until stop is called.
func keepalive(ctx context.Context, write func(string) error) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if write(": keepalive\n\n") != nil {
					return
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

func toChange(ev handlers.Event) change {
	c := change{Kind: ev.Kind.String(), Collection: ev.Collection, Resync: ev.Resync}
	if ev.Kind == handlers.KindInit {
		// The page only shows how many rows the init carried.
		rows, _ := handlers.Items[json.RawMessage](ev)
		n := len(rows)
		c.Rows = &n
		return c
	}
	c.Data = ev.Data
	return c
}

// subscriptionInfo is one line of /debug/subscriptions.
type subscriptionInfo struct {
	UID        string    `json:"uid"`
	Collection string    `json:"collection"`
	Persistent bool      `json:"persistent"`
	State      string    `json:"state"`
	Events     uint64    `json:"events"`
	Created    time.Time `json:"created"`
}

// subscriptions shows the manager's live subscriptions: one per open page.
func (a *app) subscriptions(w http.ResponseWriter, r *http.Request) {
	infos := a.m.ActiveSubscriptions()
	out := make([]subscriptionInfo, 0, len(infos))
	for _, in := range infos {
		out = append(out, subscriptionInfo{
			UID: in.UID, Collection: in.Collection, Persistent: in.Persistent,
			State: in.State.String(), Events: in.Stats.Events, Created: in.Created,
		})
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// writer changes posts on the embedded server now and then: it creates
// posts, flips their status and deletes some, with the same events as the
// REST API would send.
func writer(ctx context.Context, srv *directustest.Server, every time.Duration, log *slog.Logger) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rows := srv.Items("posts")
		var err error
		switch p := rand.IntN(10); {
		case len(rows) < 3 || p < 5:
			n++
			_, err = srv.Create("posts", map[string]any{"title": fmt.Sprintf("post %d", n), "status": "draft", "views": 0})
		case p < 8:
			row := rows[rand.IntN(len(rows))]
			status := "published"
			if row["status"] == "published" {
				status = "draft"
			}
			// A string key, as PATCH /items/posts/7 names it.
			_, err = srv.Update("posts", []any{fmt.Sprint(row["id"])}, map[string]any{"status": status})
		default:
			err = srv.Delete("posts", fmt.Sprint(rows[rand.IntN(len(rows))]["id"]))
		}
		if err != nil {
			log.Warn("write failed", "err", err)
		}
	}
}
