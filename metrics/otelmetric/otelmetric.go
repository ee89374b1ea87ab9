// Package otelmetric exports the library's metrics (the catalogue of
// package metrics) to OpenTelemetry: asynchronous instruments of
// go.opentelemetry.io/otel/metric, observed from an ops.Source at every
// collection, and a Producer for the two histograms.
//
//	src := ops.NewSource(m, nil)
//	reader := sdkmetric.NewPeriodicReader(exporter, sdkmetric.WithProducer(otelmetric.NewProducer(src)))
//	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
//	reg, err := otelmetric.Register(mp, src)
//
// Names are those of the catalogue in OpenTelemetry's form (see
// metrics.OTelName): directus_connection_received_bytes_total is
// directus.connection.received in By. Counters are Float64ObservableCounter
// (cumulative), gauges Float64ObservableGauge, with the catalogue's labels
// as attributes.
//
// The API has no asynchronous histogram, and the library's histograms
// (frame → handler latency, reconcile duration) are counted by the library
// itself, in fixed buckets: recording them again into a synchronous
// instrument would be a second bookkeeping. NewProducer hands them to an
// SDK reader as they are, as cumulative histograms with the library's
// bucket bounds.
//
// Nothing here keeps state besides the registration; it is safe for
// concurrent use.
package otelmetric

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/e41af43e/directus-realtime/metrics"
	"github.com/e41af43e/directus-realtime/ops"
)

// ScopeName is the instrumentation scope of every instrument.
const ScopeName = "github.com/e41af43e/directus-realtime"

// Register creates the instruments of every counter and gauge of the
// catalogue on mp's meter ScopeName and a callback that observes them
// from one Snapshot of src per collection. Unregister the returned
// Registration to stop.
func Register(mp metric.MeterProvider, src *ops.Source) (metric.Registration, error) {
	meter := mp.Meter(ScopeName)
	insts := map[*metrics.Desc]metric.Float64Observable{}
	var all []metric.Observable
	for _, d := range metrics.Descs {
		name, unit := metrics.OTelName(d)
		var inst metric.Float64Observable
		var err error
		switch d.Kind {
		case metrics.Counter:
			inst, err = meter.Float64ObservableCounter(name, metric.WithDescription(d.Help), metric.WithUnit(unit))
		case metrics.Gauge:
			inst, err = meter.Float64ObservableGauge(name, metric.WithDescription(d.Help), metric.WithUnit(unit))
		default:
			continue // histograms: NewProducer
		}
		if err != nil {
			return nil, err
		}
		insts[d] = inst
		all = append(all, inst)
	}
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, s := range metrics.Samples(src.Snapshot()) {
			if inst, ok := insts[s.Desc]; ok {
				o.ObserveFloat64(inst, s.Value, metric.WithAttributeSet(attrs(s)))
			}
		}
		return nil
	}, all...)
}

func attrs(s metrics.Sample) attribute.Set {
	kv := make([]attribute.KeyValue, len(s.LabelValues))
	for i, v := range s.LabelValues {
		kv[i] = attribute.String(s.Desc.Labels[i], v)
	}
	return attribute.NewSet(kv...)
}

// Producer is an sdkmetric.Producer of the library's histograms.
type Producer struct {
	src   *ops.Source
	start time.Time
}

// NewProducer returns a Producer reading src; give it to a reader with
// sdkmetric.WithProducer.
func NewProducer(src *ops.Source) *Producer { return &Producer{src: src, start: time.Now()} }

var _ sdkmetric.Producer = (*Producer)(nil)

// Produce returns the histograms of one Snapshot, cumulative since the
// Producer was made (the library counts from the Manager's New).
func (p *Producer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	snap := p.src.Snapshot()
	byDesc := map[*metrics.Desc]*metricdata.Histogram[float64]{}
	var order []*metrics.Desc
	for _, s := range metrics.Samples(snap) {
		if s.Desc.Kind != metrics.Histogram {
			continue
		}
		h := byDesc[s.Desc]
		if h == nil {
			h = &metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
			byDesc[s.Desc] = h
			order = append(order, s.Desc)
		}
		counts := s.Hist.Counts
		if len(counts) != len(s.Hist.Bounds)+1 {
			counts = append(append([]uint64(nil), counts...), make([]uint64, len(s.Hist.Bounds)+1-len(counts))...)
		}
		h.DataPoints = append(h.DataPoints, metricdata.HistogramDataPoint[float64]{
			Attributes: attrs(s), StartTime: p.start, Time: snap.Time,
			Count: s.Hist.Count, Sum: s.Hist.Sum, Bounds: s.Hist.Bounds, BucketCounts: counts,
		})
	}
	sm := metricdata.ScopeMetrics{Scope: instrumentation.Scope{Name: ScopeName}}
	for _, d := range order {
		name, unit := metrics.OTelName(d)
		sm.Metrics = append(sm.Metrics, metricdata.Metrics{Name: name, Description: d.Help, Unit: unit, Data: *byDesc[d]})
	}
	return []metricdata.ScopeMetrics{sm}, nil
}
