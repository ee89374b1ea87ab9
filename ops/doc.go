// Package ops makes the library operable in production: readiness and
// liveness probes and a live status page, as net/http Handlers, read from a
// Source. The metrics packages (metrics/prom for Prometheus, metrics/otelmetric
// for OpenTelemetry) read the same Source, so probes, page and metrics
// agree, and the core packages depend on neither.
//
//	src := ops.NewSource(m, nil)
//	_, _ = src.AddReplica("posts", posts)                // a *store.Collection
//	mux.Handle("/readyz", src.ReadyHandler())
//	mux.Handle("/livez", src.LiveHandler())
//	mux.Handle("/debug/directus/", src.StatusHandler(nil)) // behind your own auth
//
// # Guarantees
//
// A Source keeps no counter of its own: every figure comes from the Stats
// of the Conn, the Manager, its subscriptions and the registered replicas,
// read at the moment of a Snapshot. Readiness (Source.Ready) is true when
// the connection is up and every registered replica is synced and not
// failing; the 503 answer names each problem and since when. Liveness
// (Source.Live) fails only when the library is stuck, as defined there,
// never because Directus is down.
//
// Nothing the handlers serve holds a token or a password: the library's
// errors never carry one, and queries are shown redacted (Redact). The
// status page still shows collections, uids, counts and error messages:
// mount it behind the service's own authentication, as net/http/pprof.
//
// # Concurrency
//
// All methods of Source and its handlers are safe for concurrent use.
package ops
