// Command compare runs the same seeded workload through three clients and
// compares them: the library (manager + store.Collection), the smallest
// hand-written Go client (harness.MinimalClient) and the official
// @directus/sdk realtime client under Node 22 (bench/sdk/client.mjs, in its
// two documented reading styles). Each client runs in a process of its own.
//
//	go run ./bench/cmd/compare [-n 100000] [-m 100000] [-runs 5] [-svg bench/throughput.svg]
//	go run ./bench/cmd/compare -workload firehose|batches|biginit|steady -runs 3 -clients lib,minimal
//
// The second form runs one row of issue 15's table and prints its ratios
// lib / minimal of CPU, wall and peak memory (bench/README.md §11).
//
// Two phases:
//
//   - live: every client is connected to one directustest server while the
//     writes are made; a correct client then applies events at the server's
//     rate, so what differs is the time each one needs to converge after the
//     last write, its end-to-end latency and whether its replica is right. A
//     recorder connected alongside keeps every frame its subscription got.
//   - firehose: a replay server (harness.ReplayServer) feeds each client in
//     turn the identical recorded init and event frames as fast as the socket
//     takes them, so the client's own processing rate is measured. Repeated
//     -runs times; medians are reported.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/e41af43e/directus-realtime/bench/internal/harness"
	"github.com/e41af43e/directus-realtime/directustest"
)

func main() {
	var (
		child   = flag.String("child", "", "internal: run one Go client (lib or minimal) under the child protocol")
		url     = flag.String("url", "", "a real Directus (http://host:port): run only a paced live phase against it (child mode: the server URL)")
		token   = flag.String("token", "", "static token with admin rights for -url")
		events  = flag.Int("events", 0, "child mode: events to expect")
		times   = flag.String("times", "", "child mode: file for the apply times")
		cpuprof = flag.String("cpuprofile", "", "child mode: write a CPU profile of the event phase here")
		profDir = flag.String("profile", "", "firehose: write CPU profiles of the Go clients' event phase to this directory")
		n       = flag.Int("n", 100_000, "rows of the init")
		m       = flag.Int("m", 100_000, "writes after the init")
		seed    = flag.Uint64("seed", 1, "workload seed")
		runs    = flag.Int("runs", 5, "firehose runs per client (medians are reported)")
		pRate   = flag.Float64("paced-rate", 500, "paced live phase: writes per second (0: no paced phase)")
		pSecs   = flag.Duration("paced-for", 10*time.Second, "paced live phase: duration (the first rate×duration writes of the workload)")
		clients = flag.String("clients", "lib,lib-q1m,minimal,sdk-iter,sdk-listener", "clients to compare (lib-q1m: the library with a subscription queue of 1<<20 events)")
		noFire  = flag.Bool("no-firehose", false, "skip the firehose phase")
		node    = flag.String("node", defaultNode(), "Node 22 binary for the SDK client")
		sdkDir  = flag.String("sdk", "bench/sdk", "directory of the SDK client (npm ci done)")
		outDir  = flag.String("out", "bench/out", "directory for results and scratch files")
		svg     = flag.String("svg", "", "write the chart to this SVG file")
		quiet   = flag.Duration("quiet", 5*time.Second, "give up on a client after this long without an event")
		replot  = flag.String("replot", "", "only redraw -svg from this compare.json")
		pause   = flag.Duration("pause", time.Second, "firehose: pause between the init and the first event (lets the client apply the init first)")
		preset  = flag.String("workload", "", "a workload of issue 15's table, setting the flags it names unless given: firehose (-n 1000 -m 200000), batches (-n 1000 -m 20000 -batch 50), biginit (-n 100000 -m 1000), steady (-n 10000, 1,000 writes/s for 20 s, live only)")
		batch   = flag.Int("batch", 0, "writes are batch updates of this many rows each (0: the usual mix)")
	)
	flag.Parse()
	if err := applyPreset(*preset); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(2)
	}
	if *child != "" {
		err := harness.RunChild(harness.ChildArgs{Client: *child, URL: *url, Token: *token, Events: *events, Times: *times, CPUProfile: *cpuprof}, os.Stdin, os.Stdout)
		if err != nil {
			_ = json.NewEncoder(os.Stdout).Encode(harness.Result{Client: *child, Error: err.Error()})
			os.Exit(1)
		}
		return
	}
	if *replot != "" {
		if err := redraw(*replot, *svg); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			os.Exit(1)
		}
		return
	}
	cfg := config{preset: *preset, batch: *batch, n: *n, m: *m, seed: *seed, runs: *runs, pacedRate: *pRate, pacedSeconds: *pSecs, node: *node, sdkDir: *sdkDir, outDir: *outDir, svg: *svg, quiet: *quiet, pause: *pause, noFirehose: *noFire, profDir: *profDir, url: *url, token: *token}
	for _, c := range strings.Split(*clients, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cfg.clients = append(cfg.clients, c)
		}
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

