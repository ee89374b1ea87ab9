package harness

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Dist summarises durations.
type Dist struct {
	N                       int
	P50, P90, P99, Max, Avg time.Duration
}

// Summarize returns the percentiles of ds (nearest rank).
func Summarize(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	at := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Dist{N: len(s), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: s[len(s)-1], Avg: sum / time.Duration(len(s))}
}

func (d Dist) String() string {
	if d.N == 0 {
		return "n/a"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", ms(d.P50), ms(d.P90), ms(d.P99), ms(d.Max), d.N)
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) + " ms" }

// Latencies pairs the i-th write with the i-th applied event.
func Latencies(writes, applied []int64) []time.Duration {
	n := min(len(writes), len(applied))
	out := make([]time.Duration, n)
	for i := range n {
		out[i] = time.Duration(applied[i] - writes[i])
	}
	return out
}

// Mem is the memory of this process after a full collection.
type Mem struct {
	HeapInuse uint64 // runtime.MemStats.HeapInuse
	HeapAlloc uint64 // live heap objects
	RSS       uint64 // resident set, after returning free memory to the OS
}

// MeasureMem collects garbage (twice, so that finalizers' leftovers go too),
// returns free memory to the OS and reads the heap and the RSS.
func MeasureMem() Mem {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Mem{HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, RSS: RSS()}
}

// PerRow returns (after-before)/rows of each figure, in bytes.
func PerRow(before, after Mem, rows int) (heapInuse, heapAlloc, rss float64) {
	if rows <= 0 {
		return 0, 0, 0
	}
	f := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(rows) }
	return f(before.HeapInuse, after.HeapInuse), f(before.HeapAlloc, after.HeapAlloc), f(before.RSS, after.RSS)
}

// RSS returns the resident set size of this process (0 where /proc is
// missing).
func RSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(string(f[1]), 10, 64)
	return pages * uint64(os.Getpagesize())
}

// CPUTime is the user and system CPU time this process has used.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// PeakRSS is the largest resident set this process has had, in bytes:
// VmHWM of /proc/self/status, the high-water mark of this program's memory
// (getrusage's maxrss would be no use: Linux carries it across exec, so a
// child started by a large parent starts at the parent's size).
func PeakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}
