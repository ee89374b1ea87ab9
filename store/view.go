package store

import (
	"cmp"
	"context"
	"fmt"
	"iter"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/e41af43e/directus-realtime/protocol"
)

// View is a sorted window over a Collection: its first Limit rows in the
// order of a comparison function, kept in that order as events apply,
// including rows that enter the window and rows pushed out of it. A View
// of posts ordered by date, limited to 20, always holds the latest 20 posts
// of the replica. See NewView.
//
// The window is part of the collection's state: it is updated while an
// event applies, under the same lock, so Rows answers from the same state
// as the collection's own reads (an event is in both or in neither).
// All methods are safe for concurrent use.
type View[K comparable, T any] struct {
	c     *Collection[K, T]
	cmp   func(a, b T) int
	kcmp  func(a, b K) int
	limit int
	// keep is how many rows list holds after a refill: the window and a
	// cushion of rows after it, which take the place of window rows that
	// leave without a scan of the whole collection.
	keep int

	// Guarded by c.mu. list is the first len(list) rows of the collection
	// in the view's order (a prefix of the sorted rows); complete says it
	// holds them all.
	list     []viewEntry[K, T]
	complete bool
	dirty    bool          // the window changed during the event being applied
	broken   bool          // list disagreed with the rows: rebuild at the end of the event
	seq      uint64        // incremented whenever the window changes
	changed  chan struct{} // closed and replaced whenever the window changes
	closed   bool
	closedCh chan struct{}
}

// cushion is the least number of rows a view holds after its window
// (tests make it small, to exercise refills).
var cushion atomic.Int64

func init() { cushion.Store(256) }

type viewEntry[K comparable, T any] struct {
	key K
	row T
}

// NewView returns a view of c's first limit rows in the order of cmp, which
// returns a negative number when a sorts before b, a positive one when after,
// and 0 when cmp does not tell them apart (the convention of slices.SortFunc
// and cmp.Compare). Rows cmp does not tell apart are ordered by key:
// numerically for integer keys, byte-wise for string keys, by their %#v form
// for keys of other kinds. The window is then exact: after every applied
// event it equals the collection's rows sorted that way, cut to limit.
//
// cmp must be a strict weak order that depends on the rows alone (not on
// time or on other state): the view finds a row by the order of its last
// state. It is called while events apply, under the collection's lock: it
// must be fast and must not call the collection or the view. A panic in cmp
// while an event applies is recovered (unless Options.CrashOnPanic),
// reported to Options.OnError as a *protocol.PanicError like a listener's,
// and the view rebuilds its window at the next event; the event itself is
// applied to the collection and its listeners. A limit below 1 or a nil cmp
// is a *protocol.ConfigError.
//
// The view costs O(log n + limit) per changed row; when rows of the window
// leave it, their places are taken from rows held after the window, and
// once those run out (every max(limit, 256) leaves at most) from a scan of
// the collection. Close the view when it is no longer needed: until then
// the collection keeps it up to date.
func NewView[K comparable, T any](c *Collection[K, T], cmp func(a, b T) int, limit int) (*View[K, T], error) {
	if c == nil {
		return nil, &protocol.ConfigError{Field: "c", Reason: "nil collection"}
	}
	if cmp == nil {
		return nil, &protocol.ConfigError{Field: "cmp", Reason: "required"}
	}
	if limit < 1 {
		return nil, &protocol.ConfigError{Field: "limit", Reason: fmt.Sprintf("%d: must be at least 1", limit)}
	}
	v := &View[K, T]{
		c: c, cmp: cmp, kcmp: keyCompare[K](), limit: limit,
		keep:     limit + max(limit, int(cushion.Load())),
		changed:  make(chan struct{}),
		closedCh: make(chan struct{}),
	}
	c.lock()
	defer c.unlock()
	v.refillLocked()
	if c.closed {
		// Nothing will change any more; the rows stay readable.
		return v, nil
	}
	c.views[v] = struct{}{}
	return v, nil
}

// Rows returns the window: at most limit rows, in order, from one state of
// the collection (the one its other reads would answer from at that
// moment).
func (v *View[K, T]) Rows() []T {
	v.c.mu.RLock()
	defer v.c.mu.RUnlock()
	return v.rowsLocked()
}

// Len returns the number of rows in the window: limit, or fewer when the
// collection holds fewer rows.
func (v *View[K, T]) Len() int {
	v.c.mu.RLock()
	defer v.c.mu.RUnlock()
	return min(len(v.list), v.limit)
}

// Close detaches the view from the collection, which stops updating it,
// and ends the loops over Changes (with ErrClosed). Rows keeps answering
// with the last window. Close is idempotent.
func (v *View[K, T]) Close() error {
	v.c.lock()
	defer v.c.unlock()
	if !v.closed {
		v.closed = true
		delete(v.c.views, v)
		close(v.closedCh)
	}
	return nil
}

