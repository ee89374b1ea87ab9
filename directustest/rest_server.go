package directustest

import (
	"io"
	"net/http"
)

// The /server routes: ping, info and health.

func (s restAPI) restPing(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, "pong")
}

func (s restAPI) restInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.restIdentity(r); err != nil {
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
func (s restAPI) restHealth(w http.ResponseWriter, r *http.Request) {
	ident, err := s.restIdentity(r)
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
