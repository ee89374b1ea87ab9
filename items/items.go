// Package items reads and writes a collection's items over the realtime
// connection with typed results: the `items` frames of the Directus
// WebSocket API (docs/PROTOCOL.md §6) decoded into T.
//
//	posts, err := items.Read[Post](ctx, m, "posts", &protocol.Query{Limit: -1})
//	p, err := items.Create(ctx, m, "posts", Post{Title: "hello"})
//
// Every function takes a Requester: a *manager.Manager or a *conn.Conn. A
// refusal of the server is returned as *protocol.ServerError (a missing id
// reads as FORBIDDEN on Directus, not as "not found"); a request without a
// reply in time as conn.ErrTimeout (Directus sends no reply at all for some
// database errors, so every request is bounded by ctx or the Config's
// RequestTimeout); a reply whose data does not decode into T as a
// *DecodeError. The functions are safe for concurrent use as their
// Requester is.
//
// Writes emit subscription events like any other write, and the event
// usually reaches subscribers before the reply reaches the writer.
package items

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/e41af43e/directus-realtime/protocol"
)

// Requester performs one items request and returns its reply.
// *manager.Manager and *conn.Conn are Requesters.
type Requester interface {
	Items(ctx context.Context, msg protocol.ItemsMessage) (*protocol.Message, error)
}

// DecodeError is a reply whose data does not decode into the result type.
type DecodeError struct {
	Collection string
	Action     string
	Err        error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("directus: items %s on %q: the reply does not decode: %v", e.Action, e.Collection, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Read returns the items matching q (nil: Directus's defaults, at most
// QUERY_LIMIT_DEFAULT rows; Limit -1 reads every row).
func Read[T any](ctx context.Context, r Requester, collection string, q *protocol.Query) ([]T, error) {
	return do[[]T](ctx, r, protocol.ItemsMessage{Collection: collection, Action: protocol.ActionRead, Query: q})
}

// ReadOne returns the item with key id, shaped by q (fields, deep).
func ReadOne[T any](ctx context.Context, r Requester, collection string, id any, q *protocol.Query) (T, error) {
	if err := needKey(id); err != nil {
		var zero T
		return zero, err
	}
	return do[T](ctx, r, protocol.ItemsMessage{Collection: collection, Action: protocol.ActionRead, ID: id, Query: q})
}

// Create creates one item and returns it as the server stored it.
func Create[T any](ctx context.Context, r Requester, collection string, item T) (T, error) {
	return do[T](ctx, r, protocol.ItemsMessage{Collection: collection, Action: protocol.ActionCreate, Data: item})
}

// CreateMany creates items in one request (one create event per item).
func CreateMany[T any](ctx context.Context, r Requester, collection string, items []T) ([]T, error) {
	if items == nil {
		items = []T{}
	}
	return do[[]T](ctx, r, protocol.ItemsMessage{Collection: collection, Action: protocol.ActionCreate, Data: items})
}

// Update applies patch (a struct or a map of the fields to change) to the
// item with key id and returns the whole item after the update.
func Update[T any](ctx context.Context, r Requester, collection string, id any, patch any) (T, error) {
	if err := needKey(id); err != nil {
		var zero T
		return zero, err
	}
	return do[T](ctx, r, protocol.ItemsMessage{Collection: collection, Action: protocol.ActionUpdate, ID: id, Data: patch})
}

// UpdateMany applies patch to the items with keys ids in one request (one
// update event) and returns them after the update.
func UpdateMany[T any](ctx context.Context, r Requester, collection string, ids []any, patch any) ([]T, error) {
	if len(ids) == 0 {
		return nil, &protocol.ConfigError{Field: "ids", Reason: "empty: Directus would read it as no key at all"}
	}
	return do[[]T](ctx, r, protocol.ItemsMessage{Collection: collection, Action: protocol.ActionUpdate, IDs: ids, Data: patch})
}

// Delete deletes the items with keys ids in one request (one delete event).
func Delete(ctx context.Context, r Requester, collection string, ids ...any) error {
	if len(ids) == 0 {
		return &protocol.ConfigError{Field: "ids", Reason: "empty: Directus refuses a delete without keys"}
	}
	_, err := r.Items(ctx, protocol.ItemsMessage{Collection: collection, Action: protocol.ActionDelete, IDs: ids})
	return err
}

func needKey(id any) error {
	switch id.(type) {
	case nil:
		return &protocol.ConfigError{Field: "id", Reason: "nil"}
	case string, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, json.Number:
		return nil
	}
	return &protocol.ConfigError{Field: "id", Reason: fmt.Sprintf("a %T is not a key: use a string or an integer", id)}
}

func do[R any](ctx context.Context, r Requester, msg protocol.ItemsMessage) (R, error) {
	var out R
	reply, err := r.Items(ctx, msg)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(reply.Data, &out); err != nil {
		return out, &DecodeError{Collection: msg.Collection, Action: msg.Action, Err: err}
	}
	return out, nil
}
