package store

import (
	"errors"
	"time"
)

var (
	// ErrRefused matches the failure of a replica whose reconcile the server
	// refused: the identity lost read permission, or the item of a
	// single-item subscription is gone. The replica was emptied; it is
	// retried at the pace of Options.Retry.
	ErrRefused = errors.New("directus: the server refused to read the replica's query")

	// ErrUndecodable matches the failure of a replica whose init holds rows
	// of which not one decodes into T (schema drift: a key that became a
	// uuid, a field that changed type). The rows held are kept; it is
	// retried at the pace of Options.Retry.
	ErrUndecodable = errors.New("directus: no row of the init decodes into the replica's type")
)

// FailureError is Status.Err: why the replica cannot follow the server.
// errors.Is matches ErrRefused or ErrUndecodable, and Err is the cause (the
// server's *protocol.ServerError, or the decoding error).
type FailureError struct {
	Kind  error // ErrRefused or ErrUndecodable
	Err   error
	Since time.Time
}

func (e *FailureError) Error() string {
	s := e.Kind.Error()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FailureError) Unwrap() []error { return []error{e.Kind, e.Err} }

// Status is the health of a replica, for probes and status pages.
type Status struct {
	// Synced is true once the first init has been applied.
	Synced bool
	// Err is set while the replica cannot follow the server (a
	// *FailureError); nil when it is healthy.
	Err error
	// Rows is the number of rows held.
	Rows int
	// LastReconcile is when the last reconcile ended, LastReconcileErr its
	// error, LastReconcileChanges the rows it added, changed or removed,
	// and LastReconcileTook how long it took.
	LastReconcile        time.Time
	LastReconcileErr     error
	LastReconcileChanges int
	LastReconcileTook    time.Duration
	// NextReconcile is when the next reconcile is due (zero without a
	// reconcile loop).
	NextReconcile time.Time
	// FilterExits is true while rows that leave the filter are removed at
	// the update that moves them out (Options.FilterExits). When it is
	// false for a filtered replica, FilterExitsReason says why (the filter
	// reads a relation or a variable, the option is off, …), and such
	// rows wait for reconcile.
	FilterExits       bool
	FilterExitsReason string
}

// Status returns the replica's health.
func (c *Collection[K, T]) Status() Status {
	c.statusMu.Lock()
	st := c.status
	c.statusMu.Unlock()
	st.Synced = c.Synced()
	st.Rows = c.Len()
	return st
}

// setFailure records that the replica cannot follow the server; it reports
// whether this is a new condition (not the one already recorded), which
// is what is reported once.
func (c *Collection[K, T]) setFailure(kind, cause error) (fresh bool) {
	c.statusMu.Lock()
	var cur *FailureError
	if errors.As(c.status.Err, &cur) && cur.Kind == kind {
		cur.Err = cause
		c.statusMu.Unlock()
		return false
	}
	c.status.Err = &FailureError{Kind: kind, Err: cause, Since: time.Now()}
	c.statusMu.Unlock()
	c.appliedLocked() // WaitFor conditions may read Status
	return true
}

// clearFailure records that the replica follows the server again; it
// reports whether it was failing.
func (c *Collection[K, T]) clearFailure() bool {
	c.statusMu.Lock()
	was := c.status.Err != nil
	c.status.Err = nil
	c.statusMu.Unlock()
	if was {
		c.appliedLocked() // WaitFor conditions may read Status
	}
	return was
}

func (c *Collection[K, T]) recordReconcile(err error, changes int, took time.Duration) {
	c.statusMu.Lock()
	c.status.LastReconcile = time.Now()
	c.status.LastReconcileErr = err
	c.status.LastReconcileChanges = changes
	c.status.LastReconcileTook = took
	c.statusMu.Unlock()
}

func (c *Collection[K, T]) setNextReconcile(at time.Time) {
	c.statusMu.Lock()
	c.status.NextReconcile = at
	c.statusMu.Unlock()
}

func (c *Collection[K, T]) reportError(err error) {
	if c.opts.OnError != nil {
		c.opts.OnError(err)
	}
}
