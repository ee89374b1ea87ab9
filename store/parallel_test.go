package store

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/e41af43e/directus-realtime/handlers"
)

type prow struct {
	ID    int64          `json:"id"`
	Title string         `json:"title"`
	Tags  []string       `json:"tags"`
	Extra map[string]any `json:"extra"`
}

// bigArray is a rows array past parallelMin whose strings hold brackets,
// commas and escaped quotes, which the split must step over.
func bigArray(n int) string {
	var b strings.Builder
	b.WriteString(" [\n")
	for i := range n {
		if i > 0 {
			b.WriteString(" ,\t")
		}
		fmt.Fprintf(&b, `{"id":%d,"title":"a \"q\" ],[ {x} \\ %d","tags":["t,]","u"],"extra":{"n":[1,[2,{"k":"]"}]]}}`, i, i)
	}
	b.WriteString("\n] ")
	return b.String()
}

func withProcs(t *testing.T, n int) {
	prev := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

func TestDecodeParallelEqualsUnmarshal(t *testing.T) {
	withProcs(t, 4)
	for _, n := range []int{3000, 3001, 10007} {
		data := []byte(strings.TrimSpace(bigArray(n)))
		if len(data) < parallelMin {
			t.Fatalf("array of %d rows is %d bytes, under parallelMin", n, len(data))
		}
		got, ok := decodeParallel[prow](data, json.Unmarshal)
		if !ok {
			t.Fatalf("%d rows: not decoded in parallel", n)
		}
		var want []prow
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%d rows: parallel decode differs from json.Unmarshal", n)
		}
	}
}

// Whatever json.Unmarshal refuses, the parallel path refuses too, so that
// the usual path finds the bad rows.
func TestDecodeParallelRefuses(t *testing.T) {
	withProcs(t, 4)
	good := strings.TrimSpace(bigArray(3000))
	cases := map[string]string{
		"text after the array": good + `x`,
		"second array":         good + `[]`,
		"bad row":              strings.Replace(good, `{"id":1500,`, `{"id":"x",`, 1),
		"missing comma":        strings.Replace(good, `}} ,	{"id":1500,`, `}} {"id":1500,`, 1),
		"unterminated":         good[:len(good)-1],
		"bad separator":        strings.Replace(good, `}} ,	{"id":1500,`, `}} :	{"id":1500,`, 1),
	}
	for name, data := range cases {
		if data == good {
			t.Fatalf("%s: the case did not change the array", name)
		}
		var want []prow
		if json.Unmarshal([]byte(data), &want) == nil {
			t.Fatalf("%s: json.Unmarshal accepts it; the case is wrong", name)
		}
		if _, ok := decodeParallel[prow]([]byte(data), json.Unmarshal); ok {
			t.Errorf("%s: the parallel path accepted what json.Unmarshal refuses", name)
		}
	}
}

func TestDecodeParallelSmallOrOneCore(t *testing.T) {
	if _, ok := decodeParallel[prow]([]byte(`[{"id":1}]`), json.Unmarshal); ok {
		t.Fatal("a small array took the parallel path")
	}
	withProcs(t, 1)
	if _, ok := decodeParallel[prow]([]byte(strings.TrimSpace(bigArray(3000))), json.Unmarshal); ok {
		t.Fatal("one core took the parallel path")
	}
}

func FuzzSplitArray(f *testing.F) {
	for _, s := range []string{`[]`, `[1]`, `[1,2,3]`, `["a,]",{"b":[1,2]}]`, `[1,2]x`, `[1 2]`, `[`, `["\"]`, `[{]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		data := []byte(s)
		if len(data) == 0 || data[0] != '[' {
			return
		}
		runs := splitArray(data, 3)
		if !json.Valid(data) {
			return
		}
		var all []json.RawMessage
		if json.Unmarshal(data, &all) != nil {
			return
		}
		var joined []json.RawMessage
		for _, r := range runs {
			var part []json.RawMessage
			if err := json.Unmarshal([]byte("["+string(data[r.start:r.end])+"]"), &part); err != nil {
				t.Fatalf("run %q of %q: %v", data[r.start:r.end], s, err)
			}
			if len(part) != r.n || r.first != len(joined) {
				t.Fatalf("run %q of %q: %d elements from %d, counted %d from %d", data[r.start:r.end], s, len(part), len(joined), r.n, r.first)
			}
			joined = append(joined, part...)
		}
		if len(joined) != len(all) {
			t.Fatalf("%q: %d elements in the runs, %d in the array", s, len(joined), len(all))
		}
	})
}

// Options.Unmarshal decodes every row: of a small event, of an init
// decoded in chunks, and row by row when a row is bad.
func TestOptionsUnmarshal(t *testing.T) {
	withProcs(t, 4)
	var calls atomic.Int64
	c, err := New(Options[int64, prow]{
		Key:       func(p prow) int64 { return p.ID },
		Unmarshal: func(b []byte, v any) error { calls.Add(1); return json.Unmarshal(b, v) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := []byte(bigArray(3000))
	if err := c.Handle(handlers.Event{Kind: handlers.KindInit, Data: big}); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 3000 || calls.Load() < 2 {
		t.Fatalf("%d rows after the init, %d calls of Unmarshal", c.Len(), calls.Load())
	}
	calls.Store(0)
	if err := c.Handle(handlers.Event{Kind: handlers.KindCreate, Data: []byte(`{"id":5000,"title":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || c.Len() != 3001 {
		t.Fatalf("create: %d calls, %d rows", calls.Load(), c.Len())
	}
	calls.Store(0)
	err = c.Handle(handlers.Event{Kind: handlers.KindCreate, Data: []byte(`[{"id":5001},{"id":"bad"},{"id":5002}]`)})
	if err == nil || c.Len() != 3003 {
		t.Fatalf("a bad row among good ones: err %v, %d rows", err, c.Len())
	}
	if calls.Load() != 4 { // the array, then each of its three rows
		t.Fatalf("a bad row: %d calls of Unmarshal", calls.Load())
	}
}
