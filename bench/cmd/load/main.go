// Command load streams a fixed, seeded workload into a typed replica kept by
// the library (manager + store.Collection) and checks at the end that the
// replica equals the expected rows.
//
//	go run ./bench/cmd/load                       # in-process directustest server
//	go run ./bench/cmd/load -url http://127.0.0.1:8055 -token admin-static-token-d1r3ctus -n 1000 -m 500
//
// The workload is an init of -n rows of posts, created before the client
// subscribes, then -m writes: single and batch creates, single and batch
// updates, deletes keyed by a string (as DELETE /items/posts/{id} sends it)
// and batch deletes keyed by numbers (a JSON body). Against directustest the
// writes go through its Go methods (-rest sends them over HTTP instead);
// against a real Directus they go over its REST API.
//
// It reports the init time, the memory each cached row costs, the
// goroutines, the events applied per second end to end, the latency from the
// start of each write to its event being applied to the replica
// (percentiles), the time to converge after the last write, and PASS or
// FAIL. The exit status is 1 on FAIL.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/e41af43e/directus-realtime/bench/internal/harness"
	"github.com/e41af43e/directus-realtime/directustest"
)

func main() {
	var (
		url   = flag.String("url", "", "Directus base URL (default: an in-process directustest server)")
		token = flag.String("token", "", "static token with admin rights (with -url)")
		n     = flag.Int("n", 100_000, "rows of the init (default 1,000 with -url)")
		m     = flag.Int("m", 100_000, "writes after the init (default 500 with -url)")
		seed  = flag.Uint64("seed", 1, "workload seed")
		rate  = flag.Float64("rate", 0, "writes per second (0: as fast as the server answers)")
		rest  = flag.Bool("rest", false, "with directustest: write over HTTP (REST) instead of Go calls")
		quiet = flag.Duration("quiet", 10*time.Second, "give up when no event arrives for this long")
	)
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *url != "" {
		if !set["n"] {
			*n = 1000
		}
		if !set["m"] {
			*m = 500
		}
		if *token == "" {
			fmt.Fprintln(os.Stderr, "load: -token is required with -url")
			os.Exit(2)
		}
	}
	ok, err := run(*url, *token, *n, *m, *seed, *rate, *rest, *quiet)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(url, token string, n, m int, seed uint64, rate float64, rest bool, quiet time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	var wr harness.Writer
	target := url
	httpClient := &http.Client{Timeout: time.Minute}
	defer httpClient.CloseIdleConnections()
	if url == "" {
		srv := directustest.NewServer(nil)
		defer srv.Close()
		url, token = srv.URL(), directustest.AdminToken
		target = "directustest (in process)"
		wr = harness.DirectWriter{Srv: srv}
		if rest {
			wr = harness.RESTWriter{URL: url, Token: token, Client: httpClient}
			target += ", writes over REST"
		}
	} else {
		wr = harness.RESTWriter{URL: url, Token: token, Client: httpClient}
	}
	w := harness.NewWorkload(seed, n, m)
	fmt.Printf("target:    %s\n", target)
	fmt.Printf("machine:   %d CPUs, %s, GOMAXPROCS %d\n", runtime.NumCPU(), runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Printf("workload:  seed %d: init %d rows, then %d writes (%d events)\n", seed, n, m, w.Events)

	t0 := time.Now()
	model, err := w.SeedInit(ctx, wr)
	if err != nil {
		return false, fmt.Errorf("seeding: %w", err)
	}
	fmt.Printf("seeded:    %d rows in %s\n", len(model.Rows), time.Since(t0).Round(time.Millisecond))

	// A first read through the server fills its caches (directustest keeps
	// the encoding of every row), so that the memory measured next is the
	// client's.
	warm := &harness.MinimalClient{}
	if err := warm.Start(ctx, url, token); err != nil {
		return false, fmt.Errorf("warm-up: %w", err)
	}
	_ = warm.Close()

	g0 := runtime.NumGoroutine()
	before := harness.MeasureMem()
	marks := harness.NewMarks(w.Events)
	lib := &harness.LibClient{Marks: marks}
	start := time.Now()
	if err := lib.Start(ctx, url, token); err != nil {
		return false, fmt.Errorf("subscribing: %w", err)
	}
	defer lib.Close()
	initTime := marks.FirstInitAt().Sub(start)
	afterInit := harness.MeasureMem()
	rows := lib.Coll.Len()
	inuse, live, rss := harness.PerRow(before, afterInit, rows)
	g1 := runtime.NumGoroutine()
	fmt.Printf("init:      %d rows applied in %s (subscribe to replica ready)\n", rows, initTime.Round(time.Microsecond))
	fmt.Printf("memory:    %.1f B/row heap in use, %.1f B/row live heap, %.1f B/row RSS (after GC, minus before subscribing)\n", inuse, live, rss)

	fmt.Printf("writing:   %d writes at %s ...\n", len(w.Ops), rateString(rate))
	res, err := w.Run(ctx, wr, model, rate)
	if err != nil {
		return false, err
	}
	writeTime := res.Last.Sub(res.First)
	fmt.Printf("writes:    %s, %.0f writes/s, %.0f events/s from the server\n", writeTime.Round(time.Millisecond),
		float64(len(w.Ops))/writeTime.Seconds(), float64(w.Events)/writeTime.Seconds())
	gRun := runtime.NumGoroutine()

	converged := func() bool { return harness.Compare(lib.Rows(), model.Rows).OK() }
	waitErr := marks.WaitDone(ctx, w.Events, quiet, converged)
	done := marks.Last()
	if marks.InitAt().After(done) {
		done = marks.InitAt()
	}
	applied := marks.Count()
	fmt.Printf("applied:   %d of %d events, %d init(s)\n", applied, w.Events, marks.Inits())
	if applied > 0 {
		span := done.Sub(res.First)
		fmt.Printf("throughput: %.0f events/s applied end to end (first write to replica final, %s)\n", float64(w.Events)/span.Seconds(), span.Round(time.Millisecond))
	}
	fmt.Printf("converged: %s after the last write returned\n", done.Sub(res.Last).Round(time.Microsecond))
	if applied == w.Events && marks.Inits() == 1 {
		d := harness.Summarize(harness.Latencies(res.WriteStart, marks.Times()))
		fmt.Printf("latency:   write start -> applied to the replica: %s\n", d)
	} else {
		fmt.Println("latency:   n/a (events were replaced by a resync init)")
	}
	st := lib.Sub.Stats()
	cs := lib.Coll.Stats()
	fmt.Printf("library:   subscription events %d, resyncs %d, overflows %d, errors %d; store events %d, bad rows %d\n",
		st.Events, st.Resyncs, st.Overflows, st.Errors, cs.Events, cs.BadRows)
	fmt.Printf("goroutines: %d in the process while streaming (%d before the client, %d with it idle; an in-process server adds its own per connection)\n", gRun, g0, g1)

	server, err := wr.Rows(ctx)
	if err != nil {
		return false, err
	}
	dModel := harness.Compare(server, model.Rows)
	dReplica := harness.Compare(lib.Rows(), model.Rows)
	fmt.Printf("check:     server vs expected: %s; replica vs expected: %s (%d rows)\n", dModel, dReplica, len(model.Rows))
	if waitErr != nil {
		fmt.Printf("           stopped waiting: %v\n", waitErr)
	}
	pass := dModel.OK() && dReplica.OK()
	if pass {
		fmt.Println("PASS")
	} else {
		fmt.Println("FAIL")
	}
	return pass, nil
}

func rateString(rate float64) string {
	if rate <= 0 {
		return "full speed"
	}
	return fmt.Sprintf("%.0f/s", rate)
}
