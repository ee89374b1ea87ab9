package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"time"
)

// Post is a row of the seeded posts collection: every field is always set by
// the workload, so a replica can be compared field by field.
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

// OpKind is the kind of one write of the workload.
type OpKind uint8

// The writes of a workload. The comments give the REST request each one
// stands for and the frames it produces per subscription.
const (
	OpCreate      OpKind = iota // POST /items/posts {…}: 1 create frame
	OpCreateBatch               // POST /items/posts [{…},…]: 1 create frame per item
	OpUpdate                    // PATCH /items/posts/{id}: 1 update frame
	OpUpdateBatch               // PATCH /items/posts {"keys":[…],"data":{…}}: 1 update frame with every row
	OpDelete                    // DELETE /items/posts/{id}: 1 delete frame, key as a string
	OpDeleteBatch               // DELETE /items/posts [1,2]: 1 delete frame, keys as numbers
)

func (k OpKind) String() string {
	return [...]string{"create", "create-batch", "update", "update-batch", "delete", "delete-batch"}[k]
}

// Patch is the change an update makes; nil fields are left alone.
type Patch struct {
	Title  *string
	Status *string
	Views  *int64
}

// Map returns the patch as a JSON body.
func (p Patch) Map() map[string]any {
	m := map[string]any{}
	if p.Title != nil {
		m["title"] = *p.Title
	}
	if p.Status != nil {
		m["status"] = *p.Status
	}
	if p.Views != nil {
		m["views"] = *p.Views
	}
	return m
}

func (p Patch) apply(row Post) Post {
	if p.Title != nil {
		row.Title = *p.Title
	}
	if p.Status != nil {
		row.Status = *p.Status
	}
	if p.Views != nil {
		row.Views = *p.Views
	}
	return row
}

// Op is one write. Picks choose the rows it targets among the live ones
// (pick % len(live), distinct), so the same plan runs on any server, whatever
// ids it assigns.
type Op struct {
	Kind  OpKind
	Items []Post   // creates (IDs unset)
	Picks []uint64 // updates and deletes
	Patch Patch
}

// Frames is the number of subscription frames the op produces.
func (o Op) Frames() int {
	if o.Kind == OpCreateBatch {
		return len(o.Items)
	}
	return 1
}

// Workload is a fixed sequence of writes drawn from a seed.
type Workload struct {
	Seed   uint64
	Init   []Post // created before anyone subscribes
	Ops    []Op
	Events int // frames per subscription that the ops produce
}

// Prefix returns the workload cut to its first k writes.
func (w *Workload) Prefix(k int) *Workload {
	p := &Workload{Seed: w.Seed, Init: w.Init, Ops: w.Ops[:min(k, len(w.Ops))]}
	for _, op := range p.Ops {
		p.Events += op.Frames()
	}
	return p
}

var statuses = []string{"draft", "published", "archived"}

// NewWorkload draws an init of n rows and m writes from seed. The mix is 35%
// single creates, 5% batch creates (2 to 5 items), 30% single updates, 10%
// batch updates of 10 rows, 12% single deletes (string key) and 8% batch
// deletes of 2 to 5 rows (number keys). Rows are never deleted below 10.
func NewWorkload(seed uint64, n, m int) *Workload {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := &Workload{Seed: seed}
	seq := 0
	item := func() Post {
		seq++
		return Post{
			Title:  "post " + strconv.Itoa(seq) + " " + words[rng.IntN(len(words))],
			Status: statuses[rng.IntN(len(statuses))],
			Views:  rng.Int64N(1_000_000),
		}
	}
	w.Init = make([]Post, n)
	for i := range w.Init {
		w.Init[i] = item()
	}
	live := n
	picks := func(k int) []uint64 {
		p := make([]uint64, k)
		for i := range p {
			p[i] = rng.Uint64()
		}
		return p
	}
	w.Ops = make([]Op, 0, m)
	for range m {
		r := rng.IntN(100)
		var op Op
		switch {
		case r < 35 || live < 10:
			op = Op{Kind: OpCreate, Items: []Post{item()}}
		case r < 40:
			op = Op{Kind: OpCreateBatch, Items: make([]Post, 2+rng.IntN(4))}
			for i := range op.Items {
				op.Items[i] = item()
			}
		case r < 70:
			op = Op{Kind: OpUpdate, Picks: picks(1), Patch: randomPatch(rng)}
		case r < 80:
			op = Op{Kind: OpUpdateBatch, Picks: picks(min(10, live)), Patch: randomPatch(rng)}
		case r < 92:
			op = Op{Kind: OpDelete, Picks: picks(1)}
		default:
			op = Op{Kind: OpDeleteBatch, Picks: picks(2 + rng.IntN(4))}
		}
		switch op.Kind {
		case OpCreate, OpCreateBatch:
			live += len(op.Items)
		case OpDelete, OpDeleteBatch:
			live -= len(op.Picks)
		}
		w.Events += op.Frames()
		w.Ops = append(w.Ops, op)
	}
	return w
}