// Window is the view's window as Changes yields it.
type Window[K comparable, T any] struct {
	// Rows is the window, in order, as it was after one applied event.
	Rows []T
	// Entered are the keys of the rows of Rows that were not in the window
	// yielded before, in the order of Rows. For the first window, every
	// key.
	Entered []K
	// Left are the rows of the window yielded before that are not in this
	// one, as they were then, in their order then.
	Left []T
	// Initial marks the first window of a loop.
	Initial bool
}

// Changes returns the window each time it changes, as a sequence to range
// over:
//
//	for w, err := range top.Changes(ctx) {
//		if err != nil {
//			return err // ctx.Err() or ErrClosed
//		}
//		render(w.Rows) // w.Entered and w.Left say what came and went
//	}
//
// The first pair is the current window, marked Initial. Then a window is
// yielded after each applied event that changed it (a row of it entered,
// left, moved or changed), except that windows are coalesced, not queued: a
// body that takes its time gets, when it comes back, the newest window,
// and the ones in between are skipped. Every yielded window is one the
// collection held after an event; Entered and Left compare it with the
// window yielded before, so that they add up across skipped windows. The
// sequence needs no goroutine and no queue: a slow body costs nothing but
// the windows it skips. A non-nil error is the last pair: ctx is done, or
// the view or the collection closed (ErrClosed).
func (v *View[K, T]) Changes(ctx context.Context) iter.Seq2[Window[K, T], error] {
	return func(yield func(Window[K, T], error) bool) {
		var (
			prev     []viewEntry[K, T]
			lastSeq  uint64
			yielded  bool
			initial  = true
			emptyWin Window[K, T]
		)
		for {
			v.c.mu.RLock()
			seq, next := v.seq, v.changed
			var cur []viewEntry[K, T]
			if !yielded || seq != lastSeq {
				cur = slices.Clone(v.list[:min(len(v.list), v.limit)])
			}
			v.c.mu.RUnlock()
			if !yielded || seq != lastSeq {
				w := diffWindows(prev, cur)
				w.Initial = initial
				if !yield(w, nil) {
					return
				}
				prev, lastSeq, yielded, initial = cur, seq, true, false
				continue // the window may have changed while the body ran
			}
			select {
			case <-next:
			case <-v.closedCh:
				yield(emptyWin, ErrClosed)
				return
			case <-v.c.closedCh:
				yield(emptyWin, ErrClosed)
				return
			case <-ctx.Done():
				yield(emptyWin, ctx.Err())
				return
			}
		}
	}
}

func diffWindows[K comparable, T any](prev, cur []viewEntry[K, T]) Window[K, T] {
	w := Window[K, T]{Rows: make([]T, len(cur))}
	was := make(map[K]struct{}, len(prev))
	for _, e := range prev {
		was[e.key] = struct{}{}
	}
	is := make(map[K]struct{}, len(cur))
	for i, e := range cur {
		w.Rows[i] = e.row
		is[e.key] = struct{}{}
		if _, ok := was[e.key]; !ok {
			w.Entered = append(w.Entered, e.key)
		}
	}
	for _, e := range prev {
		if _, ok := is[e.key]; !ok {
			w.Left = append(w.Left, e.row)
		}
	}
	return w
}

func (v *View[K, T]) rowsLocked() []T {
	n := min(len(v.list), v.limit)
	out := make([]T, n)
	for i := range n {
		out[i] = v.list[i].row
	}
	return out
}

func (v *View[K, T]) order(a, b viewEntry[K, T]) int {
	if c := v.cmp(a.row, b.row); c != 0 {
		return c
	}
	return v.kcmp(a.key, b.key)
}

// applyLocked follows one event's changes. The collection is locked for
// writing and its rows are the state after the event.
func (v *View[K, T]) applyLocked(changes []Change[K, T]) {
	if !v.c.opts.CrashOnPanic {
		defer func() {
			if r := recover(); r != nil {
				// The list may be half updated: rebuild it at the next
				// event, and tell the watchers something changed.
				v.broken, v.dirty = true, true
				v.signalLocked()
				stack := debug.Stack()
				v.c.afterUnlock = append(v.c.afterUnlock, func() { v.c.reportPanic("view compare", r, stack) })
			}
		}()
	}
	for _, ch := range changes {
		switch ch.Op {
		case OpAdd:
			v.insert(ch.Key, ch.New)
		case OpUpdate:
			v.delete(ch.Key, ch.Old)
			v.insert(ch.Key, ch.New)
		case OpDelete:
			v.delete(ch.Key, ch.Old)
		}
	}
	switch {
	case v.broken:
		v.refillLocked()
		v.dirty = true
	case len(v.list) < v.limit && !v.complete:
		v.refillLocked()
	case len(v.list) > v.keep+v.keep-v.limit:
		// Rows entering before the end of the list have grown it by a
		// cushion: drop the rows past it (the list stays a prefix).
		clear(v.list[v.keep:])
		v.list = v.list[:v.keep]
		v.complete = false
	}
	v.signalLocked()
}

