package conn

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/e41af43e/directus-realtime/internal/jwtexp"
	"github.com/e41af43e/directus-realtime/protocol"
)

// AuthMode is the server's WEBSOCKETS_REST_AUTH setting, which decides when
// the client authenticates.
type AuthMode string

const (
	// AuthPublic: the connection starts as the Public role; credentials, if
	// any, are sent in an auth frame right after the upgrade.
	AuthPublic AuthMode = "public"
	// AuthHandshake: the first frame must be auth (the Directus default).
	AuthHandshake AuthMode = "handshake"
	// AuthStrict: the access token goes in the upgrade URL
	// (?access_token=…); the server answers 401 without it.
	AuthStrict AuthMode = "strict"
)

// Auth holds the authentication mode and credentials. Its String, GoString
// and LogValue never show a credential.
//
// For each (re)authentication the first usable credential is used, in this
// order: TokenSource, Token, the current refresh token, Email and Password.
// Refresh tokens rotate: the one Directus returns with each auth reply
// replaces the previous one (and is passed to Config.OnRefreshToken). If a
// refresh token is rejected and Email/Password are set, they are used next.
type Auth struct {
	// Mode defaults to AuthHandshake when a credential is set and to
	// AuthPublic otherwise.
	Mode AuthMode

	// Token is a static user token (never expires) or a JWT access token.
	// When it is a JWT and TokenSource is set, the client re-authenticates
	// with a fresh token before the JWT's exp.
	Token string

	// Email and Password log in over the WebSocket; the reply carries a
	// refresh token used for later re-authentication.
	Email    string
	Password string

	// RefreshToken authenticates with a refresh token.
	RefreshToken string

	// TokenSource, when set, is called for a fresh access token before each
	// authentication, including re-authentication after TOKEN_EXPIRED.
	TokenSource func(ctx context.Context) (string, error)
}

func (a Auth) mode() AuthMode {
	if a.Mode != "" {
		return a.Mode
	}
	if a.hasCredentials() {
		return AuthHandshake
	}
	return AuthPublic
}

func (a Auth) hasCredentials() bool {
	return a.Token != "" || a.TokenSource != nil || a.RefreshToken != "" || a.Email != ""
}

func (a Auth) validate() error {
	switch a.mode() {
	case AuthPublic:
	case AuthHandshake:
		if !a.hasCredentials() {
			return &protocol.ConfigError{Field: "Auth", Reason: "handshake mode needs a credential"}
		}
	case AuthStrict:
		if a.Token == "" && a.TokenSource == nil {
			return &protocol.ConfigError{Field: "Auth", Reason: "strict mode needs Token or TokenSource (the token goes in the upgrade URL)"}
		}
	default:
		return &protocol.ConfigError{Field: "Auth.Mode", Reason: "must be public, handshake or strict"}
	}
	if (a.Email == "") != (a.Password == "") {
		return &protocol.ConfigError{Field: "Auth", Reason: "Email and Password go together"}
	}
	return nil
}

func (a Auth) describe() string {
	var forms []string
	if a.TokenSource != nil {
		forms = append(forms, "token source")
	}
	if a.Token != "" {
		forms = append(forms, "token")
	}
	if a.RefreshToken != "" {
		forms = append(forms, "refresh token")
	}
	if a.Email != "" {
		forms = append(forms, "email/password")
	}
	if len(forms) == 0 {
		forms = append(forms, "none")
	}
	return "mode " + string(a.mode()) + ", " + strings.Join(forms, "+") + " (redacted)"
}

// String never shows a credential.
func (a Auth) String() string { return "Auth{" + a.describe() + "}" }

// GoString never shows a credential.
func (a Auth) GoString() string { return "conn.Auth{" + a.describe() + "}" }

// LogValue never shows a credential.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.describe()) }

// credentials is the Conn's mutable auth state: the rotating refresh token
// and what was learned about token lifetimes.
type credentials struct {
	auth Auth

	mu           sync.Mutex
	refreshToken string
	// skipRefresh is set after the refresh token was rejected, so the next
	// attempt falls back to email/password.
	skipRefresh bool
	// learnedTTL is the lifetime of server-held JWTs (email/password and
	// refresh auth), measured from auth to TOKEN_EXPIRED.
	learnedTTL time.Duration
}

func newCredentials(a Auth) *credentials {
	return &credentials{auth: a, refreshToken: a.RefreshToken}
}

