package directustest

// Event dispatch (docs/PROTOCOL.md §5.2). Every write calls one of the dispatch
// functions while still holding Server.mu, so the frames of all connections
// are queued in commit order, and a subscriber can never see a frame of a
// later write before one of an earlier write.

// dispatchCache shares encodings between the subscriptions served for one
// event: rows are encoded once per distinct field projection, filter counts
// once per distinct filter.
type dispatchCache struct {
	rows        map[string][]byte
	filterCount map[string]int
}

func (d *dispatchCache) row(cq *compiledQuery, c *collection, r *row) []byte {
	if cq.allFields {
		return cq.appendRow(nil, c, r) // cached on the row itself
	}
	key := cq.fieldsSig + "\x00" + r.ckey
	if b, ok := d.rows[key]; ok {
		return b
	}
	if d.rows == nil {
		d.rows = map[string][]byte{}
	}
	b := cq.appendFields(nil, c, r)
	d.rows[key] = b
	return b
}

func (d *dispatchCache) meta(cq *compiledQuery, c *collection) []byte {
	if len(cq.p.meta) == 0 {
		return nil
	}
	needFilter := false
	for _, m := range cq.p.meta {
		if m == "filter_count" {
			needFilter = true
		}
	}
	if needFilter && cq.filter != nil {
		if d.filterCount == nil {
			d.filterCount = map[string]int{}
		}
		if _, ok := d.filterCount[cq.p.filterKey]; !ok {
			d.filterCount[cq.p.filterKey] = cq.filterCount(c)
		}
	}
	b := []byte{'{'}
	for i, m := range cq.p.meta {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, m)
		b = append(b, ':')
		n := len(c.rows)
		if m == "filter_count" && cq.filter != nil {
			n = d.filterCount[cq.p.filterKey]
		}
		b = appendValue(b, int64(n))
	}
	return append(b, '}')
}

// dispatchCreatesLocked emits one create event per created row. The events
// of one batch are served subscription by subscription, each getting the
// rows in key order: the order Directus produces (R5), since its
// concurrent per-event dispatches advance through the subscriptions in
// lockstep.
func (s *Server) dispatchCreatesLocked(c *collection, rows []*row) {
	events := make([][]any, len(rows))
	for i, r := range rows {
		events[i] = []any{r.key}
	}
	s.dispatchLocked(c, "create", events)
}

// dispatchUpdateLocked emits one update event for all keys, as given.
func (s *Server) dispatchUpdateLocked(c *collection, keys []any) {
	s.dispatchLocked(c, "update", [][]any{keys})
}

// dispatchUpdatesLocked emits one update event per key set (a batch update
// of items that each carry their key), in the same order as creates.
func (s *Server) dispatchUpdatesLocked(c *collection, events [][]any) {
	s.dispatchLocked(c, "update", events)
}

// dispatchDeleteLocked emits one delete event carrying the keys as given.
func (s *Server) dispatchDeleteLocked(c *collection, keys []any) {
	s.dispatchLocked(c, "delete", [][]any{keys})
}

// dispatchLocked delivers events (each a list of keys) of one action.
func (s *Server) dispatchLocked(c *collection, action string, events [][]any) {
	s.dispatchGraphQLLocked(c, action, events)
	l := s.subs.of(c.name)
	if l == nil || len(events) == 0 {
		return
	}
	l.compact()
	var cache dispatchCache
	for _, sub := range l.subs {
		if sub.removed || sub.conn.state != stateOpen {
			continue
		}
		if sub.event != "" && sub.event != action {
			continue
		}
		for _, keys := range events {
			if sub.hasItem && !containsStringKey(keys, sub.item) {
				// Directus keeps String(item) and compares it with === to
				// the event keys: keys given as JSON numbers never match
				// (R7, I6c).
				continue
			}
			s.deliverLocked(sub, c, action, keys, &cache)
		}
	}
}

func containsStringKey(keys []any, item string) bool {
	for _, k := range keys {
		if s, ok := k.(string); ok && s == item {
			return true
		}
	}
	return false
}

func (s *Server) deliverLocked(sub *subscription, c *collection, action string, keys []any, cache *dispatchCache) {
	conn := sub.conn
	uid := sub.uidVal()
	if action == "delete" {
		// Deletes carry the keys, unfiltered and without permission check,
		// but meta is computed with the subscriber's identity: without
		// read permission that fails, and the delete becomes an error.
		var meta []byte
		if len(sub.params.meta) > 0 {
			if !s.allowedLocked(conn.ident.user, c.name, permRead) {
				conn.sendLocked(frameDXError("subscribe", errForbiddenRead(c.name), uid))
				return
			}
			if cq, err := sub.compiled(c); err == nil {
				meta = cache.meta(cq, c)
			}
		}
		var data []byte
		if sub.hasItem {
			data = appendJSONString(nil, sub.item)
		} else {
			if len(keys) == 0 {
				// A delete that named no key: Directus skips any event
				// whose data is an empty array.
				return
			}
			data = appendValue(nil, keys)
		}
		conn.sendLocked(subscriptionFrame("delete", data, meta, uid))
		return
	}
	// create and update re-read the rows with the subscriber's current
	// identity and the subscription's query.
	if !s.allowedLocked(conn.ident.user, c.name, permRead) {
		conn.sendLocked(frameDXError("subscribe", errForbiddenCollection(c.name), uid))
		return
	}
	cq, err := sub.compiled(c)
	if err != nil {
		conn.sendLocked(frameDXError("subscribe", err, uid))
		return
	}
	var data []byte
	if sub.hasItem {
		r, ok := c.readOne(sub.item, cq)
		if !ok {
			conn.sendLocked(frameDXError("subscribe", errForbidden(), uid))
			return
		}
		data = cache.row(cq, c, r)
	} else {
		rows := c.readMany(keys, cq)
		if len(rows) == 0 {
			return // no frame at all for rows that do not match (R2, R4)
		}
		if cq.aggregated() {
			data = cq.appendRows(nil, c, rows) // the aggregate of the changed rows alone
		} else if len(rows) == 1 {
			enc := cache.row(cq, c, rows[0])
			data = make([]byte, 0, len(enc)+2)
			data = append(append(append(data, '['), enc...), ']')
		} else {
			data = append(data, '[')
			for i, r := range rows {
				if i > 0 {
					data = append(data, ',')
				}
				data = append(data, cache.row(cq, c, r)...)
			}
			data = append(data, ']')
		}
	}
	conn.sendLocked(subscriptionFrame(action, data, cache.meta(cq, c), uid))
}
