package otelmetric_test

import (
	"context"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/e41af43e/directus-realtime/internal/opstest"
	"github.com/e41af43e/directus-realtime/metrics"
	"github.com/e41af43e/directus-realtime/metrics/otelmetric"
)

// collect reads the manual reader and flattens what it got under the
// Prometheus names of the catalogue, as opstest.Steps.Run expects.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	promName := map[string]string{}
	for _, d := range metrics.Descs {
		n, _ := metrics.OTelName(d)
		promName[n] = d.Name
	}
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	key := func(name string, set attribute.Set) string {
		var labels []string
		for _, kv := range set.ToSlice() {
			labels = append(labels, string(kv.Key)+"="+kv.Value.AsString())
		}
		sort.Strings(labels)
		return name + "{" + strings.Join(labels, ",") + "}"
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != otelmetric.ScopeName {
			t.Fatalf("scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			name, ok := promName[m.Name]
			if !ok {
				t.Fatalf("metric %q is not in the catalogue", m.Name)
			}
			switch data := m.Data.(type) {
			case metricdata.Sum[float64]:
				if !data.IsMonotonic || data.Temporality != metricdata.CumulativeTemporality {
					t.Fatalf("%s: counter not monotonic and cumulative", m.Name)
				}
				for _, dp := range data.DataPoints {
					out[key(name, dp.Attributes)] = dp.Value
				}
			case metricdata.Gauge[float64]:
				for _, dp := range data.DataPoints {
					out[key(name, dp.Attributes)] = dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					var n uint64
					for _, c := range dp.BucketCounts {
						n += c
					}
					if n != dp.Count || len(dp.BucketCounts) != len(dp.Bounds)+1 {
						t.Fatalf("%s: buckets %v for count %d and bounds %v", m.Name, dp.BucketCounts, dp.Count, dp.Bounds)
					}
					out[key(name+"_count", dp.Attributes)] = float64(dp.Count)
					out[key(name+"_sum", dp.Attributes)] = dp.Sum
				}
			default:
				t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return out
}

// An OpenTelemetry reader sees every metric the issue names change, as
// the Prometheus scrape does.
func TestReaderSeesEveryMetricChange(t *testing.T) {
	e := opstest.Start(t, nil)
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(otelmetric.NewProducer(e.Src)))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	reg, err := otelmetric.Register(mp, e.Src)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Unregister() }()
	opstest.Steps{T: t, Env: e}.Run(func() map[string]float64 { return collect(t, reader) })
}

func TestNames(t *testing.T) {
	for d, want := range map[*metrics.Desc][2]string{
		metrics.ConnBytesIn:      {"directus.connection.received", "By"},
		metrics.HandlerLatency:   {"directus.handler.latency", "s"},
		metrics.ConnFramesIn:     {"directus.connection.frames.received", ""},
		metrics.RepLastReconcile: {"directus.replica.last.reconcile.timestamp", "s"},
	} {
		if n, u := metrics.OTelName(d); n != want[0] || u != want[1] {
			t.Errorf("OTelName(%s) = %s %s, want %v", d.Name, n, u, want)
		}
	}
}
