package directustest

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// collection is the in-memory table behind a Collection. It is guarded by
// Server.mu.
type collection struct {
	name     string
	pk       string
	pkIdx    int
	keyType  KeyType
	fields   []string
	fieldIdx map[string]int
	rows     map[string]*row // by canonical key
	sorted   []*row          // by primary key
	nextID   int64
	all      *compiledQuery // projection of every field, no filter
}

// row is one item. vals is aligned with collection.fields.
type row struct {
	key  any    // int64 (IntegerKey) or string
	ckey string // canonical key
	vals []any
	enc  []byte // cached encoding of every field in schema order; nil when stale
}

func newCollection(name, pk string, kt KeyType, fields []string) *collection {
	c := &collection{
		name:     name,
		pk:       pk,
		keyType:  kt,
		fields:   fields,
		fieldIdx: make(map[string]int, len(fields)),
		rows:     map[string]*row{},
		nextID:   1,
	}
	for i, f := range fields {
		c.fieldIdx[f] = i
	}
	c.pkIdx = c.fieldIdx[pk]
	c.all, _ = compileQuery(c, &queryParams{})
	return c
}

// canonicalKey resolves a key given in any JSON type to the stored key. For
// integer keys "1521" and 1521 name the same row, as in SQL.
func (c *collection) canonicalKey(k any) (any, string, bool) {
	k, ok := normalizeValue(k)
	if !ok {
		return nil, "", false
	}
	if c.keyType == IntegerKey {
		var n int64
		switch x := k.(type) {
		case int64:
			n = x
		case string:
			v, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
			if err != nil {
				return nil, "", false
			}
			n = v
		default:
			return nil, "", false
		}
		return n, strconv.FormatInt(n, 10), true
	}
	switch x := k.(type) {
	case string:
		return x, x, true
	case int64:
		s := strconv.FormatInt(x, 10)
		return s, s, true
	case float64:
		s := jsNumber(x)
		return s, s, true
	}
	return nil, "", false
}

func (c *collection) lookup(k any) (*row, bool) {
	_, ck, ok := c.canonicalKey(k)
	if !ok {
		return nil, false
	}
	r, ok := c.rows[ck]
	return r, ok
}

func (c *collection) keyLess(a, b *row) int {
	if c.keyType == IntegerKey {
		return cmp.Compare(a.key.(int64), b.key.(int64))
	}
	return strings.Compare(a.key.(string), b.key.(string))
}

func (c *collection) insertSorted(r *row) {
	n := len(c.sorted)
	if n == 0 || c.keyLess(c.sorted[n-1], r) < 0 {
		c.sorted = append(c.sorted, r)
		return
	}
	i, _ := slices.BinarySearchFunc(c.sorted, r, c.keyLess)
	c.sorted = slices.Insert(c.sorted, i, r)
}

func (c *collection) removeSorted(r *row) {
	i, found := slices.BinarySearchFunc(c.sorted, r, c.keyLess)
	if found {
		c.sorted = slices.Delete(c.sorted, i, i+1)
	}
}

// toMap returns a deep copy of the row as a map.
func (c *collection) toMap(r *row) map[string]any {
	m := make(map[string]any, len(c.fields))
	for i, f := range c.fields {
		m[f] = deepCopy(r.vals[i])
	}
	return m
}

// normalizeItem converts an input item into field values, dropping unknown
// fields (as Directus does) and the primary key (returned separately).
func (c *collection) normalizeItem(item map[string]any) (vals map[int]any, pk any, hasPK bool, err *dxError) {
	vals = make(map[int]any, len(item))
	for k, v := range item {
		idx, ok := c.fieldIdx[k]
		if !ok {
			continue
		}
		n, ok := normalizeValue(v)
		if !ok {
			return nil, nil, false, errInvalidPayload(fmt.Sprintf(`Invalid payload. Value of field "%s" cannot be represented in JSON.`, k))
		}
		if idx == c.pkIdx {
			if n != nil {
				pk, hasPK = n, true
			}
			continue
		}
		vals[idx] = n
	}
	return vals, pk, hasPK, nil
}

// createLocked inserts items atomically and returns the new rows in input
// order.
func (c *collection) createLocked(items []map[string]any) ([]*row, *dxError) {
	type pending struct {
		vals  map[int]any
		key   any
		ckey  string
		given bool
	}
	ps := make([]pending, len(items))
	batch := map[string]bool{}
	for i, item := range items {
		if item == nil {
			return nil, errInvalidPayload(`Invalid payload. Item has to be an object.`)
		}
		vals, pk, hasPK, err := c.normalizeItem(item)
		if err != nil {
			return nil, err
		}
		p := pending{vals: vals}
		if hasPK {
			key, ck, ok := c.canonicalKey(pk)
			if !ok {
				return nil, errInvalidPayload(fmt.Sprintf(`Invalid payload. Invalid value for primary key "%s" of collection "%s".`, c.pk, c.name))
			}
			if _, exists := c.rows[ck]; exists || batch[ck] {
				return nil, errRecordNotUnique(c.pk, c.name)
			}
			batch[ck] = true
			p.key, p.ckey, p.given = key, ck, true
		} else if c.keyType == StringKey {
			return nil, errInvalidPayload(fmt.Sprintf(`Invalid payload. Primary key "%s" of collection "%s" is required.`, c.pk, c.name))
		}
		ps[i] = p
	}
	out := make([]*row, 0, len(ps))
	for _, p := range ps {
		if !p.given {
			switch c.keyType {
			case IntegerKey:
				for {
					ck := strconv.FormatInt(c.nextID, 10)
					if _, taken := c.rows[ck]; !taken && !batch[ck] {
						p.key, p.ckey = c.nextID, ck
						c.nextID++
						break
					}
					c.nextID++
				}
			default:
				for {
					u := newUUID()
					if _, taken := c.rows[u]; !taken && !batch[u] {
						p.key, p.ckey = u, u
						break
					}
				}
			}
		} else if n, ok := p.key.(int64); ok && c.keyType == IntegerKey && n >= c.nextID {
			c.nextID = n + 1
		}
		r := &row{key: p.key, ckey: p.ckey, vals: make([]any, len(c.fields))}
		for idx, v := range p.vals {
			r.vals[idx] = v
		}
		r.vals[c.pkIdx] = p.key
		c.rows[p.ckey] = r
		c.insertSorted(r)
		out = append(out, r)
	}
	return out, nil
}

