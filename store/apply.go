package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
)

// Handle applies one subscription event. Rows or keys that do not decode
// are skipped and counted (the others are applied) and the error is
// returned, so that the manager reports it: once per episode for inits (a
// reconcile that meets the same undecodable rows again returns nil; the
// replica's Status says it is failing).
func (c *Collection[K, T]) Handle(ev handlers.Event) error {
	switch ev.Kind {
	case handlers.KindInit:
		if ev.Data == nil {
			// An event-only subscription's init says nothing about rows.
			c.markSynced()
			c.firstInitDone(nil)
			return nil
		}
		items, err := c.decodeItems(ev)
		if len(items) == 0 && err != nil {
			// Not one row decodes: the frame says nothing usable about
			// the rows, and replacing them with nothing would empty the
			// replica. Keep them, say the replica is failing, and re-read
			// them at the pace of the retry backoff.
			fe := &FailureError{Kind: ErrUndecodable, Err: err, Since: time.Now()}
			c.firstInitDone(fe)
			fresh := c.setFailure(ErrUndecodable, err)
			c.reconcileSoon()
			if !fresh {
				c.log.Warn("the init still has no decodable row; rows kept, retrying later", "err", err)
				return nil
			}
			c.log.Error("no row of the init decodes into the replica's type; rows kept, retrying later", "err", err)
			return fe
		}
		changes := c.replace(items, ev.Resync, rowSize(ev.Data, len(items)), ev.Received)
		if ev.Resync {
			c.lastResyncChanges.Store(int64(changes))
		}
		c.firstInitDone(nil)
		if c.clearDecodeFailure() {
			c.log.Info("the init decodes again; the replica follows the server")
		}
		return c.onceErr(err)
	case handlers.KindCreate, handlers.KindUpdate:
		items, err := c.decodeItems(ev)
		c.upsert(items, rowSize(ev.Data, len(items)), ev.Received)
		return err
	case handlers.KindDelete:
		keys, err := c.decodeKeys(ev)
		c.remove(keys, ev.Received)
		return err
	case handlers.KindError:
		// Directus sent an error instead of an event: that event is lost.
		c.errorEvents.Add(1)
		c.reconcileSoon()
	}
	return nil
}

// decodeItems decodes every row it can. The fast path decodes the whole
// array at once; if that fails, rows are decoded one by one so that one bad
// row costs only itself.
func (c *Collection[K, T]) decodeItems(ev handlers.Event) ([]T, error) {
	unmarshal := c.opts.Unmarshal
	if unmarshal == nil {
		unmarshal = json.Unmarshal
	}
	data := bytes.TrimSpace(ev.Data)
	if len(data) > 0 && data[0] == '[' {
		if items, ok := decodeParallel[T](data, unmarshal); ok {
			return items, nil
		}
	}
	var items []T
	var err error
	if c.opts.Unmarshal == nil {
		items, err = handlers.Items[T](ev)
	} else {
		items, err = itemsWith[T](ev.Kind, data, unmarshal)
	}
	if err == nil {
		return items, nil
	}
	if len(data) == 0 || data[0] != '[' {
		c.badRows.Add(1)
		return nil, err
	}
	var raws []json.RawMessage
	if json.Unmarshal(data, &raws) != nil {
		c.badRows.Add(1)
		return nil, err
	}
	var errs []error
	items = make([]T, 0, len(raws))
	for i, raw := range raws {
		var item T
		if e := unmarshal(raw, &item); e != nil {
			c.badRows.Add(1)
			errs = append(errs, fmt.Errorf("row %d: %w", i, e))
			continue
		}
		items = append(items, item)
	}
	c.log.Warn("rows skipped", "kind", ev.Kind, "bad", len(errs))
	return items, &handlers.ShapeError{Kind: ev.Kind, Want: "rows of the collection's type", Err: errors.Join(errs...)}
}

