package directustest

import (
	"encoding/json"
)

func (c *wsConn) removeAllSubsLocked() {
	subs := c.subs
	c.subs = nil
	for _, sub := range subs {
		c.s.subs.remove(sub)
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
			s.subs.remove(old)
		}
	}
	if item.set {
		sub.item, sub.hasItem = item.String(), true
	}
	if event != "" {
		// Event-only subscriptions do no read, hence no permission check
		// (P2, Q2).
		s.subs.add(sub)
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
	s.subs.add(sub)
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
		s.subs.remove(sub)
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
