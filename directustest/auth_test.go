package directustest_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/directustest"
)

const (
	frameTokenExpired = `{"type":"auth","status":"error","error":{"code":"TOKEN_EXPIRED","message":"Token expired."}}`
	frameAuthTimeout  = `{"type":"auth","status":"error","error":{"code":"AUTH_TIMEOUT","message":"Authentication timed out."}}`
	frameHandshakeErr = `{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication handshake failed."}}`
	forbiddenPosts    = `{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access collection \"posts\" or it does not exist. Queried in root."},"uid":"s"}`
)

// The expiry timer fires at the JWT's exp (one-second resolution), then the
// connection is Public until it re-authenticates (X2–X5), or gets
// AUTH_TIMEOUT and is closed (X6).
func TestTokenExpiryTimer(t *testing.T) {
	if got := findFrames(t, "X2", "X", "<<<"); got[len(got)-1] != frameTokenExpired {
		t.Fatalf("X2 changed in the transcript: %q", got)
	}
	if got := findFrames(t, "X6", "X", "<<<"); got[0] != frameAuthTimeout {
		t.Fatalf("X6 changed in the transcript: %q", got)
	}
	srv := newServer(t, &directustest.Options{AccessTokenTTL: time.Second, AuthTimeout: 300 * time.Millisecond, HeartbeatPeriod: -1})

	// Y: email/password, so it gets a 1 s JWT and a refresh token.
	y := mustDial(t, srv.WebSocketURL())
	y.send(`{"type":"auth","email":"` + directustest.AdminEmail + `","password":"` + directustest.AdminPassword + `"}`)
	ok := y.nextJSON()
	rt, _ := ok["refresh_token"].(string)
	if ok["status"] != "ok" || rt == "" {
		t.Fatalf("auth reply %v", ok)
	}
	issued := time.Now()
	y.send(`{"type":"subscribe","collection":"posts","uid":"s","query":{"fields":["id","title"]}}`)
	y.expect(`{"type":"subscription","event":"init","data":[],"uid":"s"}`)

	// X: a JWT from IssueToken, never re-authenticates.
	jwt, err := srv.IssueToken(directustest.AdminEmail, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	x := mustDial(t, srv.WebSocketURL()+"?access_token="+jwt)

	// S: the static token never expires.
	s := authClient(t, srv)

	y.expect(frameTokenExpired)
	if el := time.Since(issued); el > 2500*time.Millisecond {
		t.Fatalf("TOKEN_EXPIRED after %v for a 1 s token", el)
	}

	// Expired: events give FORBIDDEN per subscription, the connection
	// still works as Public; re-auth within AuthTimeout restores it.
	if _, err := srv.Create("posts", map[string]any{"title": "after-expiry"}); err != nil {
		t.Fatal(err)
	}
	y.expect(forbiddenPosts)
	y.send(`{"type":"auth","refresh_token":"` + rt + `","uid":"re"}`)
	re := y.nextJSON()
	if re["status"] != "ok" || re["uid"] != "re" || re["refresh_token"] == rt || re["refresh_token"] == nil {
		t.Fatalf("re-auth reply %v", re)
	}
	if _, err := srv.Create("posts", map[string]any{"title": "after-reauth"}); err != nil {
		t.Fatal(err)
	}
	y.expect(`{"type":"subscription","event":"create","data":[{"id":2,"title":"after-reauth"}],"uid":"s"}`)

	// X never re-authenticates.
	x.expect(frameTokenExpired)
	x.expect(frameAuthTimeout)
	if code, ok := x.waitClosed(frameTimeout); !ok || code != websocket.StatusNoStatusRcvd {
		t.Fatalf("X closed=%v code=%v, want 1005", ok, code)
	}
	s.expectNothing()
}

// In public mode AUTH_TIMEOUT does not close the connection.
func TestTokenExpiryPublicMode(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthPublic, AuthTimeout: 100 * time.Millisecond, HeartbeatPeriod: -1})
	jwt, err := srv.IssueToken(directustest.AdminEmail, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := mustDial(t, srv.WebSocketURL())
	c.send(`{"type":"auth","access_token":"` + jwt + `"}`)
	c.expect(`{"type":"auth","status":"ok"}`)
	srv.ExpireTokens()
	c.expect(frameTokenExpired)
	c.expect(frameAuthTimeout)
	c.send(`{"type":"ping","uid":"alive"}`)
	c.expect(`{"type":"pong","uid":"alive"}`)
}

// ExpireTokens leaves static-token connections alone.
func TestExpireTokensStatic(t *testing.T) {
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: -1})
	c := authClient(t, srv)
	srv.ExpireTokens()
	c.expectNothing()
}

// H10: the handshake times out after AuthTimeout with the generic error.
func TestHandshakeTimeout(t *testing.T) {
	if got := findFrames(t, "H10", "H10", "<<<"); len(got) != 1 || got[0] != frameHandshakeErr {
		t.Fatalf("H10 changed in the transcript: %q", got)
	}
	const timeout = 200 * time.Millisecond
	srv := newServer(t, &directustest.Options{AuthTimeout: timeout})
	start := time.Now()
	c := mustDial(t, srv.WebSocketURL())
	c.expect(frameHandshakeErr)
	if el := time.Since(start); el < timeout {
		t.Fatalf("handshake failed after %v, before AuthTimeout %v", el, timeout)
	}
	if code, ok := c.waitClosed(frameTimeout); !ok || code != websocket.StatusNoStatusRcvd {
		t.Fatalf("closed=%v code=%v, want 1005", ok, code)
	}
}

