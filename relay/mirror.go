package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/store"
)

// entry is what the bucket holds for a key, as far as the relay knows.
type entry struct {
	value   []byte
	rev     uint64
	deleted bool
	created time.Time
}

// mirror keeps one collection's bucket equal to the relay's replica of it.
// A watcher follows the bucket (so that a standby knows it when it takes
// over, and a leader sees writes that are not its own); a listener of the
// replica marks the keys that changed dirty; the writer, while leading,
// compares each dirty key's row with the bucket's and writes only a
// difference, with compare-and-set on the revision it knows. Writing the
// current row of a key rather than replaying changes makes the writer
// level-triggered: however many changes of a key wait, one write brings the
// bucket to the replica's state, and a write refused because the key moved
// on is retried against the key's new revision.
type mirror struct {
	r    *Relay
	cfg  Collection
	log  *slog.Logger
	rows *store.Collection[string, json.RawMessage]
	kv   jetstream.KeyValue

	mu        sync.Mutex
	bucket    map[string]entry // by KV key
	status    Status
	statusRev uint64
	lastRev   uint64        // the highest revision the watcher delivered
	revCh     chan struct{} // closed when lastRev moves (then replaced)
	dirty     map[string]struct{}
	all       bool // every key is dirty
	wake      chan struct{}
	written   bool      // the bucket was made equal to the replica once in this leadership
	reconcile time.Time // the replica's LastReconcile the status entry reports

	firstPass chan struct{} // closed after the first pass as leader or the first watch as standby
	passOnce  sync.Once
	removeL   func()
}

func newMirror(r *Relay, c Collection) (*mirror, error) {
	field := c.KeyField
	rows, err := store.New(store.Options[string, json.RawMessage]{
		Key:               func(row json.RawMessage) string { return rowKey(row, field) },
		KeyField:          field,
		Equal:             func(a, b json.RawMessage) bool { return bytes.Equal(a, b) },
		ReconcileInterval: r.opts.ReconcileInterval,
		Logger:            r.opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &mirror{r: r, cfg: c, log: r.log.With("collection", c.Name, "bucket", c.Bucket), rows: rows,
		bucket: map[string]entry{}, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1),
		revCh: make(chan struct{}), firstPass: make(chan struct{})}, nil
}

// rowKey is the text of a row's primary key: a string's text or a
// number's literal. A row without one gets "", which EncodeKey still maps
// to a key of its own.
func rowKey(row json.RawMessage, field string) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(row, &fields) != nil {
		return ""
	}
	k, err := handlers.NormalizeKey(fields[field])
	if err != nil {
		return ""
	}
	return string(k)
}

func (m *mirror) start(ctx context.Context, wg *sync.WaitGroup) error {
	kv, err := m.r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: m.cfg.Bucket, History: uint8(m.r.opts.History), Replicas: m.r.opts.Replicas,
		Description: "directus-realtime relay mirror of " + m.cfg.Name,
	})
	if err != nil {
		return fmt.Errorf("relay: bucket %s: %w", m.cfg.Bucket, err)
	}
	m.kv = kv
	q := m.cfg.Query
	if _, err := m.rows.Subscribe(ctx, m.r.m, manager.SubscribeOptions{Collection: m.cfg.Name, Query: q, Persistent: true}); err != nil {
		return fmt.Errorf("relay: subscribe %s: %w", m.cfg.Name, err)
	}
	m.removeL = m.rows.AddListener(store.ListenerFunc[string, json.RawMessage](m.onChange))
	loaded := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		m.watch(ctx, loaded)
	}()
	go func() {
		defer wg.Done()
		m.write(ctx)
	}()
	select {
	case <-loaded:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !m.r.leading.Load() {
		m.passOnce.Do(func() { close(m.firstPass) })
	}
	return nil
}

func (m *mirror) close() {
	if m.removeL != nil {
		m.removeL()
	}
	_ = m.rows.Close()
}

// onChange marks a changed key dirty (only while leading: a hand-over
// marks every key).
func (m *mirror) onChange(ch store.Change[string, json.RawMessage]) {
	if !m.r.leading.Load() {
		return
	}
	m.mu.Lock()
	if ch.Op == store.OpReset {
		m.all = true
	} else {
		m.dirty[EncodeKey(ch.Key)] = struct{}{}
	}
	m.mu.Unlock()
	m.poke()
}

func (m *mirror) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *mirror) markAll() {
	m.mu.Lock()
	m.all = true
	m.written = false
	m.mu.Unlock()
	m.poke()
}

