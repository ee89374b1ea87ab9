package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/rest"
)

// DirectWriter writes through the Go methods of an in-process
// directustest.Server: the same events as the REST calls, without HTTP.
type DirectWriter struct{ Srv *directustest.Server }

func postMap(p Post) map[string]any {
	return map[string]any{"title": p.Title, "status": p.Status, "views": p.Views}
}

func idsOf(items []map[string]any) ([]int64, error) {
	out := make([]int64, len(items))
	for i, it := range items {
		id, ok := it["id"].(int64)
		if !ok {
			return nil, fmt.Errorf("id %v (%T) is not an int64", it["id"], it["id"])
		}
		out[i] = id
	}
	return out, nil
}

// Seed creates the items quietly.
func (w DirectWriter) Seed(_ context.Context, items []Post) ([]int64, error) {
	maps := make([]map[string]any, len(items))
	for i, p := range items {
		maps[i] = postMap(p)
	}
	created, err := w.Srv.Quiet().Create("posts", maps...)
	if err != nil {
		return nil, err
	}
	return idsOf(created)
}

// Create creates the items, one create event each.
func (w DirectWriter) Create(_ context.Context, items []Post) ([]int64, error) {
	maps := make([]map[string]any, len(items))
	for i, p := range items {
		maps[i] = postMap(p)
	}
	created, err := w.Srv.Create("posts", maps...)
	if err != nil {
		return nil, err
	}
	return idsOf(created)
}

// Update patches the rows, with a string key for one row as a URL path
// names it and number keys for several.
func (w DirectWriter) Update(_ context.Context, ids []int64, patch map[string]any) error {
	_, err := w.Srv.Update("posts", keysFor(ids), patch)
	return err
}

// Delete deletes the rows: a string key for one row ("1521" as DELETE
// /items/posts/1521 sends it), numbers for several (a JSON body).
func (w DirectWriter) Delete(_ context.Context, ids []int64) error {
	return w.Srv.Delete("posts", keysFor(ids)...)
}

func keysFor(ids []int64) []any {
	if len(ids) == 1 {
		return []any{strconv.FormatInt(ids[0], 10)}
	}
	keys := make([]any, len(ids))
	for i, id := range ids {
		keys[i] = id
	}
	return keys
}

// Rows returns the server's rows.
func (w DirectWriter) Rows(_ context.Context) ([]Post, error) {
	items := w.Srv.Items("posts")
	out := make([]Post, 0, len(items))
	for _, it := range items {
		b, err := json.Marshal(it)
		if err != nil {
			return nil, err
		}
		var p Post
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// RESTWriter writes over the REST API of a Directus server (or of a
// directustest.Server): POST, PATCH and DELETE on /items/posts.
type RESTWriter struct {
	URL    string // http://host:port
	Token  string
	Client *http.Client
}

func (w RESTWriter) do(ctx context.Context, method, path string, body, out any) error {
	c := rest.Client{Base: w.URL, Token: w.Token, HTTP: w.Client}
	return c.Do(ctx, method, path, body, out)
}

// Seed creates the items (a real Directus emits their events, but nobody is
// subscribed yet).
func (w RESTWriter) Seed(ctx context.Context, items []Post) ([]int64, error) {
	return w.Create(ctx, items)
}

// Create sends one POST: an object for one item, an array for several.
func (w RESTWriter) Create(ctx context.Context, items []Post) ([]int64, error) {
	maps := make([]map[string]any, len(items))
	for i, p := range items {
		maps[i] = postMap(p)
	}
	if len(items) == 1 {
		var out Post
		if err := w.do(ctx, "POST", "/items/posts?fields=id", maps[0], &out); err != nil {
			return nil, err
		}
		return []int64{out.ID}, nil
	}
	var out []Post
	if err := w.do(ctx, "POST", "/items/posts?fields=id", maps, &out); err != nil {
		return nil, err
	}
	ids := make([]int64, len(out))
	for i, p := range out {
		ids[i] = p.ID
	}
	return ids, nil
}

// Update sends PATCH /items/posts/{id} for one row, a batch for several.
func (w RESTWriter) Update(ctx context.Context, ids []int64, patch map[string]any) error {
	if len(ids) == 1 {
		return w.do(ctx, "PATCH", "/items/posts/"+strconv.FormatInt(ids[0], 10)+"?fields=id", patch, nil)
	}
	return w.do(ctx, "PATCH", "/items/posts?fields=id", map[string]any{"keys": ids, "data": patch}, nil)
}

// Delete sends DELETE /items/posts/{id} for one row, a JSON array for several.
func (w RESTWriter) Delete(ctx context.Context, ids []int64) error {
	if len(ids) == 1 {
		return w.do(ctx, "DELETE", "/items/posts/"+strconv.FormatInt(ids[0], 10), nil, nil)
	}
	return w.do(ctx, "DELETE", "/items/posts", ids, nil)
}

// Rows reads every row.
func (w RESTWriter) Rows(ctx context.Context) ([]Post, error) {
	var out []Post
	err := w.do(ctx, "GET", "/items/posts?limit=-1&fields=id,title,status,views&sort=id", nil, &out)
	return out, err
}
