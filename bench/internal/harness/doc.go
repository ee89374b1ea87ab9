// Package harness measures the library against a fixed, seeded workload.
//
// It holds the Go benchmarks (bench_test.go, run with
// go test -bench . -benchmem ./bench/...) and the pieces that the load tool
// (bench/cmd/load) and the three-way comparison (bench/cmd/compare) share:
//
//   - Workload: an init of N rows of the seeded posts collection, then M
//     writes (single and batch creates, updates and deletes, deletes keyed by
//     strings as a URL path names them and by numbers as a JSON body does),
//     all drawn from one seed, and the model of the rows they leave behind;
//   - Writer: the same writes made in process on a directustest.Server or
//     over the REST API of a real Directus;
//   - LibClient (manager + store.Collection) and MinimalClient (the smallest
//     hand-written client: one coder/websocket socket, one json.Unmarshal per
//     frame, one map), both keeping a replica and timestamping every applied
//     event in Marks;
//   - Recorder and ReplayServer: the frames one subscription received during
//     a live run, replayed to any client as fast as the socket allows, so that
//     the client's own processing rate is measured rather than the server's;
//   - the child-process protocol shared by the Go clients and the Node
//     script of the official @directus/sdk (bench/sdk).
//
// Nothing here is part of the library's API.
package harness
