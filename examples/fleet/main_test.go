package main

import (
	"strings"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/internal/testutil"
)

// The default mode: embedded Directus and JetStream, two relays, a leader
// killed during writes, every replica checked against the server.
func TestEmbeddedFailover(t *testing.T) {
	var out testutil.Buffer
	err := run(t.Context(), config{Replicas: 3, Duration: time.Second, LeaseTTL: 500 * time.Millisecond}, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, text)
	}
	for _, want := range []string{`msg="leader killed during writes"`, `msg="standby took over" relay=relay-2`, `msg="every replica equals the server" replicas=3`} {
		if !strings.Contains(text, want) {
			t.Fatalf("no %s in the output:\n%s", want, text)
		}
	}
	if !strings.Contains(text, "failed=0") || strings.Contains(text, "creates=0 ") {
		t.Fatalf("the writer did not write, or failed:\n%s", text)
	}
}
