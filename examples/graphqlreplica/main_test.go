package main

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The embedded run: writes, a restart, and a replica equal to the server.
func TestEmbedded(t *testing.T) {
	var out testutil.Buffer
	err := run(t.Context(), config{Duration: 1500 * time.Millisecond}, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, text)
	}
	for _, want := range []string{`msg="restarting the server"`, `state=reconnecting`, `msg="replica equals the server"`} {
		if !strings.Contains(text, want) {
			t.Fatalf("no %s in the output:\n%s", want, text)
		}
	}
}
