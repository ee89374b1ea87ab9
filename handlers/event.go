package handlers

import (
	"encoding/json"
	"time"
)

// Kind is what an event says happened.
type Kind uint8

const (
	// KindInit carries the subscription's full result. It is sent once when
	// the subscription starts and again, with Resync set, after every
	// reconnect, re-authentication after TOKEN_EXPIRED, queue overflow or
	// explicit resync: the state it carries replaces everything known before.
	KindInit Kind = iota + 1
	KindCreate
	KindUpdate
	KindDelete
	// KindError carries an error frame the server sent for this
	// subscription (Err), such as the per-event FORBIDDEN Directus sends when
	// the connection's identity cannot read an item. The subscription stays.
	KindError
)

func (k Kind) String() string {
	switch k {
	case KindInit:
		return "init"
	case KindCreate:
		return "create"
	case KindUpdate:
		return "update"
	case KindDelete:
		return "delete"
	case KindError:
		return "error"
	}
	return "unknown"
}

// ParseKind maps the "event" of a subscription frame to a Kind.
func ParseKind(event string) (Kind, bool) {
	switch event {
	case "init":
		return KindInit, true
	case "create":
		return KindCreate, true
	case "update":
		return KindUpdate, true
	case "delete":
		return KindDelete, true
	}
	return 0, false
}

// Event is one delivery to a subscription's handler.
type Event struct {
	Kind Kind
	// Resync marks an init that replaces earlier state (it is false on the
	// first init of a subscription).
	Resync bool
	// UID and Collection identify the local subscription.
	UID        string
	Collection string
	// Item is true for a single-item subscription: Data of init and update
	// is then one object and Data of delete a bare key.
	Item bool
	// Data and Meta are the frame's raw "data" and "meta" (nil when absent:
	// the init of an event-only subscription has no data).
	Data json.RawMessage
	Meta json.RawMessage
	// Err is set for KindError.
	Err error
	// Received is when the frame arrived.
	Received time.Time
}

// Handler handles the events of a subscription.
type Handler interface {
	Handle(Event) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(Event) error

// Handle calls f(ev).
func (f HandlerFunc) Handle(ev Event) error { return f(ev) }
