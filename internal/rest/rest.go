// Package rest is the small client of the Directus REST API that the
// project's conformance suite, benchmarks and tools share: JSON bodies, a
// static token, answers unwrapped from {"data": ...} and error answers as
// *Error. It is not part of the library.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client sends requests to one server. The zero HTTP means
// http.DefaultClient; an empty Token sends no Authorization header (the
// Public role).
type Client struct {
	Base  string // http://host:port
	Token string
	HTTP  *http.Client
}

// Error is an error answer (status 300 or more), with the code and message
// of Directus's first error when the body has one.
type Error struct {
	Status  int
	Code    string
	Message string
	Body    string // the start of the body, when it holds no Directus error
}

func (e *Error) Error() string {
	if e.Code == "" && e.Message == "" {
		return fmt.Sprintf("REST %d: %.300s", e.Status, e.Body)
	}
	return fmt.Sprintf("REST %d %s: %s", e.Status, e.Code, e.Message)
}

// Do sends one request with body (if not nil) as JSON; out, when not nil,
// receives the "data" of the answer.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return answerError(resp.StatusCode, b)
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

func answerError(status int, body []byte) *Error {
	e := &Error{Status: status}
	var env struct {
		Errors []struct {
			Message    string `json:"message"`
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		e.Code, e.Message = env.Errors[0].Extensions.Code, env.Errors[0].Message
	} else {
		e.Body = string(body[:min(len(body), 300)])
	}
	return e
}
