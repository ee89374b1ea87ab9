// Command graphqlreplica keeps a typed, live replica of "posts" over
// Directus's GraphQL subscriptions endpoint (/graphql) instead of the
// REST-style /websocket, and shows that it stays equal to the server,
// through random writes and a server restart.
//
// By default it starts an embedded Directus (directustest) with /graphql
// on, writes random creates, batch updates and deletes for -duration,
// restarts the server half-way, and compares the replica with the server's
// rows at the end (exit 1 if they differ).
//
//	go run ./examples/graphqlreplica -duration 5s
//	go run ./examples/graphqlreplica -url http://127.0.0.1:8055 -token <static token> -duration 30s
//
// Against a real Directus nothing is written: the replica follows what
// others write, and is compared with GET /items/posts?limit=-1 at the end.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/graphql"
	"github.com/e41af43e/directus-realtime/store"
)

// Post is a row of "posts".
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

type config struct {
	URL      string
	Token    string
	Duration time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.URL, "url", "", "base URL of a real Directus (default: an embedded server)")
	flag.StringVar(&cfg.Token, "token", "", "static token (with -url)")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long to run")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("graphqlreplica", "err", err)
		os.Exit(1)
	}
}

var errDiffers = errors.New("the replica differs from the server")

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	log := slog.New(slog.NewTextHandler(stdout, nil))
	baseURL, token := cfg.URL, cfg.Token
	var srv *directustest.Server
	if baseURL == "" {
		srv = directustest.NewServer(&directustest.Options{GraphQL: true})
		defer srv.Close()
		baseURL, token = srv.URL(), directustest.AdminToken
		log.Info("embedded Directus started", "url", baseURL)
	}

	m, err := graphql.New(&graphql.Config{URL: baseURL, Auth: conn.Auth{Token: token}, Logger: log,
		OnStateChange: func(sc conn.StateChange) { log.Info("connection", "state", sc.To) }})
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}

	posts, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }, Logger: log})
	if err != nil {
		return err
	}
	defer posts.Close()
	// Replicate subscribes to posts_mutated, reads the snapshot over REST
	// and feeds both, in order, to the store through its Handle method;
	// after every reconnect it does it again (an init with Resync set).
	sub, err := m.Replicate(ctx, graphql.ReplicaOptions{
		Collection: "posts", Fields: []string{"id", "title", "status", "views"},
		Persistent: true, ReconcileInterval: time.Minute,
	}, posts)
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	if err := posts.WaitSynced(ctx); err != nil {
		return err
	}
	log.Info("replica synced", "rows", posts.Len())

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	if srv != nil {
		writeAndRestart(runCtx, srv, log)
	}
	<-runCtx.Done()

	checkCtx, cancelCheck := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelCheck()
	var rows []Post
	if srv != nil {
		b, _ := json.Marshal(srv.Items("posts"))
		err = json.Unmarshal(b, &rows)
	} else {
		// A write that emitted no event (raw SQL, a Flow) shows up only
		// in a re-read: resync first, then compare with REST.
		if err := sub.Resync(checkCtx); err != nil {
			return err
		}
		rows, err = readPosts(checkCtx, baseURL, token)
	}
	if err != nil {
		return err
	}
	want := map[int64]Post{}
	for _, p := range rows {
		want[p.ID] = p
	}
	if err := posts.WaitFor(checkCtx, func() bool { return reflect.DeepEqual(posts.Snapshot(), want) }); err != nil {
		log.Error("replica differs from the server", "rows", posts.Len(), "server_rows", len(want))
		return errDiffers
	}
	log.Info("replica equals the server", "rows", len(want), "events", posts.Stats().Events, "resyncs", posts.Stats().Resyncs)
	return nil
}

// writeAndRestart writes at random until ctx is done, restarting the
// embedded server half-way.
func writeAndRestart(ctx context.Context, srv *directustest.Server, log *slog.Logger) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	deadline, _ := ctx.Deadline()
	restartAt := time.Now().Add(time.Until(deadline) / 2)
	restarted := false
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !restarted && time.Now().After(restartAt) {
			restarted = true
			log.Info("restarting the server")
			srv.Restart()
		}
		rows := srv.Items("posts")
		var err error
		switch op := rng.IntN(10); {
		case op < 4 || len(rows) < 3:
			_, err = srv.Create("posts", map[string]any{"title": fmt.Sprintf("p%d", rng.IntN(1000)), "status": "draft", "views": rng.IntN(100)},
				map[string]any{"title": "batch", "status": "draft", "views": 0})
		case op < 8:
			keys := []any{rows[rng.IntN(len(rows))]["id"], rows[rng.IntN(len(rows))]["id"]}
			_, err = srv.Update("posts", keys, map[string]any{"status": "published", "views": rng.IntN(1000)})
		default:
			err = srv.Delete("posts", rows[rng.IntN(len(rows))]["id"])
		}
		if err != nil {
			log.Warn("write failed", "err", err)
		}
	}
}

func readPosts(ctx context.Context, base, token string) ([]Post, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/items/posts?limit=-1", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /items/posts: HTTP %d", resp.StatusCode)
	}
	var env struct{ Data []Post }
	return env.Data, json.NewDecoder(resp.Body).Decode(&env)
}
