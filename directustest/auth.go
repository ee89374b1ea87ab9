package directustest

import (
	"encoding/json"
	"strings"
	"time"
)

// identity is who a connection or request acts as.
type identity struct {
	user    *user     // nil: the Public role
	expires time.Time // zero: never (static token, or Public)
}

// refreshEntry is a stored refresh token.
type refreshEntry struct {
	userID  string
	expires time.Time
}

// authResult is the outcome of a successful authentication.
type authResult struct {
	ident        identity
	accessToken  string // set for the login and refresh forms
	refreshToken string // set for the login and refresh forms
}

// authCreds are the credentials of an auth message, one of the three forms
// of Directus' schema (tried in its order: email/password, access_token,
// refresh_token).
type authCreds struct {
	email, password, accessToken, refreshToken string
	form                                       int
}

const (
	formNone = iota
	formLogin
	formAccessToken
	formRefresh
)

func parseAuthCreds(raw map[string]json.RawMessage) authCreds {
	str := func(k string) (string, bool) {
		v, ok := raw[k]
		if !ok {
			return "", false
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", false
		}
		return s, true
	}
	email, okE := str("email")
	password, okP := str("password")
	if okE && okP && validEmail(email) {
		return authCreds{email: email, password: password, form: formLogin}
	}
	if tok, ok := str("access_token"); ok {
		return authCreds{accessToken: tok, form: formAccessToken}
	}
	if rt, ok := str("refresh_token"); ok {
		return authCreds{refreshToken: rt, form: formRefresh}
	}
	return authCreds{}
}

// validEmail is a loose version of zod's e-mail check.
func validEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	return strings.Contains(s[at+1:], ".")
}

// handleAuthLocked handles an auth frame on a connection that is past the
// handshake (re-authentication, allowed in every mode).
func (s *Server) handleReauthLocked(c *wsConn, m *inMsg) {
	// Any auth frame ends the wait that follows TOKEN_EXPIRED.
	c.authTimer.stop()
	c.authTimer = nil
	res, err := s.accounts.authenticate(parseAuthCreds(m.raw), time.Now())
	if err != nil {
		s.logf("auth failed", "conn", c.id)
		c.sendLocked(frameError("auth", codeAuthFailed, msgAuthFailed, m.uid))
		if s.opts.AuthMode == AuthPublic {
			c.setIdentityLocked(identity{})
			return
		}
		c.closeLocked()
		return
	}
	c.setIdentityLocked(res.ident)
	c.sendLocked(frameAuthOK(m.uid, res.refreshToken))
}

// handleHandshakeLocked handles the first frame in handshake mode.
func (s *Server) handleHandshakeLocked(c *wsConn, m *inMsg, perr *dxError) {
	c.authTimer.stop()
	c.authTimer = nil
	if perr != nil || m.typ != "auth" {
		s.failHandshakeLocked(c)
		return
	}
	res, err := s.accounts.authenticate(parseAuthCreds(m.raw), time.Now())
	if err != nil {
		s.failHandshakeLocked(c)
		return
	}
	c.state = stateOpen
	c.setIdentityLocked(res.ident)
	c.sendLocked(frameAuthOK(m.uid, res.refreshToken))
}

func (s *Server) failHandshakeLocked(c *wsConn) {
	s.logf("handshake failed", "conn", c.id)
	c.sendLocked(frameError("auth", codeAuthFailed, msgHandshakeFailed, uidVal{}))
	c.closeLocked()
}

// setIdentityLocked replaces the connection's identity and arms the expiry
// timer for tokens that expire.
func (c *wsConn) setIdentityLocked(id identity) {
	c.ident = id
	c.expiryTimer.stop()
	c.expiryTimer = nil
	if id.user == nil || id.expires.IsZero() {
		return
	}
	c.expiryTimer = c.s.afterFuncLocked(time.Until(id.expires), func(t *stimer) {
		c.s.mu.Lock()
		defer c.s.mu.Unlock()
		if c.expiryTimer != t || c.s.closed {
			return
		}
		c.expiryTimer = nil
		c.expireLocked()
	})
}

// expireLocked is what Directus does when a connection's token expires:
// drop to the Public role, send TOKEN_EXPIRED, and wait AuthTimeout for an
// auth frame before AUTH_TIMEOUT (and a close, except in public mode).
func (c *wsConn) expireLocked() {
	if c.state != stateOpen {
		return
	}
	s := c.s
	c.expiryTimer.stop()
	c.expiryTimer = nil
	c.ident = identity{}
	c.sendLocked(frameError("auth", codeTokenExpired, msgTokenExpired, uidVal{}))
	c.authTimer.stop()
	c.authTimer = s.afterFuncLocked(s.opts.AuthTimeout, func(t *stimer) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c.authTimer != t || s.closed || c.state != stateOpen {
			return
		}
		c.authTimer = nil
		c.sendLocked(frameError("auth", codeAuthTimeout, msgAuthTimeout, uidVal{}))
		if s.opts.AuthMode != AuthPublic {
			c.closeLocked()
		}
	})
}

// ExpireTokens makes every connection whose identity came from an expiring
// token (a JWT, an email/password or a refresh_token auth) expire now, with
// the real follow-up: TOKEN_EXPIRED, the Public role, and AUTH_TIMEOUT after
// Options.AuthTimeout unless the client re-authenticates. Connections using
// static tokens are not affected.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.connsInOrderLocked() {
		if c.state == stateOpen && c.ident.user != nil && !c.ident.expires.IsZero() {
			c.expireLocked()
		}
	}
}

// IssueToken returns a JWT access token for the user with that e-mail
// address, valid for ttl (with the one-second resolution of JWTs; ttl <= 0
// gives an already expired token). Use it to test JWT expiry without a
// login round trip.
func (s *Server) IssueToken(email string, ttl time.Duration) (string, error) {
	return s.accounts.issueToken(email, ttl)
}