// signalLocked wakes the loops over Changes if the window changed.
func (v *View[K, T]) signalLocked() {
	if v.dirty {
		v.dirty = false
		v.seq++
		close(v.changed)
		v.changed = make(chan struct{})
	}
}

// insert adds a row that is not in the list, if it belongs there: the list
// holds every row, or the row sorts before its last one. Otherwise the row
// sorts after every row of the list, which stays a prefix.
func (v *View[K, T]) insert(k K, row T) {
	e := viewEntry[K, T]{key: k, row: row}
	if !v.complete && (len(v.list) == 0 || v.order(e, v.list[len(v.list)-1]) > 0) {
		return
	}
	i, found := slices.BinarySearchFunc(v.list, e, v.order)
	if found {
		v.broken = true // a key twice: cmp is not a consistent order
		return
	}
	v.list = slices.Insert(v.list, i, e)
	if i < v.limit {
		v.dirty = true
	}
}

// delete removes the row with key k, whose state was old, if the list
// holds it.
func (v *View[K, T]) delete(k K, old T) {
	i, found := slices.BinarySearchFunc(v.list, viewEntry[K, T]{key: k, row: old}, v.order)
	if !found {
		if v.complete {
			v.broken = true // the list holds every row but not this one
		}
		return
	}
	v.list = slices.Delete(v.list, i, i+1)
	if i < v.limit {
		v.dirty = true
	}
}

// refillLocked rebuilds the list from the collection's rows: their first
// keep rows in order, selected through a bounded max-heap, so that most rows
// cost one comparison with the greatest row kept so far.
func (v *View[K, T]) refillLocked() {
	v.broken = false
	h := make([]viewEntry[K, T], 0, min(len(v.c.rows), v.keep))
	for k, row := range v.c.rows {
		e := viewEntry[K, T]{key: k, row: row}
		if len(h) < v.keep {
			h = append(h, e)
			v.up(h, len(h)-1)
			continue
		}
		if v.order(e, h[0]) < 0 {
			h[0] = e
			v.down(h, 0)
		}
	}
	slices.SortFunc(h, v.order)
	v.list, v.complete = h, len(h) == len(v.c.rows)
}

// up and down keep h a max-heap in the view's order.
func (v *View[K, T]) up(h []viewEntry[K, T], i int) {
	for i > 0 {
		p := (i - 1) / 2
		if v.order(h[i], h[p]) <= 0 {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (v *View[K, T]) down(h []viewEntry[K, T], i int) {
	for {
		l, big := 2*i+1, i
		if l < len(h) && v.order(h[l], h[big]) > 0 {
			big = l
		}
		if r := l + 1; r < len(h) && v.order(h[r], h[big]) > 0 {
			big = r
		}
		if big == i {
			return
		}
		h[i], h[big] = h[big], h[i]
		i = big
	}
}

// keyCompare orders keys: numerically for integer and float kinds,
// byte-wise for strings, by their %#v form otherwise.
func keyCompare[K comparable]() func(a, b K) int {
	var zero K
	switch any(zero).(type) {
	case string:
		return func(a, b K) int { return strings.Compare(any(a).(string), any(b).(string)) }
	case int64:
		return func(a, b K) int { return cmp.Compare(any(a).(int64), any(b).(int64)) }
	case int:
		return func(a, b K) int { return cmp.Compare(any(a).(int), any(b).(int)) }
	}
	switch reflect.TypeFor[K]().Kind() {
	case reflect.String:
		return func(a, b K) int { return strings.Compare(reflect.ValueOf(a).String(), reflect.ValueOf(b).String()) }
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(a, b K) int { return cmp.Compare(reflect.ValueOf(a).Int(), reflect.ValueOf(b).Int()) }
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return func(a, b K) int { return cmp.Compare(reflect.ValueOf(a).Uint(), reflect.ValueOf(b).Uint()) }
	case reflect.Float32, reflect.Float64:
		return func(a, b K) int { return cmp.Compare(reflect.ValueOf(a).Float(), reflect.ValueOf(b).Float()) }
	}
	return func(a, b K) int { return strings.Compare(fmt.Sprintf("%#v", a), fmt.Sprintf("%#v", b)) }
}
