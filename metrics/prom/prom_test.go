package prom_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/e41af43e/directus-realtime/internal/opstest"
	"github.com/e41af43e/directus-realtime/metrics"
	"github.com/e41af43e/directus-realtime/metrics/prom"
)

// scrape gathers the collector through a pedantic registry (which checks
// the metrics against their descriptors) and flattens it to
// "name{label=value,...}" → value; histograms give _count and _sum.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			key := func(suffix string) string {
				return mf.GetName() + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func TestNamesFollowConventions(t *testing.T) {
	e := opstest.Start(t, nil)
	e.Create(t, "one")
	e.InjectError(t, "FORBIDDEN")
	e.Overflow(t, "slow")
	// Every metric of the catalogue has a series now, so that every one
	// is linted.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollector(e.Src))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]bool{}
	for _, mf := range mfs {
		families[mf.GetName()] = true
	}
	for _, d := range metrics.Descs {
		if !families[d.Name] {
			t.Errorf("%s has no series to lint", d.Name)
		}
	}
	problems, err := testutil.CollectAndLint(prom.NewCollector(e.Src))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, d := range metrics.Descs {
		if !strings.HasPrefix(d.Name, "directus_") {
			t.Errorf("%s: no directus_ prefix", d.Name)
		}
		if (d.Kind == metrics.Counter) != strings.HasSuffix(d.Name, "_total") {
			t.Errorf("%s: _total is for counters, and every counter has it", d.Name)
		}
		if d.Unit != "" && !strings.Contains(d.Name, "_"+d.Unit) {
			t.Errorf("%s: unit %s not in the name", d.Name, d.Unit)
		}
		for _, l := range d.Labels {
			if l == "uid" || l == "query" {
				t.Errorf("%s: unbounded label %s", d.Name, l)
			}
		}
	}
}

// Every metric the issue names changes as events, resyncs, errors,
// overflows, re-authentications, reconnects and reconciles happen.
func TestScrapeSeesEveryMetricChange(t *testing.T) {
	e := opstest.Start(t, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollector(e.Src))
	opstest.Steps{T: t, Env: e}.Run(func() map[string]float64 { return scrape(t, reg) })
}
