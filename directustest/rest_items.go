package directustest

import (
	"net/http"
	"strings"
)

// The /items routes: list, read, create, update and delete, each under
// Server.mu so that the write and its events are one step.

// restItemsCall is an /items request past its checks: who asks, the
// collection, the compiled query and the decoded body (nil without one).
type restItemsCall struct {
	u    *user
	coll *collection
	cq   *compiledQuery
	body any
}

// items makes the handler of an /items route: it reads the body (when
// withBody, before the lock), takes Server.mu, checks the request with
// restPrepareLocked and writes the error response if it fails, or else if
// the body did not read: the request's errors come first, as on Directus.
func (s restAPI) items(action permAction, withBody bool, h func(w http.ResponseWriter, r *http.Request, req restItemsCall)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req restItemsCall
		var bodyErr *dxError
		if withBody {
			req.body, _, bodyErr = readBody(r)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		var err *dxError
		req.u, req.coll, req.cq, err = s.restPrepareLocked(r, action)
		if err == nil {
			err = bodyErr
		}
		if err != nil {
			writeError(w, err)
			return
		}
		h(w, r, req)
	}
}

// writeReadable answers a write with the rows it wrote, as read back by
// the request's query, or with 204 when the identity may not read them.
func (s restAPI) writeReadable(w http.ResponseWriter, req restItemsCall, keys []any, single bool) {
	if !s.allowedLocked(req.u, req.coll.name, permRead) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if single {
		row, ok := req.coll.readOne(keys[0], req.cq)
		if !ok {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeData(w, req.cq.appendRow(nil, req.coll, row), nil)
		return
	}
	writeData(w, req.cq.appendRows(nil, req.coll, req.coll.readMany(keys, req.cq)), nil)
}

// restPrepareLocked authenticates, checks the collection and the permission
// and compiles the query of an /items request.
func (s restAPI) restPrepareLocked(r *http.Request, action permAction) (*user, *collection, *compiledQuery, *dxError) {
	ident, err := s.restIdentity(r)
	if err != nil {
		return nil, nil, nil, err
	}
	name := r.PathValue("collection")
	if strings.HasPrefix(name, "directus_") {
		return nil, nil, nil, errForbidden()
	}
	coll, ok := s.colls[name]
	if !ok || !s.allowedLocked(ident.user, name, action) {
		return nil, nil, nil, errForbiddenCollection(name)
	}
	params, err := parseQuery(restQuery(r.URL.Query()))
	if err != nil {
		return nil, nil, nil, err
	}
	cq, err := compileQuery(coll, params)
	if err != nil {
		return nil, nil, nil, err
	}
	return ident.user, coll, cq, nil
}

func (s restAPI) restList(w http.ResponseWriter, r *http.Request, req restItemsCall) {
	rows := req.coll.readByQuery(req.cq, s.opts.DefaultLimit)
	meta, _ := req.cq.appendMeta(nil, req.coll)
	writeData(w, req.cq.appendRows(nil, req.coll, rows), meta)
}

func (s restAPI) restGetOne(w http.ResponseWriter, r *http.Request, req restItemsCall) {
	row, ok := req.coll.readOne(r.PathValue("id"), req.cq)
	if !ok {
		writeError(w, errForbidden())
		return
	}
	writeData(w, req.cq.appendRow(nil, req.coll, row), nil)
}

func (s restAPI) restCreate(w http.ResponseWriter, r *http.Request, req restItemsCall) {
	var items []map[string]any
	single := false
	switch x := req.body.(type) {
	case map[string]any:
		items, single = []map[string]any{x}, true
	case []any:
		var ok bool
		if items, ok = objectList(x); !ok {
			writeError(w, errInvalidPayload("Invalid payload. Items have to be objects."))
			return
		}
	default:
		writeError(w, errInvalidPayload("Invalid payload. Expected an object or an array of objects."))
		return
	}
	rows, cerr := req.coll.createLocked(items)
	if cerr != nil {
		writeError(w, cerr)
		return
	}
	s.dispatchCreatesLocked(req.coll, rows)
	s.writeReadable(w, req, rowKeys(rows), single)
}

func (s restAPI) restUpdateOne(w http.ResponseWriter, r *http.Request, req restItemsCall) {
	patch, ok := req.body.(map[string]any)
	if !ok {
		writeError(w, errInvalidPayload("Invalid payload. Expected an object."))
		return
	}
	// The key comes from the URL path, so the event carries it as a string
	// (which is also what lets single-item subscriptions see it, R3).
	keys := []any{r.PathValue("id")}
	if _, uerr := req.coll.updateLocked(keys, patch); uerr != nil {
		writeError(w, uerr)
		return
	}
	s.dispatchUpdateLocked(req.coll, keys)
	s.writeReadable(w, req, keys, true)
}

func (s restAPI) restUpdateMany(w http.ResponseWriter, r *http.Request, req restItemsCall) {
	coll := req.coll
	var keys []any
	switch x := req.body.(type) {
	case []any:
		items, ok := objectList(x)
		if !ok {
			writeError(w, errInvalidPayload("Invalid payload. Items have to be objects."))
			return
		}
		k, uerr := s.updateBatchLocked(coll, items)
		if uerr != nil {
			writeError(w, uerr)
			return
		}
		keys = k
	case map[string]any:
		patch, _ := x["data"].(map[string]any)
		if patch == nil {
			writeError(w, errInvalidPayload(`Invalid payload. "data" is required.`))
			return
		}
		list, kerr := s.bodyKeys(coll, x)
		if kerr != nil {
			writeError(w, kerr)
			return
		}
		keys = list
		if _, uerr := coll.updateLocked(keys, patch); uerr != nil {
			writeError(w, uerr)
			return
		}
		s.dispatchUpdateLocked(coll, keys)
	default:
		writeError(w, errInvalidPayload("Invalid payload. Expected an object or an array."))
		return
	}
	s.writeReadable(w, req, keys, false)
}

func (s restAPI) compileBodyQuery(coll *collection, q map[string]any) (*compiledQuery, *dxError) {
	params, err := parseQuery(q)
	if err != nil {
		return nil, err
	}
	return compileQuery(coll, params)
}

func (s restAPI) restDeleteOne(w http.ResponseWriter, r *http.Request, req restItemsCall) {
	// The key comes from the URL path: the delete event carries it as a
	// string, even for an integer key (R8).
	keys := []any{r.PathValue("id")}
	req.coll.deleteLocked(keys)
	s.dispatchDeleteLocked(req.coll, keys)
	w.WriteHeader(http.StatusNoContent)
}

func (s restAPI) restDeleteMany(w http.ResponseWriter, r *http.Request, req restItemsCall) {
	var keys []any
	switch x := req.body.(type) {
	case []any:
		keys = x
	case map[string]any:
		list, kerr := s.bodyKeys(req.coll, x)
		if kerr != nil {
			writeError(w, kerr)
			return
		}
		keys = list
	default:
		writeError(w, errInvalidPayload("Invalid payload. Expected an array of keys."))
		return
	}
	// Keys from a JSON body keep their JSON type in the event (R9).
	req.coll.deleteLocked(keys)
	s.dispatchDeleteLocked(req.coll, keys)
	w.WriteHeader(http.StatusNoContent)
}

// bodyKeys returns the keys a batch PATCH or DELETE body names, by "keys"
// (an array) or by "query" (an object, read like a REST query).
func (s restAPI) bodyKeys(coll *collection, x map[string]any) ([]any, *dxError) {
	switch {
	case x["keys"] != nil:
		list, ok := x["keys"].([]any)
		if !ok {
			return nil, errInvalidPayload(`Invalid payload. "keys" has to be an array.`)
		}
		return list, nil
	case x["query"] != nil:
		qm, ok := x["query"].(map[string]any)
		if !ok {
			return nil, errInvalidPayload(`Invalid payload. "query" has to be an object.`)
		}
		bq, qerr := s.compileBodyQuery(coll, qm)
		if qerr != nil {
			return nil, qerr
		}
		return rowKeys(coll.readByQuery(bq, s.opts.DefaultLimit)), nil
	}
	return nil, errInvalidPayload(`Invalid payload. "keys" or "query" is required.`)
}
