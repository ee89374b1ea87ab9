package ops

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

//go:embed status.html
var statusPage []byte

// StatusOptions tune the status page; nil means the defaults.
type StatusOptions struct {
	// Interval is how often the page's event stream looks for a change
	// (0 means one second). A snapshot is sent only when it changed, and a
	// keep-alive comment every 15 s otherwise.
	Interval time.Duration
}

// StatusHandler serves a live status page of the library, to mount like
// net/http/pprof under a prefix ending in a slash:
//
//	mux.Handle("/debug/directus/", http.StripPrefix("/debug/directus", src.StatusHandler(nil)))
//
// Without StripPrefix it works as well: it answers by the last element of
// the path. PREFIX/ is an HTML page (no external script, style or font)
// that shows the connection, every subscription (collection, uid,
// persistent or scoped, state, events, resyncs, overflows, last error and
// last event), every registered replica (rows, synced, failure, last
// reconcile and what it changed) and a chart of the event rate, updated
// live from PREFIX/events (Server-Sent Events of Snapshots as JSON);
// PREFIX/status.json is one Snapshot.
//
// The page shows no token or password, and queries are redacted (see
// Redact), but it does show collections, uids, counts and error messages:
// mount it behind the service's own authentication, as one would pprof.
func (s *Source) StatusHandler(opts *StatusOptions) http.Handler {
	interval := time.Second
	if opts != nil && opts.Interval > 0 {
		interval = opts.Interval
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case strings.HasSuffix(r.URL.Path, "/events"):
			s.serveEvents(w, r, interval)
		case strings.HasSuffix(r.URL.Path, "/status.json"):
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(s.Snapshot())
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
			_, _ = w.Write(statusPage)
		}
	})
}

// serveEvents streams a Snapshot whenever it changed, until the client
// goes.
func (s *Source) serveEvents(w http.ResponseWriter, r *http.Request, interval time.Duration) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last []byte
	lastWrite := time.Time{}
	for {
		snap := s.Snapshot()
		b, err := json.Marshal(snap)
		if err != nil {
			return
		}
		// Compare without the time, which always changes.
		snap.Time = time.Time{}
		key, _ := json.Marshal(snap)
		var out []byte
		switch {
		case !bytes.Equal(key, last):
			last = key
			out = append(append([]byte("data: "), b...), '\n', '\n')
		case time.Since(lastWrite) >= 15*time.Second:
			out = []byte(": keep-alive\n\n")
		}
		if out != nil {
			if _, err := w.Write(out); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			lastWrite = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
