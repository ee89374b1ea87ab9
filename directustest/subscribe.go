package directustest

import (
	"encoding/json"
	"slices"
)

// subscription is one registered subscription.
type subscription struct {
	seq        uint64
	conn       *wsConn
	uid        string // String(uid)
	hasUID     bool
	collection string
	event      string // "", "create", "update", "delete"
	item       string // String(item)
	hasItem    bool
	queryRaw   json.RawMessage
	params     *queryParams
	cq         *compiledQuery // compiled lazily against cqColl
	cqColl     *collection
	cqErr      *dxError
	removed    bool
}

func (sub *subscription) uidVal() uidVal { return stringUID(sub.uid, sub.hasUID) }

// compiled resolves the query against the collection, once.
func (sub *subscription) compiled(c *collection) (*compiledQuery, *dxError) {
	if sub.cqColl != c {
		sub.cqColl = c
		sub.cq, sub.cqErr = compileQuery(c, sub.params)
	}
	return sub.cq, sub.cqErr
}

// subList holds the subscriptions of one collection in creation order.
// Removed entries are tombstoned and compacted lazily, so subscribing and
// unsubscribing are O(1) amortised even with many thousands of them.
type subList struct {
	subs []*subscription
	dead int
}

func (l *subList) compact() {
	if l.dead == 0 || l.dead < len(l.subs)/2 {
		return
	}
	l.subs = slices.DeleteFunc(l.subs, func(s *subscription) bool { return s.removed })
	l.dead = 0
}

func (s *Server) registerLocked(sub *subscription) {
	s.subSeq++
	sub.seq = s.subSeq
	l := s.subs[sub.collection]
	if l == nil {
		l = &subList{}
		s.subs[sub.collection] = l
	}
	l.compact()
	l.subs = append(l.subs, sub)
	c := sub.conn
	c.subs = append(c.subs, sub)
	if sub.hasUID {
		c.subsByUID[sub.uid] = sub
	}
}

func (s *Server) removeSubLocked(sub *subscription) {
	if sub.removed {
		return
	}
	sub.removed = true
	if l := s.subs[sub.collection]; l != nil {
		l.dead++
		l.compact()
		if len(l.subs) == 0 {
			delete(s.subs, sub.collection)
		}
	}
	c := sub.conn
	if sub.hasUID && c.subsByUID[sub.uid] == sub {
		delete(c.subsByUID, sub.uid)
	}
	c.deadSubs++
	if c.deadSubs >= len(c.subs)/2 {
		c.subs = slices.DeleteFunc(c.subs, func(x *subscription) bool { return x.removed })
		c.deadSubs = 0
	}
}

func (c *wsConn) removeAllSubsLocked() {
	subs := c.subs
	c.subs = nil
	for _, sub := range subs {
		c.s.removeSubLocked(sub)
	}
	c.subs = nil
	c.deadSubs = 0
	clear(c.subsByUID)
}

// subscribeIssue validates the subscribe schema. Such errors carry no uid
// (E2, E4).
func subscribeIssue(m *inMsg) (collection, event string, item uidVal, query map[string]any, queryRaw json.RawMessage, issue string) {
	raw := m.raw
	cv, ok := raw["collection"]
	switch {
	case !ok:
		return "", "", item, nil, nil, issueExpected("string", "undefined", "collection")
	case jsTypeOf(cv) != "string":
		return "", "", item, nil, nil, issueExpected("string", jsTypeOf(cv), "collection")
	}
	_ = json.Unmarshal(cv, &collection)
	if ev, ok := raw["event"]; ok {
		_ = json.Unmarshal(ev, &event)
		if jsTypeOf(ev) != "string" || (event != "create" && event != "update" && event != "delete") {
			return "", "", item, nil, nil, `Invalid input: expected "create" at "event" or Invalid input: expected "update" at "event" or Invalid input: expected "delete" at "event"`
		}
	}
	if iv, ok := raw["item"]; ok {
		v, iss := parseStringOrNumber(iv, "item")
		if iss != "" {
			return "", "", item, nil, nil, iss
		}
		item = v
	}
	if qv, ok := raw["query"]; ok {
		if t := jsTypeOf(qv); t != "object" {
			return "", "", item, nil, nil, issueExpected("record", t, "query")
		}
		var decoded any
		if err := decodeJSON(qv, &decoded); err != nil {
			return "", "", item, nil, nil, issueExpected("record", "object", "query")
		}
		query, _ = decoded.(map[string]any)
		queryRaw = append(json.RawMessage(nil), qv...)
	}
	return collection, event, item, query, queryRaw, ""
}

