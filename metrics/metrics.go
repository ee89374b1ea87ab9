// Package metrics is the catalogue of the library's metrics, shared by the
// Prometheus collector (metrics/prom) and the OpenTelemetry instruments
// (metrics/otelmetric): which metrics exist, their names, kinds, units and
// labels, and their values in an ops.Snapshot. Both exporters read the same
// Samples of the same Snapshot, so they report the same figures; neither
// keeps a counter of its own.
//
// Names follow Prometheus conventions: a "directus_" prefix, base units
// (seconds, bytes), "_total" on counters. Labels are bounded: a state, a
// cause or an error code from fixed sets, the collection and the name the
// operator gave a replica or subscription in the ops.Source; never a uid or
// a query. Subscriptions not registered by name are counted only by
// collection and state.
//
// The package depends on no metrics library.
package metrics

import (
	"strings"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/ops"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Kind is the type of a metric.
type Kind int

const (
	Counter Kind = iota + 1
	Gauge
	Histogram
)

// Desc describes one metric.
type Desc struct {
	// Name is the Prometheus name, e.g. "directus_connection_frames_received_total".
	Name string
	Help string
	Kind Kind
	// Unit is the base unit: "seconds", "bytes", or "" for a count.
	Unit   string
	Labels []string
}

// Sample is one value of a metric: LabelValues in the order of
// Desc.Labels, and Value, or Hist for a histogram.
type Sample struct {
	Desc        *Desc
	LabelValues []string
	Value       float64
	Hist        *HistogramValue
}

// HistogramValue is a cumulative histogram: Counts[i] observations in
// (Bounds[i-1], Bounds[i]], the last element those above the last bound.
type HistogramValue struct {
	Bounds []float64
	Counts []uint64
	Sum    float64
	Count  uint64
}

var (
	lSub     = []string{"collection", "name"}
	lReplica = []string{"collection", "name"}
)

func desc(name, help string, kind Kind, unit string, labels ...string) *Desc {
	return &Desc{Name: "directus_" + name, Help: help, Kind: kind, Unit: unit, Labels: labels}
}

// The catalogue.
var (
	ConnUp              = desc("connection_up", "1 while the connection is up and authenticated, else 0.", Gauge, "")
	ConnState           = desc("connection_state", "1 for the connection's current state, 0 for the others.", Gauge, "", "state")
	ConnTransitions     = desc("connection_transitions_total", "State changes of the connection, by from, to and cause.", Counter, "", "from", "to", "cause")
	ConnSessions        = desc("connection_sessions_total", "Sessions that came up: the first connect and every reconnect.", Counter, "")
	ConnReconnects      = desc("connection_reconnects_total", "Sessions that replaced a lost one.", Counter, "")
	ConnFailures        = desc("connection_connect_failures_total", "Failed connect attempts (dial, upgrade, authentication).", Counter, "")
	ConnReauths         = desc("connection_reauths_total", "Re-authentications after TOKEN_EXPIRED.", Counter, "")
	ConnRefreshes       = desc("connection_token_refreshes_total", "Token refreshes before a known expiry.", Counter, "")
	ConnFramesIn        = desc("connection_frames_received_total", "Frames read from the server.", Counter, "")
	ConnFramesOut       = desc("connection_frames_sent_total", "Frames written to the server.", Counter, "")
	ConnBytesIn         = desc("connection_received_bytes_total", "Payload bytes read from the server.", Counter, "bytes")
	ConnBytesOut        = desc("connection_sent_bytes_total", "Payload bytes written to the server.", Counter, "bytes")
	ConnRateLimited     = desc("connection_rate_limited_total", "REQUESTS_EXCEEDED answers of the server's rate limiter.", Counter, "")
	ConnLastFrameAge    = desc("connection_last_frame_age_seconds", "Time since the last frame was read from the server.", Gauge, "seconds")
	EventsHandled       = desc("events_handled_total", "Events handed to handlers, over every subscription.", Counter, "")
	HandlerLatency      = desc("handler_latency_seconds", "Time from a frame's arrival to the call of a handler with its event.", Histogram, "seconds")
	Subscriptions       = desc("subscriptions", "Live subscriptions by collection and state.", Gauge, "", "collection", "state")
	SubEvents           = desc("subscription_events_total", "Events handed to the subscription's handler, inits included.", Counter, "", lSub...)
	SubResyncs          = desc("subscription_resyncs_total", "Fresh inits delivered with Resync set, by cause.", Counter, "", append(lSub, "cause")...)
	SubOverflows        = desc("subscription_overflows_total", "Queue overflows: queued events discarded and replaced by a resync.", Counter, "", lSub...)
	SubErrors           = desc("subscription_errors_total", "Error events of the server and handler errors.", Counter, "", lSub...)
	SubErrorEvents      = desc("subscription_error_events_total", "Error frames the server sent for the subscription, by code.", Counter, "", append(lSub, "code")...)
	SubPanics           = desc("subscription_handler_panics_total", "Recovered panics of the handler.", Counter, "", lSub...)
	SubQueued           = desc("subscription_queued_events", "Events waiting for the handler.", Gauge, "", lSub...)
	SubLastEventAge     = desc("subscription_last_event_age_seconds", "Time since the last event handed to the handler was received.", Gauge, "seconds", lSub...)
	RepRows             = desc("replica_rows", "Rows held by the replica.", Gauge, "", lReplica...)
	RepSynced           = desc("replica_synced", "1 once the replica's first init was applied.", Gauge, "", lReplica...)
	RepFailing          = desc("replica_failing", "1 while the replica cannot follow the server (refused, undecodable).", Gauge, "", lReplica...)
	RepEvents           = desc("replica_events_applied_total", "Create, update and delete events applied.", Counter, "", lReplica...)
	RepInits            = desc("replica_inits_applied_total", "Inits applied, the first included.", Counter, "", lReplica...)
	RepResyncs          = desc("replica_resyncs_total", "Inits applied with Resync set.", Counter, "", lReplica...)
	RepErrorEvents      = desc("replica_error_events_total", "Error events received (each stands for a lost event).", Counter, "", lReplica...)
	RepBadRows          = desc("replica_bad_rows_total", "Rows or keys that did not decode.", Counter, "", lReplica...)
	RepStale            = desc("replica_stale_rows_skipped_total", "Rows kept because the stale guard said the incoming one was older.", Counter, "", lReplica...)
	RepReconciles       = desc("replica_reconciles_total", "Reconciles started.", Counter, "", lReplica...)
	RepReconcileFail    = desc("replica_reconcile_failures_total", "Reconciles that failed.", Counter, "", lReplica...)
	RepReconcileChanged = desc("replica_reconcile_changed_rows_total", "Rows reconciles added, changed or removed: what events had missed.", Counter, "", lReplica...)
	RepReconcileTime    = desc("replica_reconcile_duration_seconds", "Time reconciles took (sum and count).", Histogram, "seconds", lReplica...)
	RepLastReconcile    = desc("replica_last_reconcile_timestamp_seconds", "When the last reconcile ended, in Unix seconds.", Gauge, "seconds", lReplica...)
	RepListenerPanics   = desc("replica_listener_panics_total", "Recovered panics of listeners.", Counter, "", lReplica...)
)

// Descs lists the catalogue.
var Descs = []*Desc{
	ConnUp, ConnState, ConnTransitions, ConnSessions, ConnReconnects, ConnFailures, ConnReauths, ConnRefreshes,
	ConnFramesIn, ConnFramesOut, ConnBytesIn, ConnBytesOut, ConnRateLimited, ConnLastFrameAge,
	EventsHandled, HandlerLatency, Subscriptions,
	SubEvents, SubResyncs, SubOverflows, SubErrors, SubErrorEvents, SubPanics, SubQueued, SubLastEventAge,
	RepRows, RepSynced, RepFailing, RepEvents, RepInits, RepResyncs, RepErrorEvents, RepBadRows, RepStale,
	RepReconciles, RepReconcileFail, RepReconcileChanged, RepReconcileTime, RepLastReconcile, RepListenerPanics,
}

var connStates = []conn.State{conn.StateIdle, conn.StateConnecting, conn.StateConnected, conn.StateReconnecting, conn.StateClosed}

// knownCodes are the error codes Directus documents; others are "other",
// so that a server cannot grow a label without bound.
var knownCodes = map[protocol.Code]bool{
	protocol.CodeAuthFailed: true, protocol.CodeTokenExpired: true, protocol.CodeAuthTimeout: true,
	protocol.CodeInvalidPayload: true, protocol.CodeForbidden: true, protocol.CodeInvalidCollection: true,
	protocol.CodeInvalidQuery: true, protocol.CodeRequestsExceeded: true, protocol.CodeServiceUnavailable: true,
}

// CodeLabel is the label of an error code: the code when Directus
// documents it, "other" otherwise.
func CodeLabel(c protocol.Code) string {
	if knownCodes[c] {
		return string(c)
	}
	return "other"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Samples returns every metric's values in snap.
func Samples(snap ops.Snapshot) []Sample {
	var out []Sample
	add := func(d *Desc, v float64, labels ...string) {
		out = append(out, Sample{Desc: d, LabelValues: labels, Value: v})
	}
	c := snap.Conn
	add(ConnUp, b2f(c.State == conn.StateConnected))
	for _, s := range connStates {
		add(ConnState, b2f(c.State == s), s.String())
	}
	for _, tc := range c.Transitions {
		add(ConnTransitions, float64(tc.Count), tc.From.String(), tc.To.String(), tc.Cause)
	}
	add(ConnSessions, float64(c.Sessions))
	add(ConnReconnects, float64(c.Reconnects))
	add(ConnFailures, float64(c.ConnectFailures))
	add(ConnReauths, float64(c.Reauths))
	add(ConnRefreshes, float64(c.Refreshes))
	add(ConnFramesIn, float64(c.FramesIn))
	add(ConnFramesOut, float64(c.FramesOut))
	add(ConnBytesIn, float64(c.BytesIn))
	add(ConnBytesOut, float64(c.BytesOut))
	add(ConnRateLimited, float64(c.RateLimited))
	if !c.LastFrame.IsZero() {
		add(ConnLastFrameAge, max(0, snap.Time.Sub(c.LastFrame).Seconds()))
	}

	add(EventsHandled, float64(snap.Events))
	out = append(out, Sample{Desc: HandlerLatency, Hist: latency(snap.Latency)})

	type collState struct{ coll, state string }
	counts := map[collState]int{}
	for _, s := range snap.Subscriptions {
		counts[collState{s.Collection, s.State.String()}]++
		if s.Name == "" {
			continue
		}
		l := []string{s.Collection, s.Name}
		st := s.Stats
		add(SubEvents, float64(st.Events), l...)
		for cause := manager.ResyncCause(0); cause < manager.NumResyncCauses; cause++ {
			add(SubResyncs, float64(st.ResyncsByCause[cause]), s.Collection, s.Name, cause.String())
		}
		add(SubOverflows, float64(st.Overflows), l...)
		add(SubErrors, float64(st.Errors), l...)
		byLabel := map[string]uint64{}
		for code, n := range st.ErrorCodes {
			byLabel[CodeLabel(code)] += n
		}
		for code, n := range byLabel {
			add(SubErrorEvents, float64(n), s.Collection, s.Name, code)
		}
		add(SubPanics, float64(st.Panics), l...)
		add(SubQueued, float64(st.Queued), l...)
		if !st.LastEvent.IsZero() {
			add(SubLastEventAge, max(0, snap.Time.Sub(st.LastEvent).Seconds()), l...)
		}
	}
	for k, n := range counts {
		add(Subscriptions, float64(n), k.coll, k.state)
	}

	for _, r := range snap.Replicas {
		l := []string{r.Collection, r.Name}
		st := r.Stats
		add(RepRows, float64(r.Rows), l...)
		add(RepSynced, b2f(r.Synced), l...)
		add(RepFailing, b2f(r.Failure != ""), l...)
		add(RepEvents, float64(st.Events), l...)
		add(RepInits, float64(st.Inits), l...)
		add(RepResyncs, float64(st.Resyncs), l...)
		add(RepErrorEvents, float64(st.Errors), l...)
		add(RepBadRows, float64(st.BadRows), l...)
		add(RepStale, float64(st.StaleSkipped), l...)
		add(RepReconciles, float64(st.Reconciles), l...)
		add(RepReconcileFail, float64(st.ReconcileFailures), l...)
		add(RepReconcileChanged, float64(st.ReconcileChanges), l...)
		out = append(out, Sample{Desc: RepReconcileTime, LabelValues: l,
			Hist: &HistogramValue{Counts: []uint64{st.Reconciles}, Sum: st.ReconcileTime.Seconds(), Count: st.Reconciles}})
		if !r.LastReconcile.IsZero() {
			add(RepLastReconcile, float64(r.LastReconcile.UnixNano())/1e9, l...)
		}
		add(RepListenerPanics, float64(st.ListenerPanics), l...)
	}
	return out
}

func latency(l manager.Latency) *HistogramValue {
	h := &HistogramValue{Counts: l.Counts, Sum: l.Sum.Seconds(), Count: l.Count}
	for _, b := range l.Buckets {
		h.Bounds = append(h.Bounds, b.Seconds())
	}
	return h
}

// OTelName returns the OpenTelemetry name and unit of d: the Prometheus
// name without "_total" and without its unit, dots for the underscores,
// and the unit in UCUM ("s", "By"; "" for counts).
func OTelName(d *Desc) (name, unit string) {
	n := strings.TrimSuffix(d.Name, "_total")
	switch d.Unit {
	case "seconds":
		n, unit = strings.TrimSuffix(n, "_seconds"), "s"
	case "bytes":
		n, unit = strings.Replace(n, "_bytes", "", 1), "By"
	}
	return strings.ReplaceAll(n, "_", "."), unit
}
