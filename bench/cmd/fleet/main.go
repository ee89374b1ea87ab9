// Command fleet measures what the relay saves and costs (issue 12): N
// fleet replicas of one collection fed by one relay through JetStream,
// against N direct replicas that each hold their own Directus connection
// and subscription. Everything runs in this process: the embedded Directus
// (directustest) and an embedded JetStream (nats-server).
//
//	go run ./bench/cmd/fleet                          # 50 replicas, 10,000 rows
//	go run ./bench/cmd/fleet -replicas 5 -rows 500    # the short form CI runs
//
// It prints, for both set-ups: the Directus connections and subscriptions,
// the rows Directus serves in inits after it restarts, the cold start of
// one more replica (from the bucket, from Directus), the latency from a
// Directus write to its apply in a replica (p50, p99; the relay's part is
// the difference), and the relay's heap and the process CPU per event.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/natstest"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/relay"
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
	Replicas, Rows, Updates int
}

// Result is one set-up's figures.
type Result struct {
	Name                 string
	Conns, Subs          int
	InitRowsAfterRestart int64
	ColdStart            time.Duration
	P50, P99             time.Duration
	CPUPerEvent          time.Duration // process CPU (all replicas, Directus, JetStream) per write
	RelayHeap            uint64        // the relay's heap, fleet only
	RelayFirstWrite      time.Duration // from the relay's start to its bucket complete, fleet only
}

func main() {
	var cfg config
	flag.IntVar(&cfg.Replicas, "replicas", 50, "replicas in each set-up")
	flag.IntVar(&cfg.Rows, "rows", 10000, "rows of the collection")
	flag.IntVar(&cfg.Updates, "updates", 300, "single-row updates timed for the latency")
	flag.Parse()
	if _, err := run(context.Background(), cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

// initCounter counts the rows of the init frames Directus sends.
type initCounter struct{ rows atomic.Int64 }

func (c *initCounter) frame(f directustest.Frame) {
	if f.Inbound || !strings.Contains(string(f.Data[:min(len(f.Data), 80)]), `"event":"init"`) {
		return
	}
	var m struct {
		Data []json.RawMessage `json:"data"`
	}
	if json.Unmarshal(f.Data, &m) == nil {
		c.rows.Add(int64(len(m.Data)))
	}
}

func run(ctx context.Context, cfg config, out io.Writer) ([]Result, error) {
	fmt.Fprintf(out, "fleet benchmark: %d replicas of a %d-row collection, %d timed updates, GOMAXPROCS %d\n",
		cfg.Replicas, cfg.Rows, cfg.Updates, runtime.GOMAXPROCS(0))
	var results []Result
	for _, fleet := range []bool{false, true} {
		r, err := measure(ctx, cfg, fleet)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
		runtime.GC()
	}
	fmt.Fprintf(out, "\n| | direct (%d × Directus) | fleet (1 relay + JetStream) |\n|---|---|---|\n", cfg.Replicas)
	d, f := results[0], results[1]
	fmt.Fprintf(out, "| Directus connections / subscriptions | %d / %d | %d / %d |\n", d.Conns, d.Subs, f.Conns, f.Subs)
	fmt.Fprintf(out, "| rows Directus serves in inits after its restart | %d | %d |\n", d.InitRowsAfterRestart, f.InitRowsAfterRestart)
	fmt.Fprintf(out, "| cold start of one more replica | %v (from Directus) | %v (from the bucket) |\n", d.ColdStart.Round(time.Millisecond), f.ColdStart.Round(time.Millisecond))
	fmt.Fprintf(out, "| write → apply in a replica, p50 / p99 | %v / %v | %v / %v |\n", d.P50.Round(10*time.Microsecond), d.P99.Round(10*time.Microsecond), f.P50.Round(10*time.Microsecond), f.P99.Round(10*time.Microsecond))
	fmt.Fprintf(out, "| process CPU per write (all replicas, Directus, JetStream) | %v | %v |\n", d.CPUPerEvent.Round(time.Microsecond), f.CPUPerEvent.Round(time.Microsecond))
	fmt.Fprintf(out, "| relay heap (its replica and its view of the bucket) | – | %.1f MiB |\n", float64(f.RelayHeap)/(1<<20))
	fmt.Fprintf(out, "| relay: subscribe, then write every row into the empty bucket | – | %v |\n", f.RelayFirstWrite.Round(time.Millisecond))
	fmt.Fprintf(out, "\nlatency the relay adds: p50 %v, p99 %v\n", (f.P50 - d.P50).Round(10*time.Microsecond), (f.P99 - d.P99).Round(10*time.Microsecond))
	return results, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func newPosts() *store.Collection[int64, Post] {
	c, _ := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }})
	return c
}

