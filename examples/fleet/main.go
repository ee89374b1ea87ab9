// Command fleet shows a fleet of replicas fed by relays through NATS
// JetStream, and a leader failover under writes.
//
// By default everything runs in this process, with nothing installed: an
// embedded Directus (directustest), an embedded JetStream server, two
// relays (a leader and a standby, each with its own Directus and NATS
// connections) and several fleet replicas (store.Collection fed by
// relay.Source, each with its own NATS connection). A writer makes random
// changes through the REST API; halfway through, the leader is killed (its
// connections cut, no resignation) and the standby takes over. At the end
// every replica is compared with the server's rows; the program exits 1 if
// one differs.
//
//	go run ./examples/fleet
//	go run ./examples/fleet -url http://127.0.0.1:8055 -token <static token> -nats nats://127.0.0.1:4222 [-collection posts] [-write]
//
// Against a real Directus nothing is written unless -write is given (the
// writer then creates rows with a title and views, and only touches rows it
// created).
package main

import (
	"context"
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
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/natstest"
	"github.com/e41af43e/directus-realtime/internal/rest"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/relay"
	"github.com/e41af43e/directus-realtime/store"
)

type config struct {
	URL, Token string // a real Directus; empty starts the embedded one
	NATS       string // a real NATS URL; empty starts an embedded JetStream
	Collection string
	Write      bool
	Replicas   int
	Duration   time.Duration // of the writes, the failover in the middle
	LeaseTTL   time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.URL, "url", "", "base URL of a real Directus (default: an embedded server)")
	flag.StringVar(&cfg.Token, "token", "", "static token of a Directus user (with -url)")
	flag.StringVar(&cfg.NATS, "nats", "", "URL of a NATS server with JetStream (default: an embedded one)")
	flag.StringVar(&cfg.Collection, "collection", "posts", "collection to relay")
	flag.BoolVar(&cfg.Write, "write", false, "with -url: write to the real Directus (only rows the writer created)")
	flag.IntVar(&cfg.Replicas, "replicas", 4, "fleet replicas")
	flag.DurationVar(&cfg.Duration, "duration", 3*time.Second, "how long the writer runs; the leader is killed halfway")
	flag.DurationVar(&cfg.LeaseTTL, "lease-ttl", time.Second, "the relays' lease TTL")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		slog.Error("fleet", "err", err)
		os.Exit(1)
	}
}

// Row is a row of any collection, as JSON decodes it.
type Row = map[string]any

func rowKey(r Row) string { return keyText(r["id"]) }