func (c *Collection[K, T]) decodeKeys(ev handlers.Event) ([]K, error) {
	raw, err := handlers.Keys(ev)
	if err != nil {
		c.badRows.Add(1)
		return nil, err
	}
	keys := make([]K, 0, len(raw))
	var errs []error
	for _, k := range raw {
		key, err := convertKey[K](k)
		if err != nil {
			c.badRows.Add(1)
			errs = append(errs, err)
			continue
		}
		keys = append(keys, key)
	}
	return keys, errors.Join(errs...)
}

// rowSize is the average size on the wire of n rows in data; 0 keeps the
// previous estimate.
func rowSize(data []byte, n int) int64 {
	if n == 0 {
		return 0
	}
	return max(int64(len(data)/n), 16)
}

// replace makes the rows equal to items: rows absent from items are
// deleted, changed ones updated, new ones added, all in one step. It
// returns how many rows changed (counted only for a resync, whose rows are
// compared: what a reconcile corrected).
func (c *Collection[K, T]) replace(items []T, resync bool, size int64, at time.Time) int {
	c.lock()
	defer c.unlock()
	if c.closed {
		return 0
	}
	if c.seen != nil && !at.IsZero() {
		// The init shows every row at once: what it holds is newer than
		// any filter exit received before it.
		c.initAt = at
		clear(c.seen)
	}
	if size > 0 {
		c.avgRow = size
	}
	initial := !c.synced
	var changes []Change[K, T]
	notify := len(c.listeners) > 0 || len(c.views) > 0
	compare := notify || resync
	changed := 0
	// Into an empty replica (the first init, typically) nothing can be
	// missing from the init, so keys need no tracking.
	var seen map[K]struct{}
	if len(c.rows) == 0 {
		c.rows = make(map[K]T, len(items))
	} else {
		seen = make(map[K]struct{}, len(items))
	}
	for _, item := range items {
		k := c.opts.Key(item)
		if c.exitedLocked(k, at) {
			continue // it left the filter after this read
		}
		if seen != nil {
			seen[k] = struct{}{}
		}
		ch, ok := c.setLocked(k, item, compare)
		if ok {
			changed++
		}
		if ok && notify {
			ch.Initial, ch.Resync = initial, resync
			changes = append(changes, ch)
		}
	}
	for k, old := range c.rows {
		if _, ok := seen[k]; ok || seen == nil {
			continue
		}
		c.deleteLocked(k)
		changed++
		if notify {
			changes = append(changes, Change[K, T]{Op: OpDelete, Key: k, Old: old, Initial: initial, Resync: resync})
		}
	}
	c.advanceLocked(at)
	c.inits.Add(1)
	if resync {
		c.resyncs.Add(1)
	}
	c.notifyLocked(changes)
	c.markSyncedLocked()
	c.appliedLocked()
	return changed
}

func (c *Collection[K, T]) upsert(items []T, size int64, at time.Time) {
	c.lock()
	defer c.unlock()
	if c.closed {
		return
	}
	if size > 0 {
		c.avgRow = size
	}
	var changes []Change[K, T]
	notify := len(c.listeners) > 0 || len(c.views) > 0
	for _, item := range items {
		k := c.opts.Key(item)
		if c.exitedLocked(k, at) {
			continue // the row as it was before it left the filter
		}
		c.seenLocked(k, at)
		if ch, changed := c.setLocked(k, item, notify); changed && notify {
			changes = append(changes, ch)
		}
	}
	c.advanceLocked(at)
	c.events.Add(1)
	c.notifyLocked(changes)
	c.appliedLocked()
}

func (c *Collection[K, T]) remove(keys []K, at time.Time) {
	c.lock()
	defer c.unlock()
	if c.closed {
		return
	}
	var changes []Change[K, T]
	for _, k := range keys {
		// Deletes are not filtered by Directus: keys this replica never
		// held are ignored.
		if old, ok := c.rows[k]; ok {
			c.deleteLocked(k)
			delete(c.seen, k)
			if len(c.listeners) > 0 || len(c.views) > 0 {
				changes = append(changes, Change[K, T]{Op: OpDelete, Key: k, Old: old})
			}
		}
	}
	c.advanceLocked(at)
	c.events.Add(1)
	c.notifyLocked(changes)
	c.appliedLocked()
}

