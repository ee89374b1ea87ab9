package directustest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// itemsRequest is a validated WebSocket items message.
type itemsRequest struct {
	collection string
	action     string
	data       any  // normalised JSON; nil when absent
	hasData    bool //
	id         any  // string, int64 or float64
	hasID      bool
	ids        []any
	hasIDs     bool
	query      map[string]any
	hasQuery   bool
}

// parseItems validates the items schema; errors are INVALID_PAYLOAD and,
// unlike subscribe, echo the uid (I8d).
func parseItems(m *inMsg) (*itemsRequest, *dxError) {
	raw := m.raw
	req := &itemsRequest{}
	cv, ok := raw["collection"]
	if !ok {
		return nil, errValidation(issueExpected("string", "undefined", "collection"))
	}
	if jsTypeOf(cv) != "string" {
		return nil, errValidation(issueExpected("string", jsTypeOf(cv), "collection"))
	}
	_ = json.Unmarshal(cv, &req.collection)
	av := raw["action"]
	_ = json.Unmarshal(av, &req.action)
	switch req.action {
	case "create", "read", "update", "delete":
	default:
		return nil, errValidation(`Invalid input: expected "create" at "action" or Invalid input: expected "read" at "action" or Invalid input: expected "update" at "action" or Invalid input: expected "delete" at "action"`)
	}
	if v, ok := raw["data"]; ok {
		var d any
		if err := decodeJSON(v, &d); err != nil {
			return nil, errInvalidPayload(msgUnparsable)
		}
		req.data, req.hasData = d, true
	}
	if v, ok := raw["id"]; ok {
		u, issue := parseStringOrNumber(v, "id")
		if issue != "" {
			return nil, errValidation(issue)
		}
		req.id, req.hasID = uidToKey(u), true
	}
	if v, ok := raw["ids"]; ok {
		var list []json.RawMessage
		if jsTypeOf(v) != "array" || json.Unmarshal(v, &list) != nil {
			return nil, errValidation(issueExpected("array", jsTypeOf(v), "ids"))
		}
		for _, e := range list {
			u, issue := parseStringOrNumber(e, "ids")
			if issue != "" {
				return nil, errValidation(issue)
			}
			req.ids = append(req.ids, uidToKey(u))
		}
		req.hasIDs = true
	}
	if v, ok := raw["query"]; ok {
		if t := jsTypeOf(v); t != "object" {
			return nil, errValidation(issueExpected("record", t, "query"))
		}
		var q any
		if err := decodeJSON(v, &q); err != nil {
			return nil, errInvalidPayload(msgUnparsable)
		}
		req.query, _ = q.(map[string]any)
		req.hasQuery = true
	}
	switch req.action {
	case "create":
		if !isObjectOrArray(req.data) {
			return nil, errValidation(issueExpected("object", jsTypeOfValue(req.data, req.hasData), "data"))
		}
	case "update":
		if !isObjectOrArray(req.data) {
			return nil, errValidation(issueExpected("object", jsTypeOfValue(req.data, req.hasData), "data"))
		}
	}
	return req, nil
}

func uidToKey(u uidVal) any {
	if u.isNum {
		n, _ := normalizeFloat(u.num)
		return n
	}
	return u.str
}

func isObjectOrArray(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return true
	}
	return false
}

func jsTypeOfValue(v any, present bool) string {
	if !present {
		return "undefined"
	}
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case int64, float64:
		return "number"
	case []any:
		return "array"
	}
	return "object"
}

// handleItemsLocked implements the items message (docs/PROTOCOL.md §6).
func (s *Server) handleItemsLocked(c *wsConn, m *inMsg) {
	req, err := parseItems(m)
	if err != nil {
		c.sendLocked(frameDXError("items", err, m.uid))
		return
	}
	data, meta, derr := s.runItemsLocked(c.ident.user, req, func(data []byte) {
		// Delete replies go out before the delete events (I7).
		c.sendLocked(itemsFrame(data, nil, m.uid))
	})
	if derr != nil {
		c.sendLocked(frameDXError("items", derr, m.uid))
		return
	}
	if data != nil {
		c.sendLocked(itemsFrame(data, meta, m.uid))
	}
}

