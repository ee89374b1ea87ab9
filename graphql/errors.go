package graphql

import (
	"errors"
	"fmt"
)

// UnsupportedError is the refusal of a subscription option the GraphQL
// endpoint cannot serve. The server's <collection>_mutated field takes no
// filter or query, has no single-item form and sends no init; emulating
// them on the client would silently differ from the REST endpoint, so they
// are refused (docs/PROTOCOL.md §13).
type UnsupportedError struct {
	Option string // "Query", "Item", "Init", ...
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("directus graphql: %s is not supported: %s", e.Option, e.Reason)
}

// Is makes errors.Is(err, ErrUnsupported) match every UnsupportedError.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// ErrUnsupported matches every *UnsupportedError.
var ErrUnsupported = errors.New("directus graphql: not supported by the GraphQL endpoint")

// SubscribeError is the server's refusal of a subscription: the error
// message graphql-ws sends instead of events (an unknown or unreadable
// collection, an unknown field, a bad argument), with GraphQL's messages.
type SubscribeError struct {
	Collection string
	Messages   []string
}

func (e *SubscribeError) Error() string {
	return fmt.Sprintf("directus graphql: subscription to %q refused: %v", e.Collection, e.Messages)
}

// CloseError is a session the server closed with a graphql-ws close code
// (4403 Forbidden, 4408 initialisation timeout, 4409 duplicate id, ...).
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("directus graphql: server closed the session: %d %s", e.Code, e.Reason)
}

// ErrForbidden matches a close with 4403: in handshake mode, a connection
// without an access token or a frame before connection_ack.
var ErrForbidden = errors.New("directus graphql: forbidden (4403)")

// Is makes errors.Is(err, ErrForbidden) match a 4403 close.
func (e *CloseError) Is(target error) bool { return target == ErrForbidden && e.Code == 4403 }
