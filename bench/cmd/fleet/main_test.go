package main

import (
	"strings"
	"testing"

	"github.com/e41af43e/directus-realtime/internal/testutil"
)

// The short form of the benchmark, run by the tests: the relay must cut
// Directus's connections, subscriptions and post-restart inits to one.
func TestShortFleetBenchmark(t *testing.T) {
	var out testutil.Buffer
	res, err := run(t.Context(), config{Replicas: 5, Rows: 500, Updates: 50}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	d, f := res[0], res[1]
	if d.Conns != 5 || d.Subs != 5 || f.Conns != 1 || f.Subs != 1 {
		t.Errorf("connections/subscriptions direct %d/%d fleet %d/%d, want 5/5 and 1/1", d.Conns, d.Subs, f.Conns, f.Subs)
	}
	if d.InitRowsAfterRestart != 5*500 || f.InitRowsAfterRestart != 500 {
		t.Errorf("init rows after the restart: direct %d, fleet %d; want 2500 and 500", d.InitRowsAfterRestart, f.InitRowsAfterRestart)
	}
	if !strings.Contains(out.String(), "latency the relay adds") {
		t.Error("no latency line")
	}
}
