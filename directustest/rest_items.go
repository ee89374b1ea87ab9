package directustest

import (
	"net/http"
	"strings"
)

// The /items routes: list, read, create, update and delete, each under
// Server.mu so that the write and its events are one step.

// restRequestLocked prepares an /items request with restPrepareLocked and
// writes the error response if it fails, or else if bodyErr (the request
// body's, read before the lock) is set: the request's errors come first, as
// on Directus. It reports whether the handler goes on.
func (s restAPI) restRequestLocked(w http.ResponseWriter, r *http.Request, action permAction, bodyErr *dxError) (*user, *collection, *compiledQuery, bool) {
	u, coll, cq, err := s.restPrepareLocked(r, action)
	if err == nil {
		err = bodyErr
	}
	if err != nil {
		writeError(w, err)
		return nil, nil, nil, false
	}
	return u, coll, cq, true
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

func (s restAPI) restList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, coll, cq, ok := s.restRequestLocked(w, r, permRead, nil)
	if !ok {
		return
	}
	rows := coll.readByQuery(cq, s.opts.DefaultLimit)
	meta, _ := cq.appendMeta(nil, coll)
	writeData(w, cq.appendRows(nil, coll, rows), meta)
}

func (s restAPI) restGetOne(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, coll, cq, ok := s.restRequestLocked(w, r, permRead, nil)
	if !ok {
		return
	}
	row, ok := coll.readOne(r.PathValue("id"), cq)
	if !ok {
		writeError(w, errForbidden())
		return
	}
	writeData(w, cq.appendRow(nil, coll, row), nil)
}

func (s restAPI) restCreate(w http.ResponseWriter, r *http.Request) {
	body, _, berr := readBody(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	u, coll, cq, ok := s.restRequestLocked(w, r, permCreate, berr)
	if !ok {
		return
	}
	var items []map[string]any
	single := false
	switch x := body.(type) {
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
	rows, cerr := coll.createLocked(items)
	if cerr != nil {
		writeError(w, cerr)
		return
	}
	s.dispatchCreatesLocked(coll, rows)
	if !s.allowedLocked(u, coll.name, permRead) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if single {
		row, ok := coll.readOne(rows[0].key, cq)
		if !ok {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeData(w, cq.appendRow(nil, coll, row), nil)
		return
	}
	writeData(w, cq.appendRows(nil, coll, coll.readMany(rowKeys(rows), cq)), nil)
}

func (s restAPI) restUpdateOne(w http.ResponseWriter, r *http.Request) {
	body, _, berr := readBody(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	u, coll, cq, ok := s.restRequestLocked(w, r, permUpdate, berr)
	if !ok {
		return
	}
	patch, ok := body.(map[string]any)
	if !ok {
		writeError(w, errInvalidPayload("Invalid payload. Expected an object."))
		return
	}
	// The key comes from the URL path, so the event carries it as a string
	// (which is also what lets single-item subscriptions see it, R3).
	id := r.PathValue("id")
	if _, uerr := coll.updateLocked([]any{id}, patch); uerr != nil {
		writeError(w, uerr)
		return
	}
	s.dispatchUpdateLocked(coll, []any{id})
	row, found := coll.readOne(id, cq)
	if !found || !s.allowedLocked(u, coll.name, permRead) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeData(w, cq.appendRow(nil, coll, row), nil)
}

func (s restAPI) restUpdateMany(w http.ResponseWriter, r *http.Request) {
	body, _, berr := readBody(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	u, coll, cq, ok := s.restRequestLocked(w, r, permUpdate, berr)
	if !ok {
		return
	}
	var keys []any
	switch x := body.(type) {
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
	if !s.allowedLocked(u, coll.name, permRead) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeData(w, cq.appendRows(nil, coll, coll.readMany(keys, cq)), nil)
}

func (s restAPI) compileBodyQuery(coll *collection, q map[string]any) (*compiledQuery, *dxError) {
	params, err := parseQuery(q)
	if err != nil {
		return nil, err
	}
	return compileQuery(coll, params)
}

func (s restAPI) restDeleteOne(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, coll, _, ok := s.restRequestLocked(w, r, permDelete, nil)
	if !ok {
		return
	}
	// The key comes from the URL path: the delete event carries it as a
	// string, even for an integer key (R8).
	keys := []any{r.PathValue("id")}
	coll.deleteLocked(keys)
	s.dispatchDeleteLocked(coll, keys)
	w.WriteHeader(http.StatusNoContent)
}

func (s restAPI) restDeleteMany(w http.ResponseWriter, r *http.Request) {
	body, _, berr := readBody(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, coll, _, ok := s.restRequestLocked(w, r, permDelete, berr)
	if !ok {
		return
	}
	var keys []any
	switch x := body.(type) {
	case []any:
		keys = x
	case map[string]any:
		list, kerr := s.bodyKeys(coll, x)
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
	coll.deleteLocked(keys)
	s.dispatchDeleteLocked(coll, keys)
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
