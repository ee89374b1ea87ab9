package harness

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/e41af43e/directus-realtime/manager"
)

// The child protocol: a client runs in a process of its own (a Go binary or
// the Node script in bench/sdk), so that its memory is its own.
//
//  1. The parent starts it with the server URL, a token, the number of events
//     to expect and a path for its apply times.
//  2. The child connects, subscribes, applies the init and prints a Ready
//     line (JSON) on stdout.
//  3. The parent writes one Expect line (JSON) on the child's stdin once the
//     expected rows are known (after the writes, in a live run).
//  4. The child waits until it has applied the expected number of events (or
//     none for Quiet), measures its memory, compares its replica with the
//     expected rows, writes its apply times and prints a Result line.

// Ready is the child's first line.
type Ready struct {
	Client string  `json:"client"`
	InitMS float64 `json:"init_ms"` // subscribe to init applied
	Rows   int     `json:"rows"`
}

// Expect is the parent's line to the child.
type Expect struct {
	Expected string `json:"expected"` // a file written by WriteRows
	QuietMS  int    `json:"quiet_ms"` // give up after this long without an event
}

// Result is the child's last line.
type Result struct {
	Client  string `json:"client"`
	Runtime string `json:"runtime"`
	Events  int    `json:"events"` // create, update and delete events applied
	Inits   int    `json:"inits"`  // more than 1: the client resynced
	// Unix milliseconds: connecting, first init applied, last init applied,
	// first and last event applied.
	StartAt     float64 `json:"start_at"`
	FirstInitAt float64 `json:"first_init_at"`
	InitAt      float64 `json:"init_at"`
	FirstAt     float64 `json:"first_at"`
	LastAt      float64 `json:"last_at"`

	Rows    int  `json:"rows"`
	Missing int  `json:"missing"`
	Extra   int  `json:"extra"`
	Changed int  `json:"changed"`
	Correct bool `json:"correct"`

	// Bytes per row of the final replica: heap in use (Go HeapInuse, Node
	// heapUsed), live heap (Go HeapAlloc, Node heapUsed) and resident set,
	// each after a full GC, minus the same figure before connecting.
	HeapPerRow float64 `json:"heap_per_row"`
	LivePerRow float64 `json:"live_per_row"`
	RSSPerRow  float64 `json:"rss_per_row"`
	RSSBytes   float64 `json:"rss_bytes"`
	// PeakRSS is the largest resident set of the whole process up to the
	// final state (VmHWM), in bytes.
	PeakRSS float64 `json:"peak_rss,omitempty"`

	// CPU time (user + system) of the whole process, in milliseconds:
	// from connecting to the init applied, and from then to the final state.
	CPUInitMS   float64 `json:"cpu_init_ms"`
	CPUEventsMS float64 `json:"cpu_events_ms"`

	Goroutines int    `json:"goroutines,omitempty"` // Go: all goroutines of the child at the end
	Quiet      bool   `json:"quiet,omitempty"`      // stopped waiting: no event for QuietMS
	Error      string `json:"error,omitempty"`
}

// DoneAt is when the replica reached its final state: the last event or
// init applied (unix milliseconds).
func (r Result) DoneAt() float64 { return max(r.LastAt, r.InitAt) }

// Throughput is the rate, in events per second, at which the client went
// through the stream of expected events, from the first event applied to
// the final state. A client whose replica is correct is credited with every
// expected event (one that resynced skipped some: the init replaced them);
// one whose replica is wrong only with the events it applied.
func (r Result) Throughput(expected int) float64 {
	start := r.FirstAt
	if start == 0 {
		start = r.FirstInitAt
	}
	if !r.Correct {
		expected = r.Events
	}
	if expected == 0 || r.DoneAt() <= start {
		return 0
	}
	return float64(expected) / ((r.DoneAt() - start) / 1000)
}

// CPUPerEvent is the CPU time the client process spent per expected event
// after its init, in microseconds (0 when its replica is wrong).
func (r Result) CPUPerEvent(expected int) float64 {
	if !r.Correct || expected == 0 {
		return 0
	}
	return r.CPUEventsMS * 1000 / float64(expected)
}

// ChildArgs configure RunChild.
type ChildArgs struct {
	Client  string // "lib", "lib-q1m" or "minimal"
	URL     string
	Token   string
	Events  int
	Times   string // file for the apply times (float64 unix ms, little endian); "" for none
	Timeout time.Duration
	// CPUProfile, when set, receives a CPU profile of the event phase (from
	// the init applied to the final state).
	CPUProfile string
}