func randomPatch(rng *rand.Rand) Patch {
	var p Patch
	switch rng.IntN(4) {
	case 0:
		t := "edited " + words[rng.IntN(len(words))] + " " + strconv.Itoa(rng.IntN(1000))
		p.Title = &t
	case 1:
		s := statuses[rng.IntN(len(statuses))]
		p.Status = &s
	case 2:
		v := rng.Int64N(1_000_000)
		p.Views = &v
	default:
		t := "rewritten " + words[rng.IntN(len(words))]
		v := rng.Int64N(1_000_000)
		p.Title, p.Views = &t, &v
	}
	return p
}

var words = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
	"india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", `quote"d`, "ünïcødé", "tab\there", "zulu"}

// Writer makes the workload's writes on a server.
type Writer interface {
	// Seed creates rows without anyone subscribed (quietly when the server
	// allows it) and returns their ids in order.
	Seed(ctx context.Context, items []Post) ([]int64, error)
	// Create creates the items in one request and returns their ids.
	Create(ctx context.Context, items []Post) ([]int64, error)
	// Update patches the rows; one is sent as PATCH /items/posts/{id} (the
	// key a string), several as a batch with number keys.
	Update(ctx context.Context, ids []int64, patch map[string]any) error
	// Delete deletes the rows; one is sent as DELETE /items/posts/{id} (the
	// event key a string), several as a JSON body of numbers.
	Delete(ctx context.Context, ids []int64) error
	// Rows returns every row the server holds.
	Rows(ctx context.Context) ([]Post, error)
}

// Model is the rows the workload expects, and the live ids it picks from.
type Model struct {
	Rows map[int64]Post
	ids  []int64
	pos  map[int64]int
}

// NewModel starts from the rows a server already holds.
func NewModel(rows []Post) *Model {
	m := &Model{Rows: make(map[int64]Post, len(rows)), pos: make(map[int64]int, len(rows))}
	for _, r := range rows {
		m.add(r)
	}
	return m
}

func (m *Model) add(r Post) {
	if _, ok := m.Rows[r.ID]; !ok {
		m.pos[r.ID] = len(m.ids)
		m.ids = append(m.ids, r.ID)
	}
	m.Rows[r.ID] = r
}

func (m *Model) remove(id int64) {
	i, ok := m.pos[id]
	if !ok {
		return
	}
	last := m.ids[len(m.ids)-1]
	m.ids[i] = last
	m.pos[last] = i
	m.ids = m.ids[:len(m.ids)-1]
	delete(m.pos, id)
	delete(m.Rows, id)
}

// pick resolves picks to distinct live ids.
func (m *Model) pick(picks []uint64) []int64 {
	out := make([]int64, 0, len(picks))
	for _, p := range picks {
		if len(out) == len(m.ids) {
			break
		}
		i := int(p % uint64(len(m.ids)))
		for slices.Contains(out, m.ids[i]) {
			i = (i + 1) % len(m.ids)
		}
		out = append(out, m.ids[i])
	}
	return out
}

// Sorted returns the expected rows ordered by id.
func (m *Model) Sorted() []Post {
	out := make([]Post, 0, len(m.Rows))
	for _, r := range m.Rows {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Post) int { return int(a.ID - b.ID) })
	return out
}

// SeedInit creates the workload's init rows (in chunks) and returns the model
// of the server's rows afterwards.
func (w *Workload) SeedInit(ctx context.Context, wr Writer) (*Model, error) {
	existing, err := wr.Rows(ctx)
	if err != nil {
		return nil, err
	}
	m := NewModel(existing)
	for start := 0; start < len(w.Init); start += 1000 {
		chunk := w.Init[start:min(start+1000, len(w.Init))]
		ids, err := wr.Seed(ctx, chunk)
		if err != nil {
			return nil, err
		}
		for i, id := range ids {
			r := chunk[i]
			r.ID = id
			m.add(r)
		}
	}
	return m, nil
}

