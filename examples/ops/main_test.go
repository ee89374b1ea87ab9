package main

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The default mode runs, serves the three, checks them at the end and
// exits cleanly.
func TestEmbedded(t *testing.T) {
	var out testutil.Buffer
	err := run(t.Context(), config{Addr: "127.0.0.1:0", Duration: 1500 * time.Millisecond, WriteEvery: 5 * time.Millisecond}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `msg="every endpoint answers"`) {
		t.Fatalf("no verdict:\n%s", out.String())
	}
}
