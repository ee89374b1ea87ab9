package directustest

import (
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The REST subset: enough of the Directus API to drive the server with
// curl or net/http. Writes produce exactly the events of the WebSocket and
// Go writes. Responses use Directus' envelopes: {"data":...} and
// {"errors":[{"message":...,"extensions":{"code":...}}]}.

const maxBody = 64 << 20

func (s *Server) restHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{collection}", buffered(s.restList))
	mux.HandleFunc("GET /items/{collection}/{id}", buffered(s.restGetOne))
	mux.HandleFunc("POST /items/{collection}", buffered(s.restCreate))
	mux.HandleFunc("PATCH /items/{collection}", buffered(s.restUpdateMany))
	mux.HandleFunc("PATCH /items/{collection}/{id}", buffered(s.restUpdateOne))
	mux.HandleFunc("DELETE /items/{collection}", buffered(s.restDeleteMany))
	mux.HandleFunc("DELETE /items/{collection}/{id}", buffered(s.restDeleteOne))
	mux.HandleFunc("GET /server/ping", s.restPing)
	mux.HandleFunc("GET /server/info", buffered(s.restInfo))
	mux.HandleFunc("GET /server/health", buffered(s.restHealth))
	mux.HandleFunc("POST /auth/login", buffered(s.restLogin))
	mux.HandleFunc("POST /auth/refresh", buffered(s.restRefresh))
	mux.HandleFunc("POST /auth/logout", buffered(s.restLogout))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, []byte(`{"errors":[{"message":`+
			string(appendJSONString(nil, "Route "+r.URL.Path+" doesn't exist."))+
			`,"extensions":{"path":`+string(appendJSONString(nil, r.URL.Path))+`,"code":"`+codeRouteNotFound+`"}}]}`))
	})
	return mux
}

// buffered runs h against an in-memory response and sends it afterwards:
// handlers build their response under Server.mu, and a slow HTTP client
// must not hold that lock while the response is written.
func buffered(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b := &bufferedResponse{header: http.Header{}}
		h(b, r)
		for k, v := range b.header {
			w.Header()[k] = v
		}
		if b.status == 0 {
			b.status = http.StatusOK
		}
		w.WriteHeader(b.status)
		_, _ = w.Write(b.body)
	}
}

type bufferedResponse struct {
	header http.Header
	status int
	body   []byte
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.body = append(b.body, p...)
	return len(p), nil
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, err *dxError) {
	b := []byte(`{"errors":[{"message":`)
	b = appendJSONString(b, err.message)
	b = append(b, `,"extensions":{"code":`...)
	b = appendJSONString(b, err.code)
	b = append(b, `}}]}`...)
	status := err.status
	if status == 0 {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, b)
}

func writeData(w http.ResponseWriter, data, meta []byte) {
	b := append([]byte(`{"data":`), data...)
	if meta != nil {
		b = append(b, `,"meta":`...)
		b = append(b, meta...)
	}
	writeJSON(w, http.StatusOK, append(b, '}'))
}

// restIdentityLocked authenticates a request by "Authorization: Bearer" or
// ?access_token=; without a token the request is Public.
func (s *Server) restIdentityLocked(r *http.Request) (identity, *dxError) {
	tok := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		tok = strings.TrimSpace(h[7:])
	} else if q := r.URL.Query().Get("access_token"); q != "" {
		tok = q
	}
	if tok == "" {
		return identity{}, nil
	}
	return s.identityFromAccessTokenLocked(tok, time.Now())
}

func readBody(r *http.Request) (any, bool, *dxError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		return nil, false, errInvalidPayload("Invalid payload. Unable to read the request body.")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, false, nil
	}
	var v any
	if err := decodeJSON(body, &v); err != nil {
		return nil, false, errInvalidPayload("Invalid payload. Unexpected token in JSON.")
	}
	return v, true, nil
}

// restQuery turns the query string into a Directus query object: fields,
// sort, limit, offset, page, meta, and filter as JSON or in bracket syntax
// (filter[status][_eq]=published).
func restQuery(values url.Values) map[string]any {
	q := map[string]any{}
	list := func(name string) []any {
		var out []any
		for _, k := range []string{name, name + "[]"} {
			for _, v := range values[k] {
				out = append(out, v)
			}
		}
		return out
	}
	if f := list("fields"); f != nil {
		q["fields"] = f
	}
	if f := list("sort"); f != nil {
		q["sort"] = f
	}
	for _, k := range []string{"limit", "offset", "page", "meta", "filter"} {
		if v := values.Get(k); v != "" {
			q[k] = v
		}
	}
	var bracket map[string]any
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, "filter[") {
			continue
		}
		path, ok := bracketPath(k[len("filter"):])
		if !ok || len(path) == 0 {
			continue
		}
		if bracket == nil {
			bracket = map[string]any{}
		}
		setPath(bracket, path, values.Get(k))
	}
	if bracket != nil {
		q["filter"] = arraysFromIndexes(bracket)
	}
	return q
}

func bracketPath(s string) ([]string, bool) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, false
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	return out, true
}

