package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
)

// Post is a row of the seeded "posts" collection (integer primary key).
type Post struct {
	ID     int64  `json:"id,omitempty"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

// Tag is a row of the seeded "tags" collection (uuid primary key).
type Tag struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name"`
}

func postKey(p Post) int64 { return p.ID }
func tagKey(t Tag) string  { return t.ID }

// REST is a small client of the Directus REST API, authenticated by a
// static token. Writes go through it so that events come from the server
// exactly as they would for any other client.
type REST struct {
	base  string
	token string
	tr    *http.Transport
	hc    *http.Client
}

func newREST(base, token string) *REST {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &REST{base: base, token: token, tr: tr, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// As returns a client of the same server authenticated by token ("" for
// the Public role). It shares the connection pool.
func (r *REST) As(token string) *REST {
	c := *r
	c.token = token
	return &c
}

// Close closes idle connections.
func (r *REST) Close() { r.tr.CloseIdleConnections() }

// RESTError is an error answer of the REST API.
type RESTError struct {
	Status  int
	Code    string
	Message string
}

func (e *RESTError) Error() string {
	return fmt.Sprintf("REST %d %s: %s", e.Status, e.Code, e.Message)
}

// do sends one request; out, when not nil, receives the "data" of the
// answer.
func (r *REST) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &RESTError{Status: resp.StatusCode}
		var env struct {
			Errors []struct {
				Message    string `json:"message"`
				Extensions struct {
					Code string `json:"code"`
				} `json:"extensions"`
			} `json:"errors"`
		}
		if json.Unmarshal(b, &env) == nil && len(env.Errors) > 0 {
			e.Code, e.Message = env.Errors[0].Extensions.Code, env.Errors[0].Message
		}
		return e
	}
	if out == nil {
		return nil
	}
	if len(b) == 0 {
		return fmt.Errorf("%s %s: %d with an empty body", method, path, resp.StatusCode)
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return json.Unmarshal(env.Data, out)
}

// List reads every row of a collection (limit=-1), sorted by key.
func List[T any](ctx context.Context, r *REST, collection string, query url.Values) ([]T, error) {
	q := url.Values{"limit": {"-1"}, "sort": {"id"}}
	for k, v := range query {
		q[k] = v
	}
	var out []T
	err := r.do(ctx, http.MethodGet, "/items/"+collection+"?"+q.Encode(), nil, &out)
	return out, err
}

// Posts reads every post.
func (r *REST) Posts(ctx context.Context) ([]Post, error) { return List[Post](ctx, r, "posts", nil) }

// Tags reads every tag.
func (r *REST) Tags(ctx context.Context) ([]Tag, error) { return List[Tag](ctx, r, "tags", nil) }

// CreatePost creates one post: POST /items/posts with an object.
func (r *REST) CreatePost(ctx context.Context, p Post) (Post, error) {
	var out Post
	err := r.do(ctx, http.MethodPost, "/items/posts", p, &out)
	return out, err
}

// CreatePosts creates posts in one request: POST /items/posts with an
// array (one create event per item, R5).
func (r *REST) CreatePosts(ctx context.Context, ps ...Post) ([]Post, error) {
	var out []Post
	err := r.do(ctx, http.MethodPost, "/items/posts", ps, &out)
	return out, err
}

// UpdatePost updates one post by PATCH /items/posts/:id: the key reaches
// the event as a string.
func (r *REST) UpdatePost(ctx context.Context, id int64, patch map[string]any) error {
	return r.do(ctx, http.MethodPatch, "/items/posts/"+strconv.FormatInt(id, 10), patch, nil)
}

// UpdatePosts updates posts in one request, PATCH /items/posts with
// {"keys":[…],"data":{…}}: one update event, keys as JSON numbers (R6, R7).
func (r *REST) UpdatePosts(ctx context.Context, ids []int64, patch map[string]any) error {
	return r.do(ctx, http.MethodPatch, "/items/posts", map[string]any{"keys": ids, "data": patch}, nil)
}

// DeletePost deletes by DELETE /items/posts/:id: the delete event carries
// the key as a string (R8).
func (r *REST) DeletePost(ctx context.Context, id int64) error {
	return r.do(ctx, http.MethodDelete, "/items/posts/"+strconv.FormatInt(id, 10), nil, nil)
}

// DeletePosts deletes by DELETE /items/posts with a JSON array body: the
// delete event carries the keys as numbers (R9).
func (r *REST) DeletePosts(ctx context.Context, ids ...int64) error {
	if ids == nil {
		ids = []int64{} // [], not null
	}
	return r.do(ctx, http.MethodDelete, "/items/posts", ids, nil)
}

// CreateTag creates one tag (uuid key generated by the server).
func (r *REST) CreateTag(ctx context.Context, name string) (Tag, error) {
	var out Tag
	err := r.do(ctx, http.MethodPost, "/items/tags", Tag{Name: name}, &out)
	return out, err
}

// DeleteTag deletes one tag by DELETE /items/tags/:id.
func (r *REST) DeleteTag(ctx context.Context, id string) error {
	return r.do(ctx, http.MethodDelete, "/items/tags/"+url.PathEscape(id), nil, nil)
}

// Reset deletes every row of posts and tags.
func (r *REST) Reset(ctx context.Context) error {
	for _, coll := range []string{"posts", "tags"} {
		var rows []struct {
			ID any `json:"id"`
		}
		if err := r.do(ctx, http.MethodGet, "/items/"+coll+"?fields=id&limit=-1", nil, &rows); err != nil {
			return fmt.Errorf("reset %s: %w", coll, err)
		}
		if len(rows) == 0 {
			continue
		}
		ids := make([]any, len(rows))
		for i, row := range rows {
			ids[i] = row.ID
		}
		if err := r.do(ctx, http.MethodDelete, "/items/"+coll, ids, nil); err != nil {
			return fmt.Errorf("reset %s: %w", coll, err)
		}
	}
	return nil
}

// Tokens is the answer of POST /auth/login.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	Expires      int64  `json:"expires"` // milliseconds
}

