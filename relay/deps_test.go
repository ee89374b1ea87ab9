package relay_test

import (
	"os/exec"
	"strings"
	"testing"
)

// A program that imports relay links nats.go, not nats-server: the
// embedded server lives in internal/natstest, for tests and examples.
func TestRelayDoesNotLinkTheNATSServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/e41af43e/directus-realtime/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := string(out)
	if !strings.Contains(deps, "github.com/nats-io/nats.go/jetstream") {
		t.Fatal("go list -deps does not list nats.go/jetstream: the check looks at the wrong thing")
	}
	if strings.Contains(deps, "github.com/nats-io/nats-server") {
		t.Fatal("package relay links nats-server")
	}
}