type config struct {
	preset         string
	batch          int
	n, m           int
	seed           uint64
	runs           int
	pacedRate      float64
	pacedSeconds   time.Duration
	clients        []string
	node, sdkDir   string
	outDir, svg    string
	quiet, pause   time.Duration
	noFirehose     bool
	profDir        string
	url, token     string // a real Directus: paced live phase only
	nodeVersion    string
	skippedClients []string
}

func defaultNode() string {
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".cache/directus-realtime/directus-12.4.1/node22/bin/node")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "node"
}

func (c *config) spec(name string) (harness.ProcSpec, error) {
	switch name {
	case "lib", "lib-q1m", "lib-b1m", "minimal":
		return harness.GoSpec(name)
	case "sdk-iter", "sdk-listener":
		return harness.NodeSpec(c.node, c.sdkDir, strings.TrimPrefix(name, "sdk-")), nil
	}
	return harness.ProcSpec{}, fmt.Errorf("unknown client %q", name)
}

// liveResult is one client's figures in a live phase.
type liveResult struct {
	harness.Result
	InitMS      float64
	CPUPerEvent float64       // µs of CPU per event, from the init applied to the final state
	Converge    time.Duration // replica final − last write returned
	Latency     harness.Dist  // write start → event applied
}

// livePhase is one live run.
type livePhase struct {
	Rate     float64 // writes per second, 0 for full speed
	Writes   int
	Events   int
	Duration time.Duration // first write started → last write returned
	Clients  []liveResult
}

// fireResult is one client's figures in the firehose phase (medians).
type fireResult struct {
	Name                              string
	Runs                              []harness.Result
	EventsPerSec, CPUPerEvent         float64 // events/s (wall), CPU µs per event
	InitMS, InitCPUMS                 float64
	HeapPerRow, LivePerRow, RSSPerRow float64
	PeakRSS                           float64 // bytes, whole process (VmHWM)
	CPUEventsMS, EventsMS             float64 // CPU and wall time from the first init applied to the final state
	Correct                           int     // runs with a correct replica
	Resubscribes                      int     // resyncs the client asked for, over all runs
}

type ratio struct {
	Client string
	// client / minimal: firehose events/s (wall clock), events per CPU
	// second, and heap in use per row.
	Throughput, CPUEfficiency, Memory float64
}

// report is everything compare.json holds.
type report struct {
	When      time.Time
	Machine   map[string]string
	N, M      int
	Seed      uint64
	Events    int
	Runs      int
	Live      []livePhase
	Firehose  []fireResult
	Recording string
	Ratios    []ratio
	Notes     []string
}

