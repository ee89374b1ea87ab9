package directustest

import (
	"net/http"
	"strconv"
	"time"
)

// The /auth routes: login, refresh and logout, answered by the accounts
// alone (they never take Server.mu).

func (s restAPI) writeTokens(w http.ResponseWriter, res authResult) {
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

func (s restAPI) restLogin(w http.ResponseWriter, r *http.Request) {
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
	res, err := s.accounts.login(email, password, time.Now())
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

func (s restAPI) restRefresh(w http.ResponseWriter, r *http.Request) {
	rt, ok := bodyRefreshToken(w, r)
	if !ok {
		return
	}
	res, err := s.accounts.rotate(rt, time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	s.writeTokens(w, res)
}

func (s restAPI) restLogout(w http.ResponseWriter, r *http.Request) {
	rt, ok := bodyRefreshToken(w, r)
	if !ok {
		return
	}
	found := s.accounts.revoke(rt)
	if !found {
		writeError(w, errInvalidCredentials())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