// NewGoClient returns the client named kind, marking into marks.
func NewGoClient(kind string, marks *Marks) (Client, error) {
	switch kind {
	case "lib":
		return &LibClient{Marks: marks}, nil
	case "lib-q1m":
		// The library with a subscription queue that holds a whole
		// firehose, so that it never overflows and resyncs.
		return &LibClient{Marks: marks, ManagerOptions: &manager.Options{QueueSize: 1 << 20}}, nil
	case "lib-b1m":
		// The library with a subscription queue bounded at 1 MiB of data
		// instead of DefaultQueueBytes: what the queue's budget costs in
		// peak memory.
		return &LibClient{Marks: marks, ManagerOptions: &manager.Options{QueueBytes: 1 << 20}}, nil
	case "minimal":
		return &MinimalClient{Marks: marks}, nil
	}
	return nil, fmt.Errorf("unknown client %q (want lib, lib-q1m, lib-b1m or minimal)", kind)
}

func unixMS(t time.Time) float64 {
	if t.IsZero() || t.UnixNano() <= 0 {
		return 0
	}
	return float64(t.UnixNano()) / 1e6
}

// RunChild runs one Go client under the child protocol.
func RunChild(a ChildArgs, stdin io.Reader, stdout io.Writer) error {
	if a.Timeout <= 0 {
		a.Timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.Timeout)
	defer cancel()
	marks := NewMarks(a.Events)
	c, err := NewGoClient(a.Client, marks)
	if err != nil {
		return err
	}
	before := MeasureMem()
	start, cpu0 := time.Now(), CPUTime()
	if err := c.Start(ctx, a.URL, a.Token); err != nil {
		return fmt.Errorf("%s: start: %w", a.Client, err)
	}
	defer c.Close()
	cpu1 := CPUTime()
	if a.CPUProfile != "" {
		f, err := os.Create(a.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(Ready{Client: a.Client, InitMS: float64(marks.InitAt().Sub(start)) / 1e6, Rows: len(c.Rows())}); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdin).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading the expect line: %w", err)
	}
	var exp Expect
	if err := json.Unmarshal(line, &exp); err != nil {
		return fmt.Errorf("expect line: %w", err)
	}
	quiet := time.Duration(exp.QuietMS) * time.Millisecond
	if quiet <= 0 {
		quiet = 5 * time.Second
	}
	want, err := ReadRows(exp.Expected)
	if err != nil {
		return err
	}
	res := Result{Client: a.Client, Runtime: runtime.Version(), StartAt: unixMS(start)}
	converged := func() bool { return Compare(c.Rows(), want).OK() }
	if strings.HasPrefix(a.Client, "lib") {
		// A resync of a large collection (the server reads it, the client
		// applies it) can take seconds on a loaded machine.
		quiet = max(quiet, 30*time.Second)
	}
	if err := marks.WaitDone(ctx, a.Events, quiet, converged); err != nil {
		if !errors.Is(err, errQuiet) {
			return err
		}
		res.Quiet = true
	}
	cpu2, peak := CPUTime(), PeakRSS()
	if a.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	res.CPUInitMS, res.CPUEventsMS = float64(cpu1-cpu0)/1e6, float64(cpu2-cpu1)/1e6
	want = nil // measured without it (the closure above holds the variable)
	after := MeasureMem()
	if want, err = ReadRows(exp.Expected); err != nil {
		return err
	}
	rows := c.Rows()
	d := Compare(rows, want)
	times := marks.Times()
	res.Events, res.Inits = marks.Count(), marks.Inits()
	res.FirstInitAt, res.InitAt = unixMS(marks.FirstInitAt()), unixMS(marks.InitAt())
	if len(times) > 0 {
		res.FirstAt, res.LastAt = float64(times[0])/1e6, float64(times[len(times)-1])/1e6
	}
	res.Rows, res.Missing, res.Extra, res.Changed, res.Correct = len(rows), d.Missing, d.Extra, d.Changed, d.OK()
	res.HeapPerRow, res.LivePerRow, res.RSSPerRow = PerRow(before, after, len(rows))
	res.RSSBytes = float64(after.RSS)
	res.PeakRSS = peak
	res.Goroutines = runtime.NumGoroutine()
	if a.Times != "" {
		if err := writeTimes(a.Times, times); err != nil {
			return err
		}
	}
	return enc.Encode(res)
}

func writeTimes(path string, times []int64) error {
	b := make([]byte, 8*len(times))
	for i, t := range times {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(float64(t)/1e6))
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadTimes reads an apply-times file (float64 unix milliseconds, little
// endian) as unix nanoseconds.
func ReadTimes(path string) ([]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(b)/8)
	for i := range out {
		out[i] = int64(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])) * 1e6)
	}
	return out, nil
}
