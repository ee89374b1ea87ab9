package prom_test

import (
	"sort"
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
	steps := opstest.Steps{T: t, Env: e}
	late := steps.Late()
	before := scrape(t, reg)

	steps.Activity()
	down := steps.Outage(func() map[string]float64 { return scrape(t, reg) })
	steps.Subscribe(late)
	steps.Overflow()
	after := scrape(t, reg)
	steps.Refuse()
	final := scrape(t, reg)

	rep := "collection=posts,name=posts"
	sub := rep
	for _, k := range []string{
		"directus_connection_transitions_total{cause=abnormal_close,from=connected,to=reconnecting}",
		"directus_connection_transitions_total{cause=none,from=reconnecting,to=connected}",
		"directus_connection_sessions_total{}", "directus_connection_reconnects_total{}",
		"directus_connection_connect_failures_total{}", "directus_connection_reauths_total{}",
		"directus_connection_frames_received_total{}", "directus_connection_frames_sent_total{}",
		"directus_connection_received_bytes_total{}", "directus_connection_sent_bytes_total{}",
		"directus_events_handled_total{}", "directus_handler_latency_seconds_count{}", "directus_handler_latency_seconds_sum{}",
		"directus_subscription_events_total{" + sub + "}",
		"directus_subscription_resyncs_total{cause=reauth," + sub + "}",
		"directus_subscription_resyncs_total{cause=reconnect," + sub + "}",
		"directus_subscription_resyncs_total{cause=requested," + sub + "}",
		"directus_subscription_errors_total{" + sub + "}",
		"directus_subscription_error_events_total{code=FORBIDDEN," + sub + "}",
		"directus_subscription_error_events_total{code=other," + sub + "}",
		"directus_subscription_overflows_total{collection=posts,name=slow}",
		"directus_subscriptions{collection=posts,state=stalled}",
		"directus_replica_rows{" + rep + "}", "directus_replica_rows{collection=posts,name=late}",
		"directus_replica_synced{collection=posts,name=late}",
		"directus_replica_events_applied_total{" + rep + "}", "directus_replica_inits_applied_total{" + rep + "}",
		"directus_replica_resyncs_total{" + rep + "}", "directus_replica_error_events_total{" + rep + "}",
		"directus_replica_reconciles_total{" + rep + "}",
		"directus_replica_reconcile_duration_seconds_count{" + rep + "}", "directus_replica_reconcile_duration_seconds_sum{" + rep + "}",
		"directus_replica_reconcile_changed_rows_total{" + rep + "}",
		"directus_replica_last_reconcile_timestamp_seconds{" + rep + "}",
	} {
		if after[k] <= before[k] {
			t.Errorf("%s did not grow: %v before, %v after", k, before[k], after[k])
		}
	}
	for k, want := range map[string]float64{
		"directus_connection_up{}": 1, "directus_connection_state{state=connected}": 1, "directus_connection_state{state=reconnecting}": 0,
		"directus_replica_synced{" + rep + "}": 1, "directus_replica_synced{collection=,name=late}": 0, // not subscribed yet
		"directus_replica_failing{" + rep + "}": 0, "directus_subscriptions{collection=posts,state=active}": 1,
	} {
		if got, ok := before[k]; !ok || got != want {
			t.Errorf("before: %s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	for k, want := range map[string]float64{
		"directus_connection_up{}": 0, "directus_connection_state{state=connected}": 0, "directus_connection_state{state=reconnecting}": 1,
	} {
		if got := down[k]; got != want {
			t.Errorf("while down: %s = %v, want %v", k, got, want)
		}
	}
	if age, ok := after["directus_subscription_last_event_age_seconds{"+sub+"}"]; !ok || age < 0 || age > 60 {
		t.Errorf("last event age %v (present %v)", age, ok)
	}
	for _, k := range []string{"directus_replica_failing{" + rep + "}", "directus_replica_reconcile_failures_total{" + rep + "}"} {
		if final[k] != 1 {
			t.Errorf("after the refusal: %s = %v, want 1", k, final[k])
		}
	}
	if t.Failed() {
		keys := make([]string, 0, len(after))
		for k := range after {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Logf("scraped after:\n%s", strings.Join(keys, "\n"))
	}
}