// watch follows the bucket from the revision it knows, forever: after the
// watcher ends (a NATS outage it could not ride out) it resumes, paced by
// the retry backoff.
func (m *mirror) watch(ctx context.Context, loaded chan struct{}) {
	step := 0
	var once sync.Once
	for ctx.Err() == nil {
		m.mu.Lock()
		from := m.lastRev
		m.mu.Unlock()
		start := uint64(0)
		if from > 0 {
			start = from + 1
		}
		err := watchBucket(ctx, m.r.js, m.cfg.Bucket, start, func(e *kvEntry) error {
			if e == nil {
				once.Do(func() { close(loaded) })
				step = 0
				return nil
			}
			m.observe(e)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("bucket watch ended; resuming", "err", err, "from", from)
		t := time.NewTimer(m.r.opts.Retry.Delay(step))
		step++
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// observe records an entry the watcher delivered. An entry newer than the
// one the relay knows that was not its own write (its own writes are
// recorded when they return) marks the key dirty: the writer checks it
// against the replica, which corrects a write a former leader made late.
func (m *mirror) observe(e *kvEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rev := e.rev
	if rev > m.lastRev {
		m.lastRev = rev
		close(m.revCh)
		m.revCh = make(chan struct{})
	}
	key := e.key
	if key == StatusKey {
		if rev > m.statusRev {
			if s, ok := parseStatus(e.value); ok && !e.deleted {
				m.status = s
			}
			m.statusRev = rev
		}
		return
	}
	if !isRowKey(key) {
		return
	}
	if old, ok := m.bucket[key]; ok && old.rev >= rev {
		return
	}
	var val []byte
	if !e.deleted {
		val = bytes.Clone(e.value)
	}
	m.bucket[key] = entry{value: val, rev: rev, deleted: e.deleted, created: e.created}
	if m.r.leading.Load() {
		m.dirty[key] = struct{}{}
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// catchUp prepares a hand-over: the replica is re-read from Directus and
// the watcher reaches the bucket's last revision.
func (m *mirror) catchUp(ctx context.Context) error {
	if err := m.rows.Reconcile(ctx); err != nil {
		return fmt.Errorf("relay: reconcile %s: %w", m.cfg.Name, err)
	}
	st, err := m.kv.Status(ctx)
	if err != nil {
		return err
	}
	last := st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
	for {
		m.mu.Lock()
		at, ch := m.lastRev, m.revCh
		m.mu.Unlock()
		if at >= last {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// write is the writer loop: while leading, it brings every dirty key of
// the bucket to the replica's row, then updates the status entry.
func (m *mirror) write(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	step := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-tick.C:
		}
		if !m.r.Leading() {
			continue
		}
		failed, full := m.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if failed {
			// Keys left dirty: try again after a backoff step.
			t := time.NewTimer(m.r.opts.Retry.Delay(step))
			step++
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			m.poke()
			continue
		}
		step = 0
		m.writeStatus(ctx, full)
	}
}

// pass writes the dirty keys; it reports whether some stay dirty, and
// whether it was a full pass (every key) that succeeded.
func (m *mirror) pass(ctx context.Context) (failed, full bool) {
	m.mu.Lock()
	keys := m.dirty
	full = m.all
	if m.all {
		for _, k := range m.rows.Keys() {
			keys[EncodeKey(k)] = struct{}{}
		}
		for k := range m.bucket {
			keys[k] = struct{}{}
		}
		m.all = false
	}
	m.dirty = make(map[string]struct{})
	m.mu.Unlock()
	for key := range keys {
		if ctx.Err() != nil || !m.r.Leading() {
			m.requeue(keys, full)
			return true, false
		}
		wctx, cancel := context.WithTimeout(ctx, max(m.r.opts.LeaseTTL, time.Second))
		err := m.sync(wctx, key)
		cancel()
		if err != nil && !isConflict(err) {
			// NATS is unreachable or slow: keep the rest for later.
			m.log.Warn("write failed; retrying", "key", key, "err", err)
			m.requeue(keys, full)
			return true, false
		}
		if err != nil {
			m.requeue(map[string]struct{}{key: {}}, false)
			failed = true
		}
		delete(keys, key)
	}
	return failed, full && !failed
}

func (m *mirror) requeue(keys map[string]struct{}, all bool) {
	m.mu.Lock()
	m.all = m.all || all
	for k := range keys {
		m.dirty[k] = struct{}{}
	}
	m.mu.Unlock()
}

// sync makes the bucket's entry of key equal to the replica's row.
func (m *mirror) sync(ctx context.Context, key string) error {
	pk, err := DecodeKey(key)
	if err != nil {
		return nil // not a row the relay writes
	}
	row, have := m.rows.Get(pk)
	m.mu.Lock()
	cur, known := m.bucket[key]
	m.mu.Unlock()
	live := known && !cur.deleted
	switch {
	case have && live && bytes.Equal(cur.value, row):
		m.r.stats.unchanged.Add(1)
		return nil
	case !have && !live:
		return nil
	}
	var (
		rev uint64
		op  error
	)
	switch {
	case !have:
		op = m.kv.Delete(ctx, key, jetstream.LastRevision(cur.rev))
	case live:
		rev, op = m.kv.Update(ctx, key, row, cur.rev)
	default:
		// Absent, or a delete marker: Create writes over the marker too.
		rev, op = m.kv.Create(ctx, key, row)
	}
	if op != nil {
		if isConflict(op) {
			m.r.stats.conflicts.Add(1)
			m.refresh(ctx, key)
		}
		return op
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if have {
		m.r.stats.puts.Add(1)
		if old := m.bucket[key]; old.rev < rev {
			m.bucket[key] = entry{value: bytes.Clone(row), rev: rev, created: time.Now()}
		}
	} else {
		m.r.stats.deletes.Add(1)
		// The marker's revision comes with the watcher; until then the
		// key counts as deleted at the revision it had.
		if old := m.bucket[key]; old.rev == cur.rev {
			m.bucket[key] = entry{rev: cur.rev, deleted: true, created: time.Now()}
		}
	}
	return nil
}

// refresh re-reads one key after a refused write.
func (m *mirror) refresh(ctx context.Context, key string) {
	e, err := m.kv.Get(ctx, key)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		if old := m.bucket[key]; old.rev < e.Revision() {
			m.bucket[key] = entry{value: bytes.Clone(e.Value()), rev: e.Revision(), created: e.Created()}
		}
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Deleted or absent: Create handles both.
		m.bucket[key] = entry{deleted: true}
	}
}

// writeStatus writes the status entry after the first full pass of a
// leadership (the keys that changed since are events in flight), and when
// the replica reconciled since the last one.
func (m *mirror) writeStatus(ctx context.Context, full bool) {
	m.mu.Lock()
	first := !m.written
	st := m.status
	m.mu.Unlock()
	if first && !full {
		return
	}
	rs := m.rows.Status()
	if !first && !rs.LastReconcile.After(m.reconcile) {
		return
	}
	st.Complete = true
	st.Leader = m.r.opts.ID
	st.Reconciled = time.Now().UTC()
	if err := m.putStatus(ctx, st); err != nil {
		m.log.Warn("status entry not written", "err", err)
		return
	}
	m.mu.Lock()
	m.written = true
	m.mu.Unlock()
	m.reconcile = rs.LastReconcile
	if first {
		m.log.Info("bucket equal to the replica", "rows", m.rows.Len())
		m.passOnce.Do(func() { close(m.firstPass) })
	}
}

func (m *mirror) putStatus(ctx context.Context, st Status) error {
	if !m.r.Leading() {
		return errors.New("relay: not leading")
	}
	b, _ := json.Marshal(st)
	rev, err := m.kv.Put(ctx, StatusKey, b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if rev > m.statusRev {
		m.status, m.statusRev = st, rev
	}
	m.mu.Unlock()
	return nil
}

// compact removes the delete markers created before cutoff, after the
// status entry says from which revision the history is whole.
func (m *mirror) compact(ctx context.Context, cutoff time.Time) error {
	m.mu.Lock()
	markers := map[string]uint64{}
	var maxRev uint64
	for k, e := range m.bucket {
		if e.deleted && e.rev > 0 && e.created.Before(cutoff) {
			markers[k] = e.rev
			maxRev = max(maxRev, e.rev)
		}
	}
	st := m.status
	m.mu.Unlock()
	if len(markers) == 0 {
		return nil
	}
	st.HistoryFrom = max(st.HistoryFrom, maxRev+1)
	st.Leader = m.r.opts.ID
	if err := m.putStatus(ctx, st); err != nil {
		return err
	}
	stream, err := m.r.js.Stream(ctx, "KV_"+m.cfg.Bucket)
	if err != nil {
		return err
	}
	for k, rev := range markers {
		// Up to the marker only: a value written since stays.
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+m.cfg.Bucket+"."+k), jetstream.WithPurgeSequence(rev+1)); err != nil {
			return err
		}
		m.mu.Lock()
		if e := m.bucket[k]; e.deleted && e.rev == rev {
			delete(m.bucket, k)
		}
		m.mu.Unlock()
	}
	m.log.Info("delete markers compacted", "markers", len(markers), "history_from", st.HistoryFrom)
	return nil
}