// handleSubscribeLocked implements subscribe (docs/PROTOCOL.md §5). Unlike
// Directus, the init read and the registration happen atomically: no write
// can fall between them.
func (s *Server) handleSubscribeLocked(c *wsConn, m *inMsg) {
	collName, event, item, query, queryRaw, issue := subscribeIssue(m)
	if issue != "" {
		c.sendLocked(frameDXError("subscribe", errValidation(issue), uidVal{}))
		return
	}
	params, qerr := parseQuery(query)
	if qerr != nil {
		c.sendLocked(frameDXError("subscribe", qerr, m.uid))
		return
	}
	sub := &subscription{
		conn:       c,
		collection: collName,
		event:      event,
		queryRaw:   queryRaw,
		params:     params,
	}
	if m.uid.set {
		sub.uid, sub.hasUID = m.uid.String(), true
		// A uid already in use is replaced (U2).
		if old := c.subsByUID[sub.uid]; old != nil {
			s.removeSubLocked(old)
		}
	}
	if item.set {
		sub.item, sub.hasItem = item.String(), true
	}
	if event != "" {
		// Event-only subscriptions do no read, hence no permission check
		// (P2, Q2).
		s.registerLocked(sub)
		c.sendLocked(subscriptionFrame("init", nil, nil, sub.uidVal()))
		return
	}
	coll, ok := s.colls[collName]
	if !ok || !s.allowedLocked(c.ident.user, collName, permRead) {
		c.sendLocked(frameDXError("subscribe", errForbiddenCollection(collName), m.uid))
		return
	}
	cq, cerr := sub.compiled(coll)
	if cerr != nil {
		c.sendLocked(frameDXError("subscribe", cerr, m.uid))
		return
	}
	var data []byte
	if sub.hasItem {
		r, ok := coll.readOne(sub.item, cq)
		if !ok {
			c.sendLocked(frameDXError("subscribe", errForbidden(), m.uid))
			return
		}
		data = cq.appendRow(nil, coll, r)
	} else {
		rows := coll.readByQuery(cq, s.opts.DefaultLimit)
		data = cq.appendRows(make([]byte, 0, 64*len(rows)+2), coll, rows)
	}
	meta, _ := cq.appendMeta(nil, coll)
	s.registerLocked(sub)
	c.sendLocked(subscriptionFrame("init", data, meta, sub.uidVal()))
}

// handleUnsubscribeLocked removes one subscription (acknowledged even when
// unknown) or, without uid, all of the connection's subscriptions.
func (s *Server) handleUnsubscribeLocked(c *wsConn, m *inMsg) {
	if !m.uid.set {
		c.removeAllSubsLocked()
		c.sendLocked(subscriptionFrame("unsubscribe", nil, nil, uidVal{}))
		return
	}
	uid := m.uid.String()
	if sub := c.subsByUID[uid]; sub != nil {
		s.removeSubLocked(sub)
	}
	c.sendLocked(subscriptionFrame("unsubscribe", nil, nil, stringUID(uid, true)))
}

// Subscriptions returns every registered subscription, by connection and
// then in creation order.
func (s *Server) Subscriptions() []SubscriptionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SubscriptionInfo
	for _, c := range s.connsInOrderLocked() {
		for _, sub := range c.subs {
			if sub.removed {
				continue
			}
			out = append(out, SubscriptionInfo{
				Conn:       c.id,
				UID:        sub.uid,
				Collection: sub.collection,
				Query:      append(json.RawMessage(nil), sub.queryRaw...),
				Item:       sub.item,
				Event:      sub.event,
			})
		}
	}
	return out
}
