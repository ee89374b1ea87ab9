// Package soak holds the library's long-running reliability tests; it has no
// code of its own, only tests.
//
// TestSoak runs managers and replicas against the embedded server through a
// fault-injecting proxy while writers mutate collections, and applies a
// seeded random schedule of faults: server restarts and dropped sockets,
// proxy cuts, stalls, split and delayed frames and refused dials, token
// expiry, bursts of thousands of events, handlers and listeners that block
// until their queues overflow, and malformed, unknown and uid-less frames.
// When the faults stop, every replica must equal the server's rows for its
// query, every subscription must be active and restored exactly once on the
// server, no secret may have reached a log line or an error, and the
// counters must show that the faults really happened. A full run applies
// 1,000 faults (two seeds of 500); -short applies a few dozen.
//
// The load tests hold 10,000 live subscriptions on one connection and 100
// managers on one server, and log heap, RSS and goroutines at steady state
// and after every connection was replaced.
//
// The seeds are fixed; SOAK_SEED=n runs one seed instead, SOAK_FAULTS=n sets
// the number of faults per seed. Figures from these tests are recorded in
// bench/README.md, section "Reliability".
package soak