func keyText(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

var errDiffers = errors.New("a replica differs from the server")

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if cfg.Replicas <= 0 {
		cfg.Replicas = 4
	}
	if cfg.Collection == "" {
		cfg.Collection = "posts"
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = time.Second
	}
	baseURL, token, write := cfg.URL, cfg.Token, cfg.Write
	if baseURL == "" {
		srv := directustest.NewServer(nil)
		defer srv.Close()
		baseURL, token, write = srv.URL(), directustest.AdminToken, true
		log.Info("embedded Directus started", "url", baseURL)
	}
	natsURL := cfg.NATS
	if natsURL == "" {
		ns, err := natstest.Start()
		if err != nil {
			return err
		}
		defer ns.Close()
		natsURL = ns.URL()
		log.Info("embedded JetStream started", "url", natsURL)
	}
	api := &rest.Client{Base: baseURL, Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
	w := &writer{api: api, collection: cfg.Collection, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	if write {
		for range 100 {
			if err := w.create(ctx); err != nil {
				return fmt.Errorf("seed: %w", err)
			}
		}
	}

	// Two relays: the first to claim the lease leads, the other stands by.
	cols := []relay.Collection{{Name: cfg.Collection}}
	var relays []*process
	for i := 1; i <= 2; i++ {
		p, err := startRelay(ctx, fmt.Sprintf("relay-%d", i), baseURL, token, natsURL, cols, cfg.LeaseTTL, log)
		if err != nil {
			return err
		}
		defer p.kill()
		relays = append(relays, p)
		if i == 1 {
			if err := p.waitLeading(ctx, 30*time.Second); err != nil {
				return err
			}
			log.Info("leader elected", "relay", p.id)
		}
		select {
		case <-p.r.Ready():
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	// The fleet: replicas fed by the bucket, not by Directus.
	var replicas []*store.Collection[string, Row]
	var follows sync.WaitGroup
	fctx, stopFleet := context.WithCancel(context.Background())
	defer func() { stopFleet(); follows.Wait() }()
	for i := range cfg.Replicas {
		nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		rows, err := store.New(store.Options[string, Row]{Key: rowKey})
		if err != nil {
			return err
		}
		defer rows.Close()
		src := relay.NewSource(js, relay.BucketName(cfg.Collection), nil)
		follows.Add(1)
		go func() {
			defer follows.Done()
			_ = rows.Follow(fctx, src)
		}()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = rows.WaitSynced(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("replica %d never synced: %w", i+1, err)
		}
		log.Info("fleet replica synced from the bucket", "replica", i+1, "rows", rows.Len())
		replicas = append(replicas, rows)
	}

	// Writes, and the leader's death in the middle of them.
	wctx, stopWrites := context.WithCancel(ctx)
	var writing sync.WaitGroup
	if write {
		writing.Add(1)
		go func() {
			defer writing.Done()
			w.run(wctx)
		}()
	}
	pause(ctx, cfg.Duration/2)
	killed := time.Now()
	relays[0].kill()
	log.Info("leader killed during writes", "relay", relays[0].id)
	if err := relays[1].waitLeading(ctx, 30*time.Second); err != nil {
		stopWrites()
		writing.Wait()
		return err
	}
	log.Info("standby took over", "relay", relays[1].id, "after", time.Since(killed).Round(time.Millisecond))
	pause(ctx, cfg.Duration/2)
	stopWrites()
	writing.Wait()
	if write {
		log.Info("writer stopped", "creates", w.creates, "updates", w.updates, "deletes", w.deletes, "failed", w.failed)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// Every replica must equal the server.
	var want []Row
	if err := api.Do(ctx, http.MethodGet, "/items/"+cfg.Collection+"?limit=-1", nil, &want); err != nil {
		return fmt.Errorf("read the server's rows: %w", err)
	}
	wantByKey := make(map[string]Row, len(want))
	for _, r := range want {
		wantByKey[rowKey(r)] = r
	}
	differ := 0
	for i, rows := range replicas {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := rows.WaitFor(cctx, func() bool { return reflect.DeepEqual(rows.Snapshot(), wantByKey) })
		cancel()
		if err != nil {
			differ++
			log.Error("fleet replica differs from the server", "replica", i+1, "rows", rows.Len(), "server_rows", len(wantByKey))
			continue
		}
		log.Info("fleet replica equals the server", "replica", i+1, "rows", rows.Len())
	}
	st := relays[1].r.Stats()
	log.Info("relay stats", "relay", relays[1].id, "puts", st.Puts, "deletes", st.Deletes, "unchanged", st.Unchanged, "conflicts", st.Conflicts)
	if differ > 0 {
		return errDiffers
	}
	log.Info("every replica equals the server", "replicas", len(replicas), "rows", len(wantByKey))
	return nil
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// process is a relay with its own connections, as a pod would have.
type process struct {
	id      string
	r       *relay.Relay
	m       *manager.Manager
	nc      *nats.Conn
	cancel  context.CancelFunc
	done    chan error
	leading chan bool
	once    sync.Once
}

func startRelay(ctx context.Context, id, url, token, natsURL string, cols []relay.Collection, ttl time.Duration, log *slog.Logger) (*process, error) {
	m, err := manager.New(&conn.Config{URL: url, Auth: conn.Auth{Token: token}}, nil)
	if err != nil {
		return nil, err
	}
	if err := m.Connect(ctx); err != nil {
		m.Close()
		return nil, err
	}
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		m.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	p := &process{id: id, m: m, nc: nc, done: make(chan error, 1), leading: make(chan bool, 16)}
	p.r, err = relay.New(m, js, cols, &relay.Options{ID: id, LeaseTTL: ttl, OnLeader: func(on bool) { p.leading <- on },
		Logger: log})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- p.r.Run(rctx) }()
	return p, nil
}

func (p *process) waitLeading(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case on := <-p.leading:
			if on {
				return nil
			}
		case err := <-p.done:
			return fmt.Errorf("%s stopped: %w", p.id, err)
		case <-t.C:
			return fmt.Errorf("%s did not become leader within %s", p.id, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// kill ends the relay as a crash would: connections first, no resignation.
func (p *process) kill() {
	p.once.Do(func() {
		p.nc.Close()
		p.m.Close()
		p.cancel()
		<-p.done
	})
}

// writer makes random creates, updates and deletes of rows it created.
type writer struct {
	api                               *rest.Client
	collection                        string
	rng                               *rand.Rand
	ids                               []any
	creates, updates, deletes, failed int
}

func (w *writer) create(ctx context.Context) error {
	var row Row
	err := w.api.Do(ctx, http.MethodPost, "/items/"+w.collection, Row{"title": "fleet " + strconv.Itoa(w.rng.IntN(1000)), "views": 0}, &row)
	if err != nil {
		return err
	}
	w.ids = append(w.ids, row["id"])
	w.creates++
	return nil
}

func (w *writer) run(ctx context.Context) {
	for ctx.Err() == nil {
		var err error
		switch n := w.rng.IntN(10); {
		case n < 3 || len(w.ids) < 10:
			err = w.create(ctx)
		case n < 8:
			id := w.ids[w.rng.IntN(len(w.ids))]
			err = w.api.Do(ctx, http.MethodPatch, "/items/"+w.collection+"/"+keyText(id), Row{"views": w.rng.IntN(1000)}, nil)
			w.updates++
		default:
			i := w.rng.IntN(len(w.ids))
			id := w.ids[i]
			w.ids = append(w.ids[:i], w.ids[i+1:]...)
			err = w.api.Do(ctx, http.MethodDelete, "/items/"+w.collection+"/"+keyText(id), nil, nil)
			w.deletes++
		}
		if err != nil && ctx.Err() == nil {
			w.failed++
		}
		pause(ctx, 2*time.Millisecond)
	}
}
