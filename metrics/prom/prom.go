// Package prom exports the library's metrics (the catalogue of package
// metrics) to Prometheus with github.com/prometheus/client_golang: a
// Collector that reads an ops.Source at every scrape.
//
//	src := ops.NewSource(m, nil)
//	prometheus.MustRegister(prom.NewCollector(src))
//	http.Handle("/metrics", promhttp.Handler())
//
// The Collector keeps no state: every scrape takes one ops.Snapshot and
// reports its Samples as constant metrics, so a scrape is consistent with
// itself and with the status page. It is safe for concurrent use.
package prom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/e41af43e/directus-realtime/metrics"
	"github.com/e41af43e/directus-realtime/ops"
)

// Collector is a prometheus.Collector of a Source.
type Collector struct {
	src   *ops.Source
	descs map[*metrics.Desc]*prometheus.Desc
}

// NewCollector returns a Collector reading src.
func NewCollector(src *ops.Source) *Collector {
	c := &Collector{src: src, descs: make(map[*metrics.Desc]*prometheus.Desc, len(metrics.Descs))}
	for _, d := range metrics.Descs {
		c.descs[d] = prometheus.NewDesc(d.Name, d.Help, d.Labels, nil)
	}
	return c
}

// Describe sends the descriptor of every metric of the catalogue.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range metrics.Descs {
		ch <- c.descs[d]
	}
}

// Collect takes a Snapshot and sends its samples.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range metrics.Samples(c.src.Snapshot()) {
		pd := c.descs[s.Desc]
		var m prometheus.Metric
		var err error
		switch s.Desc.Kind {
		case metrics.Counter:
			m, err = prometheus.NewConstMetric(pd, prometheus.CounterValue, s.Value, s.LabelValues...)
		case metrics.Gauge:
			m, err = prometheus.NewConstMetric(pd, prometheus.GaugeValue, s.Value, s.LabelValues...)
		case metrics.Histogram:
			m, err = prometheus.NewConstHistogram(pd, s.Hist.Count, s.Hist.Sum, cumulative(s.Hist), s.LabelValues...)
		}
		if err != nil {
			m = prometheus.NewInvalidMetric(pd, err)
		}
		ch <- m
	}
}

// cumulative turns per-bucket counts into Prometheus's cumulative buckets
// (the +Inf bucket is the count).
func cumulative(h *metrics.HistogramValue) map[float64]uint64 {
	out := make(map[float64]uint64, len(h.Bounds))
	var sum uint64
	for i, b := range h.Bounds {
		sum += h.Counts[i]
		out[b] = sum
	}
	return out
}