// next returns the auth frame for the next authentication. ok is false when
// there is nothing to authenticate with.
func (c *credentials) next(ctx context.Context) (msg protocol.AuthMessage, jwtExp time.Time, ok bool, err error) {
	if c.auth.TokenSource != nil {
		tok, err := c.auth.TokenSource(ctx)
		if err != nil {
			return msg, jwtExp, false, err
		}
		return protocol.AuthMessage{AccessToken: tok}, jwtexp.Expiry(tok), true, nil
	}
	if c.auth.Token != "" {
		return protocol.AuthMessage{AccessToken: c.auth.Token}, jwtexp.Expiry(c.auth.Token), true, nil
	}
	c.mu.Lock()
	rt, skip := c.refreshToken, c.skipRefresh
	c.mu.Unlock()
	if rt != "" && !(skip && c.auth.Email != "") {
		return protocol.AuthMessage{RefreshToken: rt}, time.Time{}, true, nil
	}
	if c.auth.Email != "" {
		return protocol.AuthMessage{Email: c.auth.Email, Password: c.auth.Password}, time.Time{}, true, nil
	}
	return msg, jwtExp, false, nil
}

// upgradeToken returns the token for the upgrade URL in strict mode.
func (c *credentials) upgradeToken(ctx context.Context) (string, time.Time, error) {
	if c.auth.TokenSource != nil {
		tok, err := c.auth.TokenSource(ctx)
		return tok, jwtexp.Expiry(tok), err
	}
	return c.auth.Token, jwtexp.Expiry(c.auth.Token), nil
}

// accepted records the outcome of an auth frame. It returns the new refresh
// token, if the server rotated it.
func (c *credentials) accepted(sent protocol.AuthMessage, reply *protocol.Message) (rotated string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sent.RefreshToken != "" || sent.Email != "" {
		c.skipRefresh = false
	}
	if reply.RefreshToken != "" && reply.RefreshToken != c.refreshToken {
		c.refreshToken = reply.RefreshToken
		return reply.RefreshToken
	}
	return ""
}

// rejected records that the server refused the credential sent.
func (c *credentials) rejected(sent protocol.AuthMessage) {
	if sent.RefreshToken == "" {
		return
	}
	c.mu.Lock()
	c.skipRefresh = true
	c.mu.Unlock()
}

// canRefresh reports whether a re-authentication can produce a new identity
// lifetime: a token source, a refresh token or email/password.
func (c *credentials) canRefresh() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.auth.TokenSource != nil || c.refreshToken != "" || c.auth.Email != ""
}

// expiredForGood reports whether no authentication can succeed any more:
// the only credential is a JWT whose exp has passed, and nothing (token
// source, refresh token, email and password) can get another.
func (c *credentials) expiredForGood(now time.Time) bool {
	if c.canRefresh() || c.auth.Token == "" {
		return false
	}
	return jwtexp.Expired(c.auth.Token, now)
}

// minLearnedTTL is the shortest lifetime learnTTL believes. A TOKEN_EXPIRED
// sooner than that after the last auth is not a token running its course
// (the server expired it early, or a refresh had just reset the clock), and
// refreshing at half such a lifetime would re-authenticate every few
// milliseconds, for good.
const minLearnedTTL = 10 * time.Second

// learnTTL records the lifetime measured from auth to TOKEN_EXPIRED; one
// below minLearnedTTL is ignored and the previous one, if any, kept.
func (c *credentials) learnTTL(d time.Duration) {
	if d < minLearnedTTL {
		return
	}
	c.mu.Lock()
	c.learnedTTL = d
	c.mu.Unlock()
}

// refreshAt returns when to re-authenticate before the identity authenticated
// at authAt expires, or the zero time when unknown.
func (c *credentials) refreshAt(authAt, jwtExp time.Time) time.Time {
	if !c.canRefresh() {
		return time.Time{}
	}
	var exp time.Time
	if !jwtExp.IsZero() {
		exp = jwtExp
	} else {
		c.mu.Lock()
		ttl := c.learnedTTL
		c.mu.Unlock()
		if ttl <= 0 {
			return time.Time{}
		}
		exp = authAt.Add(ttl)
	}
	lifetime := exp.Sub(authAt)
	// Never sooner than halfway: a token that arrives nearly expired must
	// not make the client re-authenticate in a loop.
	return authAt.Add(max(lifetime-refreshMargin(lifetime), lifetime/2))
}

// refreshMargin is how long before expiry to re-authenticate: a fifth of the
// lifetime, at least one second (exp has one-second resolution) and at most
// a minute.
func refreshMargin(lifetime time.Duration) time.Duration {
	return min(max(lifetime/5, time.Second), time.Minute)
}