// runItemsLocked performs an items request for user u (nil = Public). For
// deletes, replyFirst is called with the reply before the events are
// dispatched and the returned data is nil.
func (s *Server) runItemsLocked(u *user, req *itemsRequest, replyFirst func([]byte)) (data, meta []byte, err *dxError) {
	if strings.HasPrefix(req.collection, "directus_") {
		return nil, nil, newError(http.StatusForbidden, codeInvalidCollection, msgSystemCollection)
	}
	coll, ok := s.colls[req.collection]
	if !ok {
		return nil, nil, errForbiddenCollection(req.collection)
	}
	action := map[string]permAction{"read": permRead, "create": permCreate, "update": permUpdate, "delete": permDelete}[req.action]
	if !s.allowedLocked(u, coll.name, action) {
		return nil, nil, errForbiddenCollection(coll.name)
	}
	params, err := parseQuery(req.query)
	if err != nil {
		return nil, nil, err
	}
	cq, err := compileQuery(coll, params)
	if err != nil {
		return nil, nil, err
	}
	canRead := s.allowedLocked(u, coll.name, permRead)
	switch req.action {
	case "read":
		switch {
		case req.hasID:
			r, ok := coll.readOne(req.id, cq)
			if !ok {
				return nil, nil, errForbidden()
			}
			return cq.appendRow(nil, coll, r), nil, nil
		case req.hasIDs:
			return cq.appendRows(nil, coll, coll.readMany(req.ids, cq)), nil, nil
		default:
			rows := coll.readByQuery(cq, s.opts.DefaultLimit)
			meta, _ := cq.appendMeta(nil, coll)
			return cq.appendRows(make([]byte, 0, 64*len(rows)+2), coll, rows), meta, nil
		}

	case "create":
		if obj, ok := req.data.(map[string]any); ok {
			rows, err := coll.createLocked([]map[string]any{obj})
			if err != nil {
				return nil, nil, err
			}
			s.dispatchCreatesLocked(coll, rows)
			if !canRead {
				return nil, nil, errForbiddenCollection(coll.name)
			}
			r, ok := coll.readOne(rows[0].key, cq)
			if !ok {
				return nil, nil, errForbidden()
			}
			return cq.appendRow(nil, coll, r), nil, nil
		}
		items, ok := objectList(req.data.([]any))
		if !ok {
			return nil, nil, errValidation(issueExpected("object", "array", "data"))
		}
		rows, err := coll.createLocked(items)
		if err != nil {
			return nil, nil, err
		}
		s.dispatchCreatesLocked(coll, rows)
		if !canRead {
			return nil, nil, errForbiddenCollection(coll.name)
		}
		return cq.appendRows(nil, coll, coll.readMany(rowKeys(rows), cq)), nil, nil

	case "update":
		if list, isList := req.data.([]any); isList && !req.hasID && !req.hasIDs {
			items, ok := objectList(list)
			if !ok {
				return nil, nil, errValidation(issueExpected("object", "array", "data"))
			}
			keys, err := s.updateBatchLocked(coll, items)
			if err != nil {
				return nil, nil, err
			}
			if !canRead {
				return nil, nil, errForbiddenCollection(coll.name)
			}
			return cq.appendRows(nil, coll, coll.readMany(keys, cq)), nil, nil
		}
		patch, ok := req.data.(map[string]any)
		if !ok {
			return nil, nil, errValidation(issueExpected("object", "array", "data"))
		}
		var keys []any
		switch {
		case req.hasID:
			keys = []any{req.id}
		case req.hasIDs:
			keys = req.ids
		case req.hasQuery:
			keys = rowKeys(coll.readByQuery(cq, s.opts.DefaultLimit))
		default:
			return nil, nil, errInvalidPayload("Either 'ids', 'id' or 'query' is required for a UPDATE request.")
		}
		if _, err := coll.updateLocked(keys, patch); err != nil {
			return nil, nil, err
		}
		s.dispatchUpdateLocked(coll, keys)
		if !canRead {
			return nil, nil, errForbiddenCollection(coll.name)
		}
		if req.hasID {
			// updateOne replies with the full item; the query is not applied.
			r, ok := coll.readOne(req.id, coll.all)
			if !ok {
				return nil, nil, errForbidden()
			}
			return coll.all.appendRow(nil, coll, r), nil, nil
		}
		return cq.appendRows(nil, coll, coll.readMany(keys, cq)), nil, nil

	case "delete":
		var keys []any
		var reply []byte
		switch {
		case req.hasID:
			keys = []any{req.id}
			reply = appendValue(nil, req.id)
		case req.hasIDs:
			keys = req.ids
			reply = appendValue(nil, req.ids)
		case req.hasQuery:
			keys = rowKeys(coll.readByQuery(cq, s.opts.DefaultLimit))
			reply = appendValue(nil, keys)
		default:
			return nil, nil, errInvalidPayload(msgDeleteNeedsKeys)
		}
		if keys == nil {
			keys = []any{}
		}
		coll.deleteLocked(keys)
		replyFirst(reply)
		s.dispatchDeleteLocked(coll, keys)
		return nil, nil, nil
	}
	return nil, nil, nil
}

// updateBatchLocked updates a list of items that each carry their primary
// key; like Directus' updateBatch each item is its own update event.
func (s *Server) updateBatchLocked(coll *collection, items []map[string]any) ([]any, *dxError) {
	keys := make([]any, 0, len(items))
	for _, it := range items {
		k, ok := it[coll.pk]
		if !ok || k == nil {
			return nil, errInvalidPayload(`Primary key "` + coll.pk + `" is required in every item of a batch update.`)
		}
		keys = append(keys, k)
	}
	events := make([][]any, len(items))
	for i, it := range items {
		if _, err := coll.updateLocked([]any{keys[i]}, it); err != nil {
			return nil, err
		}
		events[i] = []any{keys[i]}
	}
	s.dispatchUpdatesLocked(coll, events)
	return keys, nil
}

func objectList(list []any) ([]map[string]any, bool) {
	out := make([]map[string]any, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, false
		}
		out[i] = m
	}
	return out, true
}

func rowKeys(rows []*row) []any {
	keys := make([]any, len(rows))
	for i, r := range rows {
		keys[i] = r.key
	}
	return keys
}