// updateLocked applies patch to the rows named by keys (missing keys are
// ignored, as an SQL UPDATE would) and returns the updated rows in key order.
func (c *collection) updateLocked(keys []any, patch map[string]any) ([]*row, *dxError) {
	if patch == nil {
		patch = map[string]any{}
	}
	vals, _, _, err := c.normalizeItem(patch)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []*row
	for _, k := range keys {
		r, ok := c.lookup(k)
		if !ok || seen[r.ckey] {
			continue
		}
		seen[r.ckey] = true
		for idx, v := range vals {
			r.vals[idx] = deepCopy(v)
		}
		r.enc = nil
		out = append(out, r)
	}
	slices.SortFunc(out, c.keyLess)
	return out, nil
}

// deleteLocked removes the rows named by keys; missing keys are ignored.
func (c *collection) deleteLocked(keys []any) {
	for _, k := range keys {
		r, ok := c.lookup(k)
		if !ok {
			continue
		}
		delete(c.rows, r.ckey)
		c.removeSorted(r)
	}
}

// Writer performs writes from Go. The Writer returned by Server.Quiet emits
// no subscription events, like a Flow with "emit events" off or raw SQL.
// The Server's own Create, Update and Delete emit exactly the events the
// equivalent REST call would.
type Writer struct {
	s    *Server
	emit bool
}

// Quiet returns a Writer whose writes emit no events.
func (s *Server) Quiet() *Writer { return &Writer{s: s} }

// Create creates items in a collection and returns them (deep copies, every
// field). Each item yields its own create event, like a REST batch create.
func (s *Server) Create(collection string, items ...map[string]any) ([]map[string]any, error) {
	return s.loud.Create(collection, items...)
}

// Update applies patch to the items with the given keys and returns the
// updated items. One update event is emitted per call, for all keys. The
// keys keep their Go type in the event matching: a single-item subscription
// only sees the update when its key is given as a string, exactly as on a
// real Directus (docs/PROTOCOL.md §5.2).
func (s *Server) Update(collection string, keys []any, patch map[string]any) ([]map[string]any, error) {
	return s.loud.Update(collection, keys, patch)
}

// Delete deletes the items with the given keys. One delete event is emitted
// per call and it carries the keys exactly as given: "1521" as a REST URL
// path would, 1521 as a JSON body would.
func (s *Server) Delete(collection string, keys ...any) error {
	return s.loud.Delete(collection, keys...)
}

// Create creates items; see Server.Create.
func (w *Writer) Create(collection string, items ...map[string]any) ([]map[string]any, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.colls[collection]
	if !ok {
		return nil, fmt.Errorf("directustest: no collection %q", collection)
	}
	rows, err := c.createLocked(items)
	if err != nil {
		return nil, err
	}
	if w.emit {
		s.dispatchCreatesLocked(c, rows)
	}
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		out[i] = c.toMap(r)
	}
	return out, nil
}

// Update updates items; see Server.Update.
func (w *Writer) Update(collection string, keys []any, patch map[string]any) ([]map[string]any, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.colls[collection]
	if !ok {
		return nil, fmt.Errorf("directustest: no collection %q", collection)
	}
	nkeys, err := normalizeKeys(keys)
	if err != nil {
		return nil, err
	}
	rows, derr := c.updateLocked(nkeys, patch)
	if derr != nil {
		return nil, derr
	}
	if w.emit {
		s.dispatchUpdateLocked(c, nkeys)
	}
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		out[i] = c.toMap(r)
	}
	return out, nil
}

// Delete deletes items; see Server.Delete.
func (w *Writer) Delete(collection string, keys ...any) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.colls[collection]
	if !ok {
		return fmt.Errorf("directustest: no collection %q", collection)
	}
	nkeys, err := normalizeKeys(keys)
	if err != nil {
		return err
	}
	c.deleteLocked(nkeys)
	if w.emit {
		s.dispatchDeleteLocked(c, nkeys)
	}
	return nil
}

func normalizeKeys(keys []any) ([]any, error) {
	out := make([]any, len(keys))
	for i, k := range keys {
		n, ok := normalizeValue(k)
		if !ok {
			return nil, fmt.Errorf("directustest: key %v cannot be represented in JSON", k)
		}
		out[i] = n
	}
	return out, nil
}

// Items returns every row of the collection, sorted by primary key, as deep
// copies. Numbers are int64 when integral, float64 otherwise. It returns nil
// for an unknown collection.
func (s *Server) Items(collection string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.colls[collection]
	if !ok {
		return nil
	}
	out := make([]map[string]any, len(c.sorted))
	for i, r := range c.sorted {
		out[i] = c.toMap(r)
	}
	return out
}

// Item returns a deep copy of one row. The key may be given in any JSON type
// ("1521" and 1521 name the same row of an integer-keyed collection).
func (s *Server) Item(collection string, key any) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.colls[collection]
	if !ok {
		return nil, false
	}
	r, ok := c.lookup(key)
	if !ok {
		return nil, false
	}
	return c.toMap(r), true
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