// Login logs in: POST /auth/login.
func (r *REST) Login(ctx context.Context, email, password string) (Tokens, error) {
	var out Tokens
	err := r.do(ctx, http.MethodPost, "/auth/login", map[string]string{"email": email, "password": password}, &out)
	return out, err
}

// Settings reads the realtime settings from GET /server/info, and the
// token lifetime from a login when creds has the admin's password (0
// otherwise).
func (r *REST) Settings(ctx context.Context, creds Credentials) (Settings, error) {
	var info struct {
		Websocket *struct {
			Rest *struct {
				Authentication string `json:"authentication"`
			} `json:"rest"`
			Heartbeat json.RawMessage `json:"heartbeat"`
		} `json:"websocket"`
	}
	if err := r.do(ctx, http.MethodGet, "/server/info", nil, &info); err != nil {
		return Settings{}, fmt.Errorf("GET /server/info: %w", err)
	}
	if info.Websocket == nil || info.Websocket.Rest == nil {
		return Settings{}, errors.New("GET /server/info: WebSockets are disabled (set WEBSOCKETS_ENABLED=true and WEBSOCKETS_REST_ENABLED=true)")
	}
	set := Settings{Mode: conn.AuthMode(info.Websocket.Rest.Authentication)}
	var secs float64
	if json.Unmarshal(info.Websocket.Heartbeat, &secs) == nil {
		set.Heartbeat = time.Duration(secs * float64(time.Second))
	}
	if creds.AdminEmail != "" && creds.AdminPassword != "" {
		tok, err := r.Login(ctx, creds.AdminEmail, creds.AdminPassword)
		if err != nil {
			return set, fmt.Errorf("POST /auth/login: %w", err)
		}
		set.TokenTTL = time.Duration(tok.Expires) * time.Millisecond
	}
	return set, nil
}
