package directustest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
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

// identityFromAccessTokenLocked resolves a static token or a JWT.
func (s *Server) identityFromAccessTokenLocked(tok string, now time.Time) (identity, *dxError) {
	if u, ok := s.usersByToken[tok]; ok {
		return identity{user: u}, nil
	}
	if !looksLikeJWT(tok) {
		return identity{}, errInvalidCredentials()
	}
	claims, err := verifyJWT(s.jwtSecret, tok, now)
	if err != nil {
		if errors.Is(err, jwtExpired) {
			return identity{}, errTokenExpired()
		}
		return identity{}, errInvalidCredentials()
	}
	u, ok := s.usersByID[claims.ID]
	if !ok {
		return identity{}, errInvalidCredentials()
	}
	return identity{user: u, expires: time.Unix(claims.Exp, 0)}, nil
}

// issueLocked creates a new JWT and refresh token for u.
func (s *Server) issueLocked(u *user, now time.Time) authResult {
	tok, exp := signJWT(s.jwtSecret, u, now, s.opts.AccessTokenTTL)
	rt := newRefreshToken()
	s.refresh[rt] = refreshEntry{userID: u.id, expires: now.Add(refreshTokenTTL)}
	return authResult{ident: identity{user: u, expires: exp}, accessToken: tok, refreshToken: rt}
}

// loginLocked is the email/password login of the default provider.
func (s *Server) loginLocked(email, password string, now time.Time) (authResult, *dxError) {
	u, ok := s.usersByEmail[strings.ToLower(email)]
	if !ok || u.password == "" || subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) != 1 {
		return authResult{}, errInvalidCredentials()
	}
	return s.issueLocked(u, now), nil
}

// refreshLocked rotates a refresh token: the old one stops working.
func (s *Server) refreshLocked(rt string, now time.Time) (authResult, *dxError) {
	e, ok := s.refresh[rt]
	if !ok {
		return authResult{}, errInvalidCredentials()
	}
	delete(s.refresh, rt)
	if now.After(e.expires) {
		return authResult{}, errInvalidCredentials()
	}
	u, ok := s.usersByID[e.userID]
	if !ok {
		return authResult{}, errInvalidCredentials()
	}
	return s.issueLocked(u, now), nil
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

// authenticateLocked runs an auth message's credentials.
func (s *Server) authenticateLocked(c authCreds, now time.Time) (authResult, *dxError) {
	switch c.form {
	case formLogin:
		return s.loginLocked(c.email, c.password, now)
	case formAccessToken:
		id, err := s.identityFromAccessTokenLocked(c.accessToken, now)
		if err != nil {
			return authResult{}, err
		}
		return authResult{ident: id}, nil
	case formRefresh:
		return s.refreshLocked(c.refreshToken, now)
	}
	return authResult{}, errInvalidCredentials()
}

// IssueToken returns a JWT access token for the user with that e-mail
// address, valid for ttl (with the one-second resolution of JWTs; ttl <= 0
// gives an already expired token). Use it to test JWT expiry without a
// login round trip.
func (s *Server) IssueToken(email string, ttl time.Duration) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.usersByEmail[strings.ToLower(email)]
	if !ok {
		return "", fmt.Errorf("directustest: no user %q", email)
	}
	tok, _ := signJWT(s.jwtSecret, u, time.Now(), ttl)
	return tok, nil
}

func newRefreshToken() string {
	var b [48]byte
	_, _ = rand.Read(b[:])
	return b64.EncodeToString(b[:])
}

// handleAuthLocked handles an auth frame on a connection that is past the
// handshake (re-authentication, allowed in every mode).
func (s *Server) handleReauthLocked(c *wsConn, m *inMsg) {
	// Any auth frame ends the wait that follows TOKEN_EXPIRED.
	c.authTimer.stop()
	c.authTimer = nil
	res, err := s.authenticateLocked(parseAuthCreds(m.raw), time.Now())
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
	res, err := s.authenticateLocked(parseAuthCreds(m.raw), time.Now())
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
