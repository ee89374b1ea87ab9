package directustest

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// handleUpgrade performs the checks Directus makes before accepting a
// WebSocket (docs/PROTOCOL.md §3.1, §10) and then runs the connection.
func (s *Server) handleUpgrade(w http.ResponseWriter, r *http.Request, epoch uint64) {
	if origin := r.Header.Get("Origin"); origin != "" && !s.originAllowed(origin, r) {
		s.logf("upgrade refused: foreign origin")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	raw, _ := r.Context().Value(netConnKey).(net.Conn)
	if raw == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	tok := r.URL.Query().Get("access_token")

	s.mu.Lock()
	if s.opts.ConnLimit > 0 && len(s.conns)+s.pending >= s.opts.ConnLimit {
		s.mu.Unlock()
		s.logf("upgrade refused: connection limit")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	var ident identity
	authed := false
	if tok != "" {
		id, err := s.accounts.identityFromAccessToken(tok, time.Now())
		if err != nil {
			s.mu.Unlock()
			s.logf("upgrade refused: bad access_token")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ident, authed = id, true
	} else if s.opts.AuthMode == AuthStrict {
		s.mu.Unlock()
		s.logf("upgrade refused: strict mode without token")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	s.pending++
	s.mu.Unlock()

	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // the Origin check is done above, Directus style
		CompressionMode:    websocket.CompressionDisabled,
		// Directus creates its ws server with autoPong:false: RFC 6455
		// PING control frames are never answered (M6).
		OnPingReceived: func(context.Context, []byte) bool { return false },
	})
	s.mu.Lock()
	s.pending--
	if err != nil {
		s.mu.Unlock()
		return
	}
	if s.closed || s.epoch != epoch {
		s.mu.Unlock()
		closeRaw(raw)
		_ = ws.CloseNow()
		return
	}
	c := newWSConn(s, ws, raw)
	s.nextConnID++
	c.id = s.nextConnID
	switch {
	case authed:
		c.state = stateOpen
		c.setIdentityLocked(ident)
	case s.opts.AuthMode == AuthPublic:
		c.state = stateOpen
	default:
		c.state = stateHandshake
		c.authTimer = s.afterFuncLocked(s.opts.AuthTimeout, func(t *stimer) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if c.authTimer != t || s.closed || c.state != stateHandshake {
				return
			}
			c.authTimer = nil
			s.failHandshakeLocked(c)
		})
	}
	s.conns[c.id] = c
	s.connsChangedLocked()
	s.hbEnsureLocked()
	s.handlers.Add(1)
	go c.writeLoop()
	s.mu.Unlock()
	s.logf("connection open", "conn", c.id, "authenticated", authed)

	c.readLoop()
}

// originAllowed mirrors Directus' check: the Origin must be the server's own
// origin (its host, or its public URL).
func (s *Server) originAllowed(origin string, r *http.Request) bool {
	if strings.EqualFold(strings.TrimRight(origin, "/"), s.URL()) {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// closeRaw closes the TCP connection under a (possibly TLS) net.Conn
// without any TLS or WebSocket goodbye, so the peer sees an abnormal close.
func closeRaw(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.Close()
}

func splitComma(v string) []string {
	parts := strings.Split(v, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

func equalFold(a, b string) bool { return strings.EqualFold(a, b) }