func setPath(m map[string]any, path []string, v string) {
	for i, p := range path {
		if i == len(path)-1 {
			m[p] = v
			return
		}
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
}

// arraysFromIndexes converts maps whose keys are all indexes (0, 1, ...)
// into arrays, as the qs parser does.
func arraysFromIndexes(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	allIdx := len(m) > 0
	for k, e := range m {
		m[k] = arraysFromIndexes(e)
		if _, err := strconv.Atoi(k); err != nil {
			allIdx = false
		}
	}
	if !allIdx {
		return m
	}
	idx := make([]int, 0, len(m))
	for k := range m {
		n, _ := strconv.Atoi(k)
		idx = append(idx, n)
	}
	sort.Ints(idx)
	out := make([]any, 0, len(idx))
	for _, n := range idx {
		out = append(out, m[strconv.Itoa(n)])
	}
	return out
}

// restRequestLocked prepares an /items request with restPrepareLocked and
// writes the error response if it fails, or else if bodyErr (the request
// body's, read before the lock) is set: the request's errors come first, as
// on Directus. It reports whether the handler goes on.
func (s *Server) restRequestLocked(w http.ResponseWriter, r *http.Request, action permAction, bodyErr *dxError) (*user, *collection, *compiledQuery, bool) {
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
func (s *Server) restPrepareLocked(r *http.Request, action permAction) (*user, *collection, *compiledQuery, *dxError) {
	ident, err := s.restIdentityLocked(r)
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

func (s *Server) restList(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) restGetOne(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) restCreate(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) restUpdateOne(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) restUpdateMany(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) compileBodyQuery(coll *collection, q map[string]any) (*compiledQuery, *dxError) {
	params, err := parseQuery(q)
	if err != nil {
		return nil, err
	}
	return compileQuery(coll, params)
}

func (s *Server) restDeleteOne(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) restDeleteMany(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) restPing(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, "pong")
}

func (s *Server) restInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.restIdentityLocked(r); err != nil {
		writeError(w, err)
		return
	}
	b := []byte(`{"data":{"project":{"project_name":"directustest"},"version":"12.4.1","websocket":{"rest":{"authentication":`)
	b = appendJSONString(b, string(s.opts.AuthMode))
	b = append(b, `,"path":`...)
	b = appendJSONString(b, s.opts.Path)
	b = append(b, `},"graphql":false,"heartbeat":`...)
	b = appendValue(b, s.heartbeatInfoLocked())
	b = append(b, `}}}`...)
	writeJSON(w, http.StatusOK, b)
}

// restHealth answers {"status":"ok"} to authenticated callers; like Directus
// 12 it refuses anonymous ones.
func (s *Server) restHealth(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ident, err := s.restIdentityLocked(r)
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	if ident.user == nil {
		writeError(w, errForbidden())
		return
	}
	w.Header().Set("Content-Type", "application/health+json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"status":"ok"}`)
}

func (s *Server) writeTokens(w http.ResponseWriter, res authResult) {
	b := []byte(`{"data":{"expires":`)
	b = strconv.AppendInt(b, s.opts.AccessTokenTTL.Milliseconds(), 10)
	b = append(b, `,"refresh_token":`...)
	b = appendJSONString(b, res.refreshToken)
	b = append(b, `,"access_token":`...)
	b = appendJSONString(b, res.accessToken)
	writeJSON(w, http.StatusOK, append(b, `}}`...))
}

func bodyString(body any, key string) (string, bool) {
	m, ok := body.(map[string]any)
	if !ok {
		return "", false
	}
	v, ok := m[key].(string)
	return v, ok
}

func (s *Server) restLogin(w http.ResponseWriter, r *http.Request) {
	body, _, berr := readBody(r)
	if berr != nil {
		writeError(w, berr)
		return
	}
	email, okE := bodyString(body, "email")
	password, okP := bodyString(body, "password")
	if !okE || !okP {
		writeError(w, errInvalidPayload(`"email" and "password" are required.`))
		return
	}
	s.mu.Lock()
	res, err := s.loginLocked(email, password, time.Now())
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	s.writeTokens(w, res)
}

// bodyRefreshToken reads the refresh token of a /auth/refresh or
// /auth/logout body, writing Directus's error when there is none.
func bodyRefreshToken(w http.ResponseWriter, r *http.Request) (string, bool) {
	body, _, berr := readBody(r)
	if berr != nil {
		writeError(w, berr)
		return "", false
	}
	rt, ok := bodyString(body, "refresh_token")
	if !ok || rt == "" {
		writeError(w, errInvalidPayload("The refresh token is required in either the payload or cookie."))
		return "", false
	}
	return rt, true
}

func (s *Server) restRefresh(w http.ResponseWriter, r *http.Request) {
	rt, ok := bodyRefreshToken(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	res, err := s.refreshLocked(rt, time.Now())
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	s.writeTokens(w, res)
}

func (s *Server) restLogout(w http.ResponseWriter, r *http.Request) {
	rt, ok := bodyRefreshToken(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	_, found := s.refresh[rt]
	delete(s.refresh, rt)
	s.mu.Unlock()
	if !found {
		writeError(w, errInvalidCredentials())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// bodyKeys returns the keys a batch PATCH or DELETE body names, by "keys"
// (an array) or by "query" (an object, read like a REST query).
func (s *Server) bodyKeys(coll *collection, x map[string]any) ([]any, *dxError) {
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
