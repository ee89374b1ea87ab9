package directustest

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"
)

// accounts is the server's identity part: users, their static tokens and
// permissions, the Public role's permissions, the JWT secret and the stored
// refresh tokens. It answers "who is this token" and "may this identity do
// that" and nothing else.
//
// Its mutex is a leaf lock: accounts never calls back into the Server, so a
// caller may hold Server.mu while calling it (lock order Server.mu, then
// accounts.mu, never the reverse).
type accounts struct {
	ttl time.Duration // lifetime of the access tokens it issues

	mu           sync.Mutex
	usersByEmail map[string]*user
	usersByID    map[string]*user
	usersByToken map[string]*user
	publicPerms  map[string]Permission
	refresh      map[string]refreshEntry
	jwtSecret    []byte
}

func newAccounts(accessTokenTTL time.Duration) *accounts {
	a := &accounts{
		ttl:          accessTokenTTL,
		usersByEmail: map[string]*user{},
		usersByID:    map[string]*user{},
		usersByToken: map[string]*user{},
		publicPerms:  map[string]Permission{},
		refresh:      map[string]refreshEntry{},
		jwtSecret:    make([]byte, 32),
	}
	_, _ = rand.Read(a.jwtSecret)
	return a
}

// add adds a user. It fails when the e-mail address is taken or the static
// token is already used.
func (a *accounts) add(u User) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	email := strings.ToLower(u.Email)
	if _, ok := a.usersByEmail[email]; ok {
		return fmt.Errorf("directustest: user %q already exists", u.Email)
	}
	if u.Token != "" {
		if _, ok := a.usersByToken[u.Token]; ok {
			return errors.New("directustest: static token already in use")
		}
	}
	nu := &user{
		id:       newUUID(),
		roleID:   newUUID(),
		email:    email,
		password: u.Password,
		token:    u.Token,
		admin:    u.Admin,
		perms:    maps.Clone(u.Permissions),
	}
	if nu.perms == nil {
		nu.perms = map[string]Permission{}
	}
	a.usersByEmail[email] = nu
	a.usersByID[nu.id] = nu
	if u.Token != "" {
		a.usersByToken[u.Token] = nu
	}
	return nil
}

// setPublicPermissions replaces the Public role's permissions.
func (a *accounts) setPublicPermissions(p map[string]Permission) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.publicPerms = maps.Clone(p)
	if a.publicPerms == nil {
		a.publicPerms = map[string]Permission{}
	}
}

// setUserPermissions replaces the permissions of the user with that e-mail
// address (looked up as given, as before the split).
func (a *accounts) setUserPermissions(email string, p map[string]Permission) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.usersByEmail[email]
	if u == nil {
		return fmt.Errorf("directustest: no user %q", email)
	}
	u.perms = maps.Clone(p)
	if u.perms == nil {
		u.perms = map[string]Permission{}
	}
	return nil
}

// permission returns what u (nil = the Public role) may do on the
// collection. Admins may do everything.
func (a *accounts) permission(u *user, collection string) Permission {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case u == nil:
		return a.publicPerms[collection]
	case u.admin:
		return Permission{Read: true, Create: true, Update: true, Delete: true}
	default:
		return u.perms[collection]
	}
}

// identityFromAccessToken resolves a static token or a JWT.
func (a *accounts) identityFromAccessToken(tok string, now time.Time) (identity, *dxError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if u, ok := a.usersByToken[tok]; ok {
		return identity{user: u}, nil
	}
	if !looksLikeJWT(tok) {
		return identity{}, errInvalidCredentials()
	}
	claims, err := verifyJWT(a.jwtSecret, tok, now)
	if err != nil {
		if errors.Is(err, jwtExpired) {
			return identity{}, errTokenExpired()
		}
		return identity{}, errInvalidCredentials()
	}
	u, ok := a.usersByID[claims.ID]
	if !ok {
		return identity{}, errInvalidCredentials()
	}
	return identity{user: u, expires: time.Unix(claims.Exp, 0)}, nil
}

// issueLocked creates a new JWT and refresh token for u.
func (a *accounts) issueLocked(u *user, now time.Time) authResult {
	tok, exp := signJWT(a.jwtSecret, u, now, a.ttl)
	rt := newRefreshToken()
	a.refresh[rt] = refreshEntry{userID: u.id, expires: now.Add(refreshTokenTTL)}
	return authResult{ident: identity{user: u, expires: exp}, accessToken: tok, refreshToken: rt}
}

// login is the email/password login of the default provider.
func (a *accounts) login(email, password string, now time.Time) (authResult, *dxError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.usersByEmail[strings.ToLower(email)]
	if !ok || u.password == "" || subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) != 1 {
		return authResult{}, errInvalidCredentials()
	}
	return a.issueLocked(u, now), nil
}

// rotate exchanges a refresh token for new tokens: the old one stops
// working.
func (a *accounts) rotate(rt string, now time.Time) (authResult, *dxError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.refresh[rt]
	if !ok {
		return authResult{}, errInvalidCredentials()
	}
	delete(a.refresh, rt)
	if now.After(e.expires) {
		return authResult{}, errInvalidCredentials()
	}
	u, ok := a.usersByID[e.userID]
	if !ok {
		return authResult{}, errInvalidCredentials()
	}
	return a.issueLocked(u, now), nil
}

// revoke forgets a refresh token (logout) and reports whether it was known.
func (a *accounts) revoke(rt string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, found := a.refresh[rt]
	delete(a.refresh, rt)
	return found
}

// authenticate runs an auth message's credentials.
func (a *accounts) authenticate(c authCreds, now time.Time) (authResult, *dxError) {
	switch c.form {
	case formLogin:
		return a.login(c.email, c.password, now)
	case formAccessToken:
		id, err := a.identityFromAccessToken(c.accessToken, now)
		if err != nil {
			return authResult{}, err
		}
		return authResult{ident: id}, nil
	case formRefresh:
		return a.rotate(c.refreshToken, now)
	}
	return authResult{}, errInvalidCredentials()
}

// issueToken signs a JWT for the user with that e-mail address, valid for
// ttl.
func (a *accounts) issueToken(email string, ttl time.Duration) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.usersByEmail[strings.ToLower(email)]
	if !ok {
		return "", fmt.Errorf("directustest: no user %q", email)
	}
	tok, _ := signJWT(a.jwtSecret, u, time.Now(), ttl)
	return tok, nil
}

func newRefreshToken() string {
	var b [48]byte
	_, _ = rand.Read(b[:])
	return b64.EncodeToString(b[:])
}