func measure(ctx context.Context, cfg config, fleet bool) (Result, error) {
	res := Result{Name: "direct"}
	if fleet {
		res.Name = "fleet"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	counter := &initCounter{}
	srv := directustest.NewServer(&directustest.Options{OnFrame: counter.frame, DefaultLimit: -1})
	defer srv.Close()
	rows := make([]map[string]any, cfg.Rows)
	for i := range rows {
		rows[i] = map[string]any{"title": "post " + strconv.Itoa(i), "status": "published", "views": i}
	}
	if _, err := srv.Quiet().Create("posts", rows...); err != nil {
		return res, err
	}
	var closers []func()
	defer func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}()
	newManager := func() (*manager.Manager, error) {
		m, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken},
			Backoff: conn.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}}, nil)
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { m.Close() })
		return m, m.Connect(ctx)
	}
	var ns *natstest.Server
	var js func() (jetstream.JetStream, error)
	var rl *relay.Relay
	if fleet {
		var err error
		if ns, err = natstest.Start(); err != nil {
			return res, err
		}
		closers = append(closers, ns.Close)
		js = func() (jetstream.JetStream, error) {
			nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1))
			if err != nil {
				return nil, err
			}
			closers = append(closers, nc.Close)
			return jetstream.New(nc)
		}
		before := heapInuse()
		m, err := newManager()
		if err != nil {
			return res, err
		}
		j, err := js()
		if err != nil {
			return res, err
		}
		rl, err = relay.New(m, j, []relay.Collection{{Name: "posts"}}, &relay.Options{ID: "bench"})
		if err != nil {
			return res, err
		}
		rctx, rcancel := context.WithCancel(ctx)
		t0 := time.Now()
		done := make(chan error, 1)
		go func() { done <- rl.Run(rctx) }()
		closers = append(closers, func() { rcancel(); <-done })
		select {
		case <-rl.Ready():
		case err := <-done:
			return res, err
		}
		res.RelayFirstWrite = time.Since(t0)
		res.RelayHeap = heapInuse() - before
	}

	// One replica, started the way the set-up starts them.
	var follows sync.WaitGroup
	fctx, fcancel := context.WithCancel(ctx)
	closers = append(closers, func() { fcancel(); follows.Wait() })
	start := func() (*store.Collection[int64, Post], error) {
		c := newPosts()
		closers = append(closers, func() { c.Close() })
		if !fleet {
			m, err := newManager()
			if err != nil {
				return nil, err
			}
			_, err = c.Subscribe(ctx, m, manager.SubscribeOptions{Collection: "posts", Persistent: true})
			return c, err
		}
		j, err := js()
		if err != nil {
			return nil, err
		}
		src := relay.NewSource(j, relay.BucketName("posts"), nil)
		follows.Add(1)
		go func() {
			defer follows.Done()
			_ = c.Follow(fctx, src)
		}()
		return c, c.WaitSynced(ctx)
	}
	replicas := make([]*store.Collection[int64, Post], cfg.Replicas)
	for i := range replicas {
		var err error
		if replicas[i], err = start(); err != nil {
			return res, err
		}
	}
	res.Conns = srv.ConnCount()
	res.Subs = len(srv.Subscriptions())

	// Latency: one update at a time, timed until every replica applied it.
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	var applied atomic.Int64
	wake := make(chan struct{}, 1)
	for _, c := range replicas {
		c.AddListener(store.ListenerFunc[int64, Post](func(ch store.Change[int64, Post]) {
			if ch.Op != store.OpUpdate {
				return
			}
			now := time.Now()
			mu.Lock()
			if t0, ok := sent[ch.New.Title]; ok {
				lat = append(lat, now.Sub(t0))
			}
			mu.Unlock()
			applied.Add(1)
			select {
			case wake <- struct{}{}:
			default:
			}
		}))
	}
	cpu0 := cpuTime()
	for i := range cfg.Updates {
		title := "u" + strconv.Itoa(i)
		mu.Lock()
		sent[title] = time.Now()
		mu.Unlock()
		if _, err := srv.Update("posts", []any{int64(1 + i%cfg.Rows)}, map[string]any{"title": title}); err != nil {
			return res, err
		}
		want := int64((i + 1) * cfg.Replicas)
		for applied.Load() < want {
			select {
			case <-wake:
			case <-ctx.Done():
				return res, errors.New("updates not applied in time")
			}
		}
	}
	res.CPUPerEvent = (cpuTime() - cpu0) / time.Duration(cfg.Updates)
	slices.Sort(lat)
	res.P50, res.P99 = lat[len(lat)/2], lat[len(lat)*99/100]

	// Directus restarts: count the rows it serves in inits until every
	// replica is synced again (the replicas resync by themselves).
	counter.rows.Store(0)
	var relayReplica *store.Collection[string, json.RawMessage]
	var resyncs0 uint64
	if fleet {
		relayReplica = rl.Replica("posts")
		resyncs0 = relayReplica.Stats().Resyncs
	}
	r0 := make([]uint64, len(replicas))
	for i, c := range replicas {
		r0[i] = c.Stats().Resyncs
	}
	srv.Restart()
	if fleet {
		if err := relayReplica.WaitFor(ctx, func() bool { return relayReplica.Stats().Resyncs > resyncs0 }); err != nil {
			return res, err
		}
	} else {
		for i, c := range replicas {
			if err := c.WaitFor(ctx, func() bool { return c.Stats().Resyncs > r0[i] }); err != nil {
				return res, err
			}
		}
	}
	res.InitRowsAfterRestart = counter.rows.Load()

	// Cold start of one more replica.
	t0 := time.Now()
	if _, err := start(); err != nil {
		return res, err
	}
	res.ColdStart = time.Since(t0)
	return res, nil
}
