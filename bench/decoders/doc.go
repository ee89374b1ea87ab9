// Package decoders measures row decoders on the library's workloads: the
// data of a one-row create, of a 50-row batch and of a 100,000-row init,
// decoded into the rows type of the benchmarks (harness.Post), with
// encoding/json (v1), encoding/json/v2 (GOEXPERIMENT=jsonv2) and three fast
// decoders, and checks each one against encoding/json on hostile input.
//
// It is a module of its own, so that the decoders compared stay out of the
// library's go.mod (see bench/README.md, "Row decoders"):
//
//	cd bench/decoders && go test -run Hostile -v . && go test -run '^$' -bench . -benchmem .
//	cd bench/decoders && GOEXPERIMENT=jsonv2 go test -run '^$' -bench . -benchmem .
package decoders