// JWTs are HS256 with the Directus claims, and work over REST.
func TestJWTShape(t *testing.T) {
	srv := newServer(t, nil)
	status, body := rest(t, srv, "POST", "/auth/login", "", `{"email":"admin@example.com","password":"d1r3ctus"}`)
	if status != 200 {
		t.Fatalf("login: %d %s", status, body)
	}
	var resp struct {
		Data struct {
			Expires      int64  `json:"expires"`
			RefreshToken string `json:"refresh_token"`
			AccessToken  string `json:"access_token"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Data.Expires != 900000 || len(resp.Data.RefreshToken) != 64 {
		t.Fatalf("login reply %s", body)
	}
	parts := strings.Split(resp.Data.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %s", resp.Data.AccessToken)
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if string(hdr) != `{"alg":"HS256","typ":"JWT"}` {
		t.Fatalf("header %s", hdr)
	}
	var c map[string]any
	if err := json.Unmarshal(claims, &c); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "role", "app_access", "admin_access", "iat", "exp", "iss"} {
		if _, ok := c[k]; !ok {
			t.Fatalf("claim %q missing in %s", k, claims)
		}
	}
	if c["iss"] != "directus" || c["admin_access"] != true || c["exp"].(float64)-c["iat"].(float64) != 900 {
		t.Fatalf("claims %s", claims)
	}
	if status, body := rest(t, srv, "GET", "/items/posts", resp.Data.AccessToken, ""); status != 200 {
		t.Fatalf("GET with JWT: %d %s", status, body)
	}
	// A tampered token is rejected, an expired one too.
	bad := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	if status, body := rest(t, srv, "GET", "/items/posts", bad, ""); status != http.StatusUnauthorized || !contains(body, "INVALID_CREDENTIALS") {
		t.Fatalf("tampered JWT: %d %s", status, body)
	}
	expired, _ := srv.IssueToken(directustest.AdminEmail, -time.Second)
	if status, body := rest(t, srv, "GET", "/items/posts", expired, ""); status != http.StatusUnauthorized || !contains(body, `"TOKEN_EXPIRED"`) {
		t.Fatalf("expired JWT: %d %s", status, body)
	}
	if _, err := srv.IssueToken("nobody@example.com", time.Minute); err == nil {
		t.Fatal("IssueToken for an unknown user succeeded")
	}
}

// Refresh tokens rotate, over REST and WebSocket alike, and logout revokes.
func TestRefreshRotation(t *testing.T) {
	srv := newServer(t, nil)
	_, body := rest(t, srv, "POST", "/auth/login", "", `{"email":"reader@example.com","password":"r3ader-pass"}`)
	rt := jsonPath(t, body, "data", "refresh_token").(string)
	status, body := rest(t, srv, "POST", "/auth/refresh", "", `{"refresh_token":"`+rt+`"}`)
	if status != 200 {
		t.Fatalf("refresh: %d %s", status, body)
	}
	rt2 := jsonPath(t, body, "data", "refresh_token").(string)
	if status, _ := rest(t, srv, "POST", "/auth/refresh", "", `{"refresh_token":"`+rt+`"}`); status != http.StatusUnauthorized {
		t.Fatalf("reused refresh token: %d", status)
	}
	c := mustDial(t, srv.WebSocketURL())
	c.send(`{"type":"auth","refresh_token":"` + rt2 + `","uid":1}`)
	reply := c.nextJSON()
	rt3, _ := reply["refresh_token"].(string)
	if reply["status"] != "ok" || reply["uid"] != float64(1) || rt3 == "" || rt3 == rt2 {
		t.Fatalf("WS refresh: %v", reply)
	}
	if status, _ := rest(t, srv, "POST", "/auth/logout", "", `{"refresh_token":"`+rt3+`"}`); status != http.StatusNoContent {
		t.Fatalf("logout: %d", status)
	}
	if status, _ := rest(t, srv, "POST", "/auth/refresh", "", `{"refresh_token":"`+rt3+`"}`); status != http.StatusUnauthorized {
		t.Fatalf("refresh after logout: %d", status)
	}
	if status, body := rest(t, srv, "POST", "/auth/login", "", `{"email":"reader@example.com","password":"nope"}`); status != http.StatusUnauthorized || !contains(body, "Invalid user credentials.") {
		t.Fatalf("bad login: %d %s", status, body)
	}
}

// Upgrade-time checks: Origin, ConnLimit, ?access_token= in any mode.
func TestUpgradeChecks(t *testing.T) {
	srv := newServer(t, &directustest.Options{ConnLimit: 2})
	a := mustDial(t, srv.WebSocketURL())
	_ = mustDial(t, srv.WebSocketURL()+"?access_token="+directustest.ReaderToken)
	if _, resp, err := dial(t, srv.WebSocketURL(), nil); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial beyond ConnLimit: err=%v resp=%v", err, resp)
	}
	a.ws.Close(websocket.StatusNormalClosure, "")
	waitConns(t, srv, 1)
	if _, resp, err := dial(t, srv.WebSocketURL(), dialOpts(http.Header{"Origin": {"http://evil.example"}}, nil)); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err=%v", err)
	}
	c, _, err := dial(t, srv.WebSocketURL(), dialOpts(http.Header{"Origin": {srv.URL()}}, nil))
	if err != nil {
		t.Fatalf("own origin: %v", err)
	}
	c.ws.Close(websocket.StatusNormalClosure, "")
	waitConns(t, srv, 1)
	if _, resp, err := dial(t, srv.WebSocketURL()+"?access_token=nope", nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad access_token: err=%v", err)
	}
}

func jsonPath(t testing.TB, body []byte, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: no %q", body, p)
		}
		v = m[p]
	}
	return v
}
