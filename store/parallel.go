package store

import (
	"github.com/e41af43e/directus-realtime/internal/jsonskip"
	"runtime"
	"sync"
)

// parallelMin is the size of a rows array from which it is decoded in
// chunks on every core: below it, the goroutines and the chunk copies cost
// more than they save. An init of 100,000 rows is megabytes; an event of a
// few rows stays on the fast path.
const parallelMin = 256 << 10

// decodeParallel decodes a JSON array of rows (data, trimmed, starting with
// '[') in chunks on all cores, each chunk a copy of consecutive elements in
// brackets, and joins them in order, so that the result is the one
// json.Unmarshal of the whole array would give. It reports false when the
// array is small, when only one core is usable, or when any chunk fails:
// the caller then decodes the usual way, which finds the bad rows one by
// one.
//
// data comes from protocol.DecodeMessage, which validated the frame, so the
// element boundaries found by the scan are those of valid JSON; a malformed
// array (a caller of Handle with hand-made events) at worst splits badly,
// and then a chunk fails to decode and the usual path reports it.
func decodeParallel[T any](data []byte, unmarshal func([]byte, any) error) ([]T, bool) {
	workers := runtime.GOMAXPROCS(0)
	if len(data) < parallelMin || workers < 2 {
		return nil, false
	}
	bounds := splitArray(data, workers*4)
	if len(bounds) < 2 {
		return nil, false
	}
	// The split counted the elements of each run: the rows are decoded in
	// place into one slice of the final size, each run into its own window
	// of it (a slice of zero length and the run's capacity, which
	// json.Unmarshal appends to), so that no chunk grows a slice of its own
	// and nothing is copied after. A decoder that does not decode in place
	// (Options.Unmarshal) is copied into the window.
	total := 0
	for _, b := range bounds {
		total += b.n
	}
	items := make([]T, total)
	failed := make([]bool, len(bounds))
	next := make(chan int, len(bounds))
	for i := range bounds {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(workers, len(bounds)) {
		wg.Go(func() {
			var buf []byte
			off := 0
			for i := range next {
				b := bounds[i]
				off = b.first
				window := items[off : off : off+b.n]
				buf = append(append(append(buf[:0], '['), data[b.start:b.end]...), ']')
				part := window
				if unmarshal(buf, &part) != nil || len(part) != b.n {
					failed[i] = true
					continue
				}
				if b.n > 0 && &part[0] != &items[off] {
					copy(items[off:off+b.n], part)
				}
			}
		})
	}
	wg.Wait()
	for _, f := range failed {
		if f {
			return nil, false
		}
	}
	return items, true
}

// run is a run of consecutive elements of a JSON array: its text is
// data[start:end], it holds n elements, the first of which is element
// number first of the array.
type run struct {
	start, end, first, n int
}

// splitArray cuts the elements of the JSON array data into at most about
// want runs of consecutive elements of similar byte size (the text of a run
// leaves out the comma that follows it). An empty or unscannable array
// gives none.
func splitArray(data []byte, want int) []run {
	i := skipWS(data, 1)
	if i >= len(data) || data[i] == ']' {
		return nil
	}
	target := max((len(data)-2)/want, 1)
	var out []run
	cur := run{start: i}
	for i < len(data) {
		end := jsonskip.Value(data, i)
		if end <= i || end > len(data) {
			return nil
		}
		cur.n++
		j := skipWS(data, end)
		if j >= len(data) {
			return nil
		}
		switch data[j] {
		case ']':
			if skipWS(data, j+1) != len(data) {
				return nil // text after the array: json.Unmarshal refuses it, so must this
			}
			cur.end = end
			return append(out, cur)
		case ',':
			if end-cur.start >= target {
				cur.end = end
				out = append(out, cur)
				cur = run{start: skipWS(data, j+1), first: cur.first + cur.n}
			}
			i = skipWS(data, j+1)
		default:
			return nil
		}
	}
	return nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