// RunResult is what a run of the writes left.
type RunResult struct {
	// WriteStart[i] is when the request that caused event i started
	// (unix nanoseconds); event i is the i-th frame of one subscription.
	WriteStart []int64
	First      time.Time // the first write started
	Last       time.Time // the last write returned
}

// Run makes the writes in order, at most rate per second (0: as fast as the
// server answers), and keeps m equal to what the server must hold.
func (w *Workload) Run(ctx context.Context, wr Writer, m *Model, rate float64) (*RunResult, error) {
	res := &RunResult{WriteStart: make([]int64, 0, w.Events)}
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	res.First = time.Now()
	for i, op := range w.Ops {
		if interval > 0 {
			if d := time.Until(res.First.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		start := time.Now().UnixNano()
		switch op.Kind {
		case OpCreate, OpCreateBatch:
			ids, err := wr.Create(ctx, op.Items)
			if err != nil {
				return res, fmt.Errorf("op %d %s: %w", i, op.Kind, err)
			}
			if len(ids) != len(op.Items) {
				return res, fmt.Errorf("op %d %s: %d ids for %d items", i, op.Kind, len(ids), len(op.Items))
			}
			for j, id := range ids {
				r := op.Items[j]
				r.ID = id
				m.add(r)
			}
		case OpUpdate, OpUpdateBatch:
			ids := m.pick(op.Picks)
			if err := wr.Update(ctx, ids, op.Patch.Map()); err != nil {
				return res, fmt.Errorf("op %d %s: %w", i, op.Kind, err)
			}
			for _, id := range ids {
				m.Rows[id] = op.Patch.apply(m.Rows[id])
			}
		case OpDelete, OpDeleteBatch:
			ids := m.pick(op.Picks)
			if err := wr.Delete(ctx, ids); err != nil {
				return res, fmt.Errorf("op %d %s: %w", i, op.Kind, err)
			}
			for _, id := range ids {
				m.remove(id)
			}
		}
		for range op.Frames() {
			res.WriteStart = append(res.WriteStart, start)
		}
	}
	res.Last = time.Now()
	return res, nil
}

// Diff compares a replica with the expected rows.
type Diff struct {
	Missing, Extra, Changed int
}

// OK reports whether the replica equals the expected rows.
func (d Diff) OK() bool { return d.Missing == 0 && d.Extra == 0 && d.Changed == 0 }

func (d Diff) String() string {
	if d.OK() {
		return "equal"
	}
	return fmt.Sprintf("%d missing, %d extra, %d changed", d.Missing, d.Extra, d.Changed)
}

// Compare compares got with want.
func Compare(got []Post, want map[int64]Post) Diff {
	var d Diff
	seen := make(map[int64]bool, len(got))
	for _, r := range got {
		seen[r.ID] = true
		w, ok := want[r.ID]
		switch {
		case !ok:
			d.Extra++
		case w != r:
			d.Changed++
		}
	}
	for id := range want {
		if !seen[id] {
			d.Missing++
		}
	}
	return d
}

// WriteRows writes rows as a JSON array, the expected-rows file that child
// clients compare their replica with.
func WriteRows(path string, rows []Post) error {
	b, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadRows reads a file written by WriteRows.
func ReadRows(path string) (map[int64]Post, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []Post
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, err
	}
	out := make(map[int64]Post, len(rows))
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// NewBatchWorkload draws an init of n rows (at least rows) and m batch
// updates of rows rows each: one update frame of rows rows per write, the
// batches workload of the comparison.
func NewBatchWorkload(seed uint64, n, m, rows int) *Workload {
	w := NewWorkload(seed, max(n, rows), 0)
	rng := rand.New(rand.NewPCG(seed^0x5bd1e995, seed))
	w.Ops = make([]Op, m)
	for i := range w.Ops {
		picks := make([]uint64, rows)
		for j := range picks {
			picks[j] = rng.Uint64()
		}
		w.Ops[i] = Op{Kind: OpUpdateBatch, Picks: picks, Patch: randomPatch(rng)}
	}
	w.Events = m
	return w
}