func run(cfg config) error {
	// Children run in other directories (the SDK's): give them absolute paths.
	for _, dir := range []*string{&cfg.outDir, &cfg.profDir} {
		if *dir != "" {
			abs, err := filepath.Abs(*dir)
			if err != nil {
				return err
			}
			*dir = abs
		}
	}
	for _, dir := range []string{cfg.outDir, cfg.profDir} {
		if dir == "" {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	for _, c := range cfg.clients {
		if strings.HasPrefix(c, "sdk-") {
			if err := checkNode(&cfg); err != nil {
				fmt.Fprintf(os.Stderr, "compare: skipping the SDK clients: %v\n", err)
				cfg.clients = slices.DeleteFunc(cfg.clients, func(s string) bool { return strings.HasPrefix(s, "sdk-") })
				cfg.skippedClients = append(cfg.skippedClients, "sdk ("+err.Error()+")")
			}
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	w := harness.NewWorkload(cfg.seed, cfg.n, cfg.m)
	if cfg.batch > 0 {
		w = harness.NewBatchWorkload(cfg.seed, cfg.n, cfg.m, cfg.batch)
	}
	rep := &report{When: time.Now().UTC(), Machine: machine(cfg), N: cfg.n, M: cfg.m, Seed: cfg.seed, Events: w.Events, Runs: cfg.runs}
	fmt.Printf("workload: seed %d, init %d rows, %d writes -> %d events per subscription\n", cfg.seed, cfg.n, cfg.m, w.Events)

	if cfg.url != "" {
		// A real Directus: the first writes of the workload at the paced
		// rate, every client connected; no recording, no firehose.
		k := int(cfg.pacedRate * cfg.pacedSeconds.Seconds())
		client := &http.Client{Timeout: time.Minute}
		defer client.CloseIdleConnections()
		wr := harness.RESTWriter{URL: cfg.url, Token: cfg.token, Client: client}
		paced, _, err := live(ctx, cfg, w.Prefix(k), cfg.pacedRate, false, wr, cfg.url, cfg.token)
		if err != nil {
			return err
		}
		rep.Live = append(rep.Live, *paced)
		rep.Notes = append(rep.Notes, "live phase against "+cfg.url)
		return writeReport(cfg, rep)
	}

	// Live at full speed; the recorder keeps the frames for the firehose.
	// A paced comparison without the firehose (the steady workload) needs
	// neither.
	var recording harness.Recording
	if !cfg.noFirehose || cfg.pacedRate <= 0 {
		full, rec, err := live(ctx, cfg, w, 0, true, nil, "", "")
		if err != nil {
			return err
		}
		rep.Live = append(rep.Live, *full)
		recording = rec
		rep.Recording = recording.String()
	}
	// Live at a paced rate: the first writes of the same workload.
	if cfg.pacedRate > 0 && cfg.pacedSeconds > 0 {
		k := int(cfg.pacedRate * cfg.pacedSeconds.Seconds())
		paced, _, err := live(ctx, cfg, w.Prefix(k), cfg.pacedRate, false, nil, "", "")
		if err != nil {
			return err
		}
		rep.Live = append(rep.Live, *paced)
		printLiveRatios(paced)
	}

	if cfg.noFirehose {
		return writeReport(cfg, rep)
	}

	// Firehose.
	rs, err := harness.NewReplayServer(recording)
	if err != nil {
		return err
	}
	rs.Pause = cfg.pause
	defer rs.Close()
	expected := filepath.Join(cfg.outDir, "expected.json")
	fmt.Printf("\nfirehose: replaying %s, %d runs per client\n", rep.Recording, cfg.runs)
	fires := map[string]*fireResult{}
	for _, name := range cfg.clients {
		fires[name] = &fireResult{Name: name}
	}
	for run := range cfg.runs {
		// Rotate the order, so that no client always runs first.
		order := slices.Clone(cfg.clients)
		k := run % len(order)
		order = append(order[k:], order[:k]...)
		for _, name := range order {
			spec, _ := cfg.spec(name)
			if cfg.profDir != "" && !strings.HasPrefix(name, "sdk-") {
				spec.Argv = append(spec.Argv, "-cpuprofile", filepath.Join(cfg.profDir, fmt.Sprintf("%s-run%d.pprof", name, run+1)))
			}
			subs := rs.Subscribes()
			p, err := harness.StartProc(ctx, spec, rs.URL(), directustest.AdminToken, w.Events, "")
			if err != nil {
				return err
			}
			r, err := p.Finish(ctx, expected, cfg.quiet)
			if err != nil {
				return err
			}
			f := fires[name]
			f.Resubscribes += rs.Subscribes() - subs - 1
			f.Runs = append(f.Runs, r)
			fmt.Printf("firehose run %d: %-12s %9.0f events/s %7.2f cpu-µs/event  init %7.1f ms  heap %6.1f B/row  rss %6.1f B/row  %d/%d events applied, %d inits  %s\n",
				run+1, name, r.Throughput(w.Events), r.CPUPerEvent(w.Events), r.FirstInitAt-r.StartAt, r.HeapPerRow, r.RSSPerRow, r.Events, w.Events, r.Inits, correct(r))
		}
	}
	for _, name := range cfg.clients {
		f := fires[name]
		f.EventsPerSec = median(f.Runs, func(r harness.Result) float64 { return r.Throughput(w.Events) })
		f.CPUPerEvent = median(f.Runs, func(r harness.Result) float64 { return r.CPUPerEvent(w.Events) })
		f.InitMS = median(f.Runs, func(r harness.Result) float64 { return r.FirstInitAt - r.StartAt })
		f.InitCPUMS = median(f.Runs, func(r harness.Result) float64 { return r.CPUInitMS })
		f.HeapPerRow = median(f.Runs, func(r harness.Result) float64 { return r.HeapPerRow })
		f.LivePerRow = median(f.Runs, func(r harness.Result) float64 { return r.LivePerRow })
		f.RSSPerRow = median(f.Runs, func(r harness.Result) float64 { return r.RSSPerRow })
		f.PeakRSS = median(f.Runs, func(r harness.Result) float64 { return r.PeakRSS })
		f.CPUEventsMS = median(f.Runs, func(r harness.Result) float64 { return r.CPUEventsMS })
		f.EventsMS = median(f.Runs, func(r harness.Result) float64 { return r.DoneAt() - r.FirstInitAt })
		for _, r := range f.Runs {
			if r.Correct {
				f.Correct++
			}
		}
		rep.Firehose = append(rep.Firehose, *f)
	}
	base := fires["minimal"]
	for _, lib := range []string{"lib", "lib-q1m"} {
		if f := fires[lib]; f != nil && base != nil && base.EventsPerSec > 0 && base.HeapPerRow > 0 {
			r := ratio{Client: lib, Throughput: f.EventsPerSec / base.EventsPerSec, Memory: f.HeapPerRow / base.HeapPerRow}
			if f.CPUPerEvent > 0 {
				r.CPUEfficiency = base.CPUPerEvent / f.CPUPerEvent
			}
			rep.Ratios = append(rep.Ratios, r)
		}
	}
	for _, s := range cfg.skippedClients {
		rep.Notes = append(rep.Notes, "skipped: "+s)
	}
	printFirehose(rep)
	printTable(cfg, fires)
	return writeReport(cfg, rep)
}

func writeReport(cfg config, rep *report) error {
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(cfg.outDir, "compare.json"), b, 0o644); err != nil {
		return err
	}
	if cfg.svg != "" {
		if err := os.WriteFile(cfg.svg, []byte(chart(rep)), 0o644); err != nil {
			return err
		}
		fmt.Println("chart written to", cfg.svg)
	}
	return nil
}

// live runs w on a fresh directustest server with every client connected,
// at rate writes per second (0: full speed). With record, a recorder is
// connected too and its recording returned, and the expected rows are kept
// in the out directory for the firehose.
//
// With wr set, the server is that one (url, token) instead.
func live(ctx context.Context, cfg config, w *harness.Workload, rate float64, record bool, wr harness.Writer, url, token string) (*livePhase, harness.Recording, error) {
	var recording harness.Recording
	if wr == nil {
		srv := directustest.NewServer(nil)
		defer srv.Close()
		wr, url, token = harness.DirectWriter{Srv: srv}, srv.URL(), directustest.AdminToken
	}
	model, err := w.SeedInit(ctx, wr)
	if err != nil {
		return nil, recording, err
	}
	var rec *harness.Recorder
	if record {
		if rec, err = harness.StartRecorder(ctx, url, token); err != nil {
			return nil, recording, err
		}
	}
	phase := &livePhase{Rate: rate, Writes: len(w.Ops), Events: w.Events}
	fmt.Printf("\nlive at %s: init %d rows, then %d writes (%d events)\n", rateString(rate), len(w.Init), len(w.Ops), w.Events)
	tag := "live-full"
	if rate > 0 {
		tag = fmt.Sprintf("live-%.0f", rate)
	}
	procs := make([]*harness.Proc, 0, len(cfg.clients))
	defer func() {
		for _, p := range procs {
			p.Kill()
		}
	}()
	for _, name := range cfg.clients {
		spec, err := cfg.spec(name)
		if err != nil {
			return nil, recording, err
		}
		times := filepath.Join(cfg.outDir, tag+"-"+name+".times")
		if cfg.profDir != "" && !strings.HasPrefix(name, "sdk-") {
			spec.Argv = append(spec.Argv, "-cpuprofile", filepath.Join(cfg.profDir, tag+"-"+name+".pprof"))
		}
		p, err := harness.StartProc(ctx, spec, url, token, w.Events, times)
		if err != nil {
			return nil, recording, err
		}
		procs = append(procs, p)
	}
	runRes, err := w.Run(ctx, wr, model, rate)
	if err != nil {
		return nil, recording, err
	}
	phase.Duration = runRes.Last.Sub(runRes.First)
	server, _ := wr.Rows(ctx)
	if d := harness.Compare(server, model.Rows); !d.OK() {
		return nil, recording, fmt.Errorf("the model differs from the server: %s", d)
	}
	expected := filepath.Join(cfg.outDir, tag+"-expected.json")
	if record {
		expected = filepath.Join(cfg.outDir, "expected.json")
	}
	if err := harness.WriteRows(expected, model.Sorted()); err != nil {
		return nil, recording, err
	}
	for _, p := range procs {
		r, err := p.Finish(ctx, expected, cfg.quiet)
		if err != nil {
			return nil, recording, err
		}
		lr := liveResult{Result: r, InitMS: p.Ready.InitMS, CPUPerEvent: r.CPUPerEvent(w.Events)}
		lr.Converge = time.Duration((r.DoneAt() - float64(runRes.Last.UnixNano())/1e6) * 1e6)
		if ts, err := harness.ReadTimes(p.Times); err == nil && r.Events == w.Events && r.Inits == 1 {
			lr.Latency = harness.Summarize(harness.Latencies(runRes.WriteStart, ts))
		}
		phase.Clients = append(phase.Clients, lr)
	}
	if rec != nil {
		werr := rec.WaitCount(ctx, w.Events)
		recording = rec.Stop()
		if werr != nil {
			return phase, recording, werr
		}
	}
	printLive(phase)
	return phase, recording, nil
}

func correct(r harness.Result) string {
	if r.Correct {
		return "replica CORRECT"
	}
	return fmt.Sprintf("replica WRONG (%d missing, %d extra, %d changed)", r.Missing, r.Extra, r.Changed)
}

func rateString(rate float64) string {
	if rate <= 0 {
		return "full speed"
	}
	return fmt.Sprintf("%.0f/s", rate)
}

func median(rs []harness.Result, f func(harness.Result) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func printLive(ph *livePhase) {
	fmt.Printf("live at %s (all clients on one server; %d writes took %s, %.0f events/s):\n",
		rateString(ph.Rate), ph.Writes, ph.Duration.Round(time.Millisecond), float64(ph.Events)/ph.Duration.Seconds())
	fmt.Printf("  %-12s %9s %10s %12s %11s %11s %11s %11s %11s   %s\n", "client", "init ms", "events", "cpu-µs/event", "converge", "lat p50", "lat p90", "lat p99", "lat max", "replica")
	for _, l := range ph.Clients {
		p50, p90, p99, mx := "n/a", "n/a", "n/a", "n/a"
		if l.Latency.N > 0 {
			p50, p90, p99, mx = msf(l.Latency.P50), msf(l.Latency.P90), msf(l.Latency.P99), msf(l.Latency.Max)
		}
		fmt.Printf("  %-12s %9.1f %10d %12.2f %11s %11s %11s %11s %11s   %s\n", l.Client, l.InitMS, l.Events, l.CPUPerEvent, msf(l.Converge), p50, p90, p99, mx, correct(l.Result))
	}
}

func msf(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func printFirehose(rep *report) {
	fmt.Printf("\nfirehose (identical recorded frames, as fast as the socket allows; medians of %d runs):\n", rep.Runs)
	fmt.Printf("  %-12s %10s %12s %9s %10s %11s %11s %11s %8s   %s\n", "client", "events/s", "cpu-µs/event", "init ms", "init cpu", "heap B/row", "live B/row", "RSS B/row", "resyncs", "correct runs")
	for _, f := range rep.Firehose {
		fmt.Printf("  %-12s %10.0f %12.2f %9.1f %10.1f %11.1f %11.1f %11.1f %8d   %d/%d\n", f.Name, f.EventsPerSec, f.CPUPerEvent, f.InitMS, f.InitCPUMS, f.HeapPerRow, f.LivePerRow, f.RSSPerRow, f.Resubscribes, f.Correct, len(f.Runs))
	}
	for _, r := range rep.Ratios {
		fmt.Printf("%s / minimal: throughput %.2fx (requirement >= 1.00), events per CPU-second %.2fx, heap per row %.2fx (requirement <= 1.30)\n", r.Client, r.Throughput, r.CPUEfficiency, r.Memory)
	}
}

func checkNode(cfg *config) error {
	out, err := exec.Command(cfg.node, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.node, err)
	}
	v := strings.TrimSpace(string(out))
	var major int
	if _, err := fmt.Sscanf(v, "v%d", &major); err != nil || major < 22 {
		return fmt.Errorf("%s is %s; the SDK needs Node 22 or later", cfg.node, v)
	}
	if _, err := os.Stat(filepath.Join(cfg.sdkDir, "node_modules/@directus/sdk/package.json")); err != nil {
		return fmt.Errorf("run npm ci in %s first", cfg.sdkDir)
	}
	cfg.nodeVersion = v
	return nil
}

func machine(cfg config) map[string]string {
	m := map[string]string{"go": runtime.Version(), "nproc": fmt.Sprint(runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				m["cpu"] = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m["mem"] = strings.TrimSpace(strings.SplitN(strings.SplitN(string(b), "\n", 2)[0], ":", 2)[1])
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_at_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if cfg.nodeVersion != "" {
		m["node"] = cfg.nodeVersion
	}
	return m
}

// redraw writes the chart of a saved report.
func redraw(from, svg string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return err
	}
	if svg == "" {
		return fmt.Errorf("-replot needs -svg")
	}
	return os.WriteFile(svg, []byte(chart(&rep)), 0o644)
}
