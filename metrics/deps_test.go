package metrics_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The core packages, ops and this catalogue depend on no metrics library:
// only metrics/prom and metrics/otelmetric bring Prometheus and OpenTelemetry in.
func TestCoreImportsNoMetricsLibrary(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	const mod = "github.com/e41af43e/directus-realtime/"
	pkgs := []string{"conn", "manager", "store", "protocol", "handlers", "graphql", "directustest", "ops", "metrics"}
	args := []string{"list", "-deps"}
	for _, p := range pkgs {
		args = append(args, mod+p)
	}
	out, err := exec.Command(goTool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < len(pkgs) {
		t.Fatalf("go list listed %d packages", len(deps))
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/prometheus/") || strings.HasPrefix(d, "go.opentelemetry.io/") {
			t.Errorf("a core package depends on %s", d)
		}
	}
}
