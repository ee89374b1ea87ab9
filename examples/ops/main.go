// Command ops runs a live replica of posts and serves what an operator
// needs to watch it: Prometheus metrics, readiness and liveness probes,
// and the live status page.
//
//	go run ./examples/ops -duration 10s      # then open http://127.0.0.1:8090/debug/directus/
//	go run ./examples/ops -url http://127.0.0.1:8055 -token <static token>
//
// By default it starts an embedded Directus (directustest) and a writer
// that changes posts every -write-every. It serves, on -addr:
//
//	/metrics          Prometheus (metrics/prom); OpenTelemetry is wired too (metrics/otelmetric)
//	/readyz, /livez   the probes (ops.Source.ReadyHandler, LiveHandler)
//	/debug/directus/  the status page (ops.Source.StatusHandler)
//
// The status page shows no secret, but it shows collections, uids and
// errors: in a real service mount it behind the service's own
// authentication. With -duration it checks, at the end, that every
// endpoint answers (and the OpenTelemetry reader got the metrics), and
// exits 0, or 1 if one does not.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/metrics/otelmetric"
	"github.com/e41af43e/directus-realtime/metrics/prom"
	"github.com/e41af43e/directus-realtime/ops"
	"github.com/e41af43e/directus-realtime/store"
)

// Post is a row of posts.
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
}

type config struct {
	Addr       string
	URL, Token string
	Duration   time.Duration
	WriteEvery time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8090", "address to serve metrics, probes and the status page on")
	flag.StringVar(&cfg.URL, "url", "", "base URL of a real Directus (default: an embedded server)")
	flag.StringVar(&cfg.Token, "token", "", "static token of a Directus user (with -url)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "stop after this long, checking the endpoints (default: run until interrupted)")
	flag.DurationVar(&cfg.WriteEvery, "write-every", 200*time.Millisecond, "pause between two writes of the embedded server's writer")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("ops", "err", err)
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
	posts, err := store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }, ReconcileInterval: 5 * time.Second, Logger: log})
	if err != nil {
		return err
	}
	defer posts.Close()
	if _, err := posts.Subscribe(ctx, m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}

	// The three: metrics, probes, status page, all read from one Source.
	src := ops.NewSource(m, nil)
	if _, err := src.AddReplica("posts", posts); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prom.NewCollector(src))
	otelReader := sdkmetric.NewManualReader(sdkmetric.WithProducer(otelmetric.NewProducer(src)))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(otelReader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	if _, err := otelmetric.Register(mp, src); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/readyz", src.ReadyHandler())
	mux.Handle("/livez", src.LiveHandler())
	mux.Handle("/debug/directus/", http.StripPrefix("/debug/directus", src.StatusHandler(nil))) // behind your auth in a real service

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	// The status page's event streams last as long as their request:
	// cancelling the base context ends them, so that Shutdown need not wait.
	baseCtx, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return baseCtx }}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	log.Info("serving", "metrics", base+"/metrics", "ready", base+"/readyz", "live", base+"/livez", "status", base+"/debug/directus/")

	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var wg sync.WaitGroup
	if srv != nil {
		wg.Go(func() { write(runCtx, srv, cfg.WriteEvery) })
	}
	<-runCtx.Done()
	wg.Wait()

	var checkErr error
	if cfg.Duration > 0 && ctx.Err() == nil {
		checkErr = check(base, otelReader, log)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	endStreams()
	_ = hs.Shutdown(shutdownCtx)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if checkErr != nil {
		return checkErr
	}
	return ctx.Err()
}

// write changes posts until ctx is done: creates, then title updates.
func write(ctx context.Context, srv *directustest.Server, every time.Duration) {
	t := time.NewTicker(max(every, time.Millisecond))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if i%3 == 0 {
			_, _ = srv.Create("posts", map[string]any{"title": fmt.Sprintf("post %d", i), "status": "published"})
		} else if items := srv.Items("posts"); len(items) > 0 {
			_, _ = srv.Update("posts", []any{items[i%len(items)]["id"]}, map[string]any{"title": fmt.Sprintf("edit %d", i)})
		}
	}
}

// check asks every endpoint, as a probe, a scraper and an operator would.
func check(base string, otelReader *sdkmetric.ManualReader, log *slog.Logger) error {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for path, want := range map[string]string{
		"/readyz":                     `"ok":true`,
		"/livez":                      `"ok":true`,
		"/metrics":                    `directus_replica_rows{collection="posts",name="posts"}`,
		"/debug/directus/":            "<title>directus-realtime status</title>",
		"/debug/directus/status.json": `"name":"posts"`,
	} {
		resp, err := client.Get(base + path)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			return fmt.Errorf("GET %s: %d, without %q", path, resp.StatusCode, want)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := otelReader.Collect(context.Background(), &rm); err != nil {
		return err
	}
	n := 0
	for _, sm := range rm.ScopeMetrics {
		n += len(sm.Metrics)
	}
	if n == 0 {
		return errors.New("the OpenTelemetry reader got no metric")
	}
	log.Info("every endpoint answers", "otel_metrics", n)
	return nil
}
