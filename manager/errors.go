package manager

import (
	"errors"
	"strconv"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

var (
	// ErrClosed is returned after Close. It is protocol.ErrClosed, so one
	// errors.Is check covers both packages.
	ErrClosed = protocol.ErrClosed

	// ErrDuplicate matches a *DuplicateError.
	ErrDuplicate = errors.New("directus: duplicate subscription uid")

	// ErrNotFound is returned by Unsubscribe for a uid no subscription has.
	ErrNotFound = errors.New("directus: no subscription with this uid")

	// ErrUnsubscribed is the cause recorded on a subscription ended by
	// Unsubscribe, UnsubscribeCollection, UnsubscribeAll or its Scope.
	ErrUnsubscribed = errors.New("directus: unsubscribed")

	// ErrResyncRefused is returned by Subscription.Resync when the server
	// refused the fresh subscribe; the subscription is then failed.
	ErrResyncRefused = errors.New("directus: resync refused by the server")

	// ErrRefused is returned by SendMessage for subscribe and unsubscribe
	// frames, which would corrupt the manager's own bookkeeping (and an
	// unsubscribe without uid would drop every subscription).
	ErrRefused = errors.New("directus: subscribe and unsubscribe frames go through Subscribe and Unsubscribe")
)

// DuplicateError is returned by Subscribe, together with the existing
// subscription, when a subscription with the requested uid is active. No
// second server subscription is made and the new handler is not attached.
type DuplicateError struct {
	UID string
}

func (e *DuplicateError) Error() string {
	return "directus: a subscription with uid " + strconv.Quote(e.UID) + " exists; its handler was kept and the new one not attached"
}

// Is matches ErrDuplicate.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// HandlerError is a handler's error, reported to the Config's OnError and
// counted on the subscription; delivery goes on.
type HandlerError struct {
	UID  string
	Kind handlers.Kind
	Err  error
}

func (e *HandlerError) Error() string {
	return "directus: handler of subscription " + strconv.Quote(e.UID) + " failed on " + e.Kind.String() + ": " + e.Err.Error()
}

func (e *HandlerError) Unwrap() error { return e.Err }
