package manager

import (
	"errors"
	"strconv"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

var (
	// ErrClosed is returned after Close. It is protocol.ErrClosed, so one
	// errors.Is check covers every package.
	ErrClosed = protocol.ErrClosed

	// ErrDuplicate matches a *DuplicateError.
	ErrDuplicate = errors.New("directus: duplicate subscription uid")

	// ErrConflict matches a *DuplicateError whose options differ from the
	// existing subscription's.
	ErrConflict = errors.New("directus: subscription uid in use with other options")

	// ErrNotFound is returned by Unsubscribe for a uid no subscription has.
	ErrNotFound = errors.New("directus: no subscription with this uid")

	// ErrUnsubscribed is the cause recorded on a subscription ended by
	// Unsubscribe, UnsubscribeCollection, UnsubscribeAll or its Scope.
	ErrUnsubscribed = errors.New("directus: unsubscribed")

	// ErrScopeClosed is returned by Scope.Subscribe after the scope closed.
	ErrScopeClosed = errors.New("directus: the scope is closed")

	// ErrResyncRefused is returned by Subscription.Resync when the server
	// refused the fresh read; the subscription is then failed.
	ErrResyncRefused = errors.New("directus: resync refused by the server")

	// ErrRefused is returned by SendMessage for subscribe and unsubscribe
	// frames, which would corrupt the manager's own bookkeeping (and an
	// unsubscribe without uid would drop every subscription).
	ErrRefused = errors.New("directus: subscribe and unsubscribe frames go through Subscribe and Unsubscribe")

	// ErrHandlerStalled matches a *StallError.
	ErrHandlerStalled = errors.New("directus: a handler fell behind its queue")

	// ErrCloseTimeout is returned by Close when handlers were still running
	// after Options.CloseTimeout.
	ErrCloseTimeout = errors.New("directus: close timed out waiting for handlers")
)

// DuplicateError is returned by Subscribe when a subscription with the
// requested uid is live. No second server subscription is made and the new
// handler is not attached. With the same options, Subscribe also returns the
// existing subscription; when they differ, Conflict says how (and
// errors.Is(err, ErrConflict) holds), and no subscription is returned.
type DuplicateError struct {
	UID      string
	Conflict string // what differs ("collection", "query", "item", "event"), or ""
}

func (e *DuplicateError) Error() string {
	if e.Conflict != "" {
		return "directus: a subscription with uid " + strconv.Quote(truncate(e.UID)) + " exists with another " + e.Conflict + "; nothing was subscribed"
	}
	return "directus: a subscription with uid " + strconv.Quote(truncate(e.UID)) + " exists; its handler was kept and the new one not attached"
}

// Is matches ErrDuplicate, and ErrConflict when the options differ.
func (e *DuplicateError) Is(target error) bool {
	return target == ErrDuplicate || (target == ErrConflict && e.Conflict != "")
}

// HandlerError is a handler's error, reported to the Config's OnError and
// counted on the subscription; delivery goes on.
type HandlerError struct {
	UID  string
	Kind handlers.Kind
	Err  error
}

func (e *HandlerError) Error() string {
	return "directus: handler of subscription " + strconv.Quote(truncate(e.UID)) + " failed on " + e.Kind.String() + ": " + e.Err.Error()
}

func (e *HandlerError) Unwrap() error { return e.Err }

// StallError reports, once per episode, a subscription whose handler made
// no room in its full queue in time: the queued events were discarded, and
// the handler receives a fresh init (Resync set) once it has returned from
// the event it is on. Until then the subscription is StateStalled and its
// events are dropped.
type StallError struct {
	UID       string
	Discarded int // events discarded at the overflow
}

func (e *StallError) Error() string {
	return "directus: handler of subscription " + strconv.Quote(truncate(e.UID)) + " fell behind; " +
		strconv.Itoa(e.Discarded) + " queued events discarded, a resync follows once it returns"
}

// Is matches ErrHandlerStalled.
func (e *StallError) Is(target error) bool { return target == ErrHandlerStalled }
