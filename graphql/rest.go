package graphql

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/internal/jwtexp"
	"github.com/e41af43e/directus-realtime/protocol"
)

// maxRESTBody bounds what is read of a REST answer (a snapshot included).
const maxRESTBody = 256 << 20

// restError is a REST answer of status 300 or more as a
// *protocol.ServerError with Directus's first error code.
func restError(status int, body []byte) error {
	var env struct {
		Errors []struct {
			Message    string `json:"message"`
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	se := &protocol.ServerError{Type: "rest", Message: fmt.Sprintf("HTTP %d", status)}
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		se.Code = protocol.Code(env.Errors[0].Extensions.Code)
		se.Message = protocol.Truncate(env.Errors[0].Message, 300)
	}
	if se.Code == "" && (status == http.StatusUnauthorized) {
		se.Code = protocol.CodeAuthFailed
	}
	if se.Code == "" && status == http.StatusForbidden {
		se.Code = protocol.CodeForbidden
	}
	return se
}

// restDo sends one REST request to the configured host and decodes the
// answer's "data" into out.
func (s *settings) restDo(ctx context.Context, method, path string, query url.Values, token string, body, out any) error {
	u := *s.base
	u.Path = s.base.Path + path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("directus graphql: %s %s: %w", method, path, redactURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRESTBody+1))
	if err != nil {
		return fmt.Errorf("directus graphql: %s %s: %w", method, path, err)
	}
	if len(b) > maxRESTBody {
		return fmt.Errorf("directus graphql: %s %s: answer above %d bytes", method, path, maxRESTBody)
	}
	if resp.StatusCode >= 300 {
		return restError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return &protocol.ProtocolError{Reason: "REST answer is not JSON", Size: len(b), Err: err}
	}
	return json.Unmarshal(env.Data, out)
}

// redactURLError drops the URL of a transport error: it never carries a
// token here, but a user's base URL may.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// credentials turns conn.Auth into access tokens: the endpoint knows no
// other credential. A token from a login or a refresh is kept until shortly
// before it expires; the rotating refresh token is kept too.
type credentials struct {
	s *settings

	mu      sync.Mutex
	token   string
	expires time.Time
	refresh string
}

// refreshMargin is how long before its expiry a login token is replaced.
const refreshMargin = 10 * time.Second

// accessToken returns the token to authenticate with, "" for none.
func (c *credentials) accessToken(ctx context.Context) (string, error) {
	a := c.s.Auth
	if a.TokenSource != nil {
		return a.TokenSource(ctx)
	}
	if a.Token != "" {
		if !jwtexp.Expired(a.Token, time.Now()) {
			return a.Token, nil
		}
		if a.RefreshToken == "" && a.Email == "" {
			// Nothing can get another token: every later attempt would
			// be refused the same way (docs/PROTOCOL.md §13.2).
			return "", conn.ErrCredentialsExpired
		}
		// An expired JWT with a refresh token or a password: log in.
	}
	if a.RefreshToken == "" && a.Email == "" {
		return "", nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Until(c.expires) > refreshMargin {
		return c.token, nil
	}
	rt := c.refresh
	if rt == "" {
		rt = a.RefreshToken
	}
	var err error
	if rt != "" {
		if err = c.loginLocked(ctx, "/auth/refresh", map[string]string{"refresh_token": rt, "mode": "json"}); err == nil {
			return c.token, nil
		}
		c.refresh = ""
	}
	if a.Email != "" {
		if err = c.loginLocked(ctx, "/auth/login", map[string]string{"email": a.Email, "password": a.Password, "mode": "json"}); err == nil {
			return c.token, nil
		}
	}
	return "", err
}

func (c *credentials) loginLocked(ctx context.Context, path string, body map[string]string) error {
	var out struct {
		AccessToken  string `json:"access_token"`
		Expires      int64  `json:"expires"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := c.s.restDo(ctx, http.MethodPost, path, nil, "", body, &out); err != nil {
		return err
	}
	if out.AccessToken == "" {
		return &protocol.ProtocolError{Reason: "login answer without access_token"}
	}
	c.token, c.refresh = out.AccessToken, out.RefreshToken
	c.expires = time.Now().Add(time.Duration(out.Expires) * time.Millisecond)
	return nil
}

// invalidate forgets a login token the server refused.
func (c *credentials) invalidate(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token = ""
	}
	c.mu.Unlock()
}

// readItems reads every row of collection with fields, as the snapshot of
// a replica: GET /items/<collection>?fields=…&limit=-1.
func (s *settings) readItems(ctx context.Context, token, collection string, fields []string) (json.RawMessage, error) {
	q := url.Values{"limit": {"-1"}}
	if len(fields) > 0 {
		q.Set("fields", strings.Join(fields, ","))
	}
	var data json.RawMessage
	if err := s.restDo(ctx, http.MethodGet, "/items/"+url.PathEscape(collection), q, token, nil, &data); err != nil {
		return nil, err
	}
	return data, nil
}
