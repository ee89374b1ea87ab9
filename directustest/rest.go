package directustest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The REST subset: enough of the Directus API to drive the server with
// curl or net/http. Writes produce exactly the events of the WebSocket and
// Go writes. Responses use Directus' envelopes: {"data":...} and
// {"errors":[{"message":...,"extensions":{"code":...}}]}.

const maxBody = 64 << 20

// restAPI is the REST part of the server: the /items, /server and /auth
// routes. It holds no state of its own; it reads and writes the Server's
// collections under Server.mu (so a write and its events keep one order)
// and asks the accounts for identities and permissions. A new HTTP surface
// (another API next to REST) is another such type, with its routes in its
// own files.
type restAPI struct{ *Server }

// newRESTHandler returns the routes of the REST subset.
func newRESTHandler(srv *Server) http.Handler {
	s := restAPI{srv}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{collection}", buffered(s.items(permRead, false, s.restList)))
	mux.HandleFunc("GET /items/{collection}/{id}", buffered(s.items(permRead, false, s.restGetOne)))
	mux.HandleFunc("POST /items/{collection}", buffered(s.items(permCreate, true, s.restCreate)))
	mux.HandleFunc("PATCH /items/{collection}", buffered(s.items(permUpdate, true, s.restUpdateMany)))
	mux.HandleFunc("PATCH /items/{collection}/{id}", buffered(s.items(permUpdate, true, s.restUpdateOne)))
	mux.HandleFunc("DELETE /items/{collection}", buffered(s.items(permDelete, true, s.restDeleteMany)))
	mux.HandleFunc("DELETE /items/{collection}/{id}", buffered(s.items(permDelete, false, s.restDeleteOne)))
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

// restIdentity authenticates a request by "Authorization: Bearer" or
// ?access_token=; without a token the request is Public.
func (s restAPI) restIdentity(r *http.Request) (identity, *dxError) {
	tok := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		tok = strings.TrimSpace(h[7:])
	} else if q := r.URL.Query().Get("access_token"); q != "" {
		tok = q
	}
	if tok == "" {
		return identity{}, nil
	}
	return s.accounts.identityFromAccessToken(tok, time.Now())
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
