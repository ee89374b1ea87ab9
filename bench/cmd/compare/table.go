package main

import (
	"flag"
	"fmt"
	"time"
)

// presets are the workloads of issue 15's table: each sets the flags it
// names, unless they were given on the command line.
var presets = map[string]map[string]string{
	"firehose": {"n": "1000", "m": "200000", "paced-rate": "0"},
	"batches":  {"n": "1000", "m": "20000", "batch": "50", "paced-rate": "0"},
	"biginit":  {"n": "100000", "m": "1000", "paced-rate": "0"},
	"steady":   {"n": "10000", "m": "20000", "paced-rate": "1000", "paced-for": "20s", "no-firehose": "true"},
}

// applyPreset sets the flags of the named preset that were not given.
func applyPreset(name string) error {
	if name == "" {
		return nil
	}
	p, ok := presets[name]
	if !ok {
		return fmt.Errorf("unknown workload %q (firehose, batches, biginit, steady)", name)
	}
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for k, v := range p {
		if given[k] {
			continue
		}
		if err := flag.Set(k, v); err != nil {
			return fmt.Errorf("workload %s: -%s=%s: %w", name, k, v, err)
		}
	}
	return nil
}

// printTable prints the firehose medians as ratios of the library to the
// hand-written client, the figures of issue 15's table: CPU and wall time
// of the event phase (of the init for biginit) and the peak resident set
// of the whole process.
func printTable(cfg config, fires map[string]*fireResult) {
	base, lib := fires["minimal"], fires["lib"]
	if base == nil || lib == nil {
		return
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	name := cfg.preset
	if name == "" {
		name = "firehose"
	}
	fmt.Printf("\n%s, lib / minimal (medians of %d runs each):\n", name, len(lib.Runs))
	fmt.Printf("  events phase: CPU %.2f (%.0f / %.0f ms), wall %.2f (%.0f / %.0f ms)\n",
		div(lib.CPUEventsMS, base.CPUEventsMS), lib.CPUEventsMS, base.CPUEventsMS, div(lib.EventsMS, base.EventsMS), lib.EventsMS, base.EventsMS)
	fmt.Printf("  init: CPU %.2f (%.0f / %.0f ms), wall %.2f (%.0f / %.0f ms)\n",
		div(lib.InitCPUMS, base.InitCPUMS), lib.InitCPUMS, base.InitCPUMS, div(lib.InitMS, base.InitMS), lib.InitMS, base.InitMS)
	fmt.Printf("  peak RSS %.2f (%.1f / %.1f MiB)\n", div(lib.PeakRSS, base.PeakRSS), lib.PeakRSS/(1<<20), base.PeakRSS/(1<<20))
}

// printLiveRatios prints the paced live phase as ratios of the library to
// the hand-written client (the steady workload).
func printLiveRatios(ph *livePhase) {
	var lib, base *liveResult
	for i := range ph.Clients {
		switch ph.Clients[i].Client {
		case "lib":
			lib = &ph.Clients[i]
		case "minimal":
			base = &ph.Clients[i]
		}
	}
	if lib == nil || base == nil || base.CPUEventsMS == 0 || base.PeakRSS == 0 {
		return
	}
	fmt.Printf("paced at %s, lib / minimal: CPU %.2f (%.0f / %.0f ms), converge %s / %s, peak RSS %.2f (%.1f / %.1f MiB), latency p99 %s / %s\n",
		rateString(ph.Rate), lib.CPUEventsMS/base.CPUEventsMS, lib.CPUEventsMS, base.CPUEventsMS,
		lib.Converge.Round(time.Microsecond), base.Converge.Round(time.Microsecond),
		lib.PeakRSS/base.PeakRSS, lib.PeakRSS/(1<<20), base.PeakRSS/(1<<20), msf(lib.Latency.P99), msf(base.Latency.P99))
}