// setLocked upserts one row, keeping the indexes in step. An update of an
// unknown key is an add: the item entered the subscription's filter. Rows
// are compared (to report only real changes) only when compare is set: with
// no listener to tell, storing an equal row again costs less than comparing.
func (c *Collection[K, T]) setLocked(k K, item T, compare bool) (Change[K, T], bool) {
	old, exists := c.rows[k]
	if exists {
		if c.opts.Stale != nil && c.opts.Stale(item, old) {
			c.staleSkipped.Add(1)
			return Change[K, T]{}, false
		}
		if compare && c.equal(old, item) {
			return Change[K, T]{}, false
		}
	}
	c.rows[k] = item
	for _, ix := range c.indexes {
		if exists {
			ix.remove(k)
		}
		ix.add(k, item)
	}
	if exists {
		return Change[K, T]{Op: OpUpdate, Key: k, Old: old, New: item}, true
	}
	return Change[K, T]{Op: OpAdd, Key: k, New: item}, true
}

func (c *Collection[K, T]) deleteLocked(k K) {
	delete(c.rows, k)
	for _, ix := range c.indexes {
		ix.remove(k)
	}
}

// appliedLocked wakes WaitFor callers, if any wait. It needs only waitMu
// (the name says it is called with c.mu held while events apply).
func (c *Collection[K, T]) appliedLocked() {
	c.waitMu.Lock()
	if c.applied != nil {
		close(c.applied)
		c.applied = nil
	}
	c.waitMu.Unlock()
}

// firstInitDone records the outcome of the first init, for Subscribe.
func (c *Collection[K, T]) firstInitDone(err error) {
	c.firstOnce.Do(func() {
		c.firstErr = err
		close(c.firstInit)
	})
}

// onceErr returns err the first time in a row an init has bad rows, and
// nil for the inits after it that have them too.
func (c *Collection[K, T]) onceErr(err error) error {
	c.lock()
	defer c.unlock()
	if err == nil {
		c.decodeFailing = false
		return nil
	}
	if c.decodeFailing {
		return nil
	}
	c.decodeFailing = true
	return err
}

// clearDecodeFailure ends an undecodable episode; it reports whether there
// was one.
func (c *Collection[K, T]) clearDecodeFailure() bool {
	c.statusMu.Lock()
	var fe *FailureError
	was := errors.As(c.status.Err, &fe) && fe.Kind == ErrUndecodable
	if was {
		c.status.Err = nil
	}
	c.statusMu.Unlock()
	return was
}

func (c *Collection[K, T]) markSynced() {
	c.lock()
	c.markSyncedLocked()
	c.unlock()
}

func (c *Collection[K, T]) markSyncedLocked() {
	if !c.synced {
		c.synced = true
		close(c.syncedCh)
	}
}

// itemsWith is handlers.Items with the decoder of Options.Unmarshal.
func itemsWith[T any](kind handlers.Kind, data []byte, unmarshal func([]byte, any) error) ([]T, error) {
	if len(data) == 0 {
		return nil, nil
	}
	switch data[0] {
	case '[':
		var items []T
		if err := unmarshal(data, &items); err != nil {
			return nil, &handlers.ShapeError{Kind: kind, Want: "an array of items", Err: err}
		}
		return items, nil
	case '{':
		var item T
		if err := unmarshal(data, &item); err != nil {
			return nil, &handlers.ShapeError{Kind: kind, Want: "an item", Err: err}
		}
		return []T{item}, nil
	}
	return nil, &handlers.ShapeError{Kind: kind, Want: "an array or an object"}
}
