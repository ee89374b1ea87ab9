package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// QueryError reports subscribe options a replica cannot keep equal to the
// server.
type QueryError struct {
	Reason string
}

func (e *QueryError) Error() string { return "directus: cannot replicate: " + e.Reason }

var (
	// ErrNotSubscribed is returned by Reconcile before Subscribe.
	ErrNotSubscribed = errors.New("directus: the collection has no subscription")
	// ErrSubscribed is returned by a second Subscribe.
	ErrSubscribed = errors.New("directus: the collection is already subscribed")
	// ErrClosed is returned after Close. It is protocol.ErrClosed, the
	// value conn.ErrClosed and manager.ErrClosed also are.
	ErrClosed = protocol.ErrClosed
)

// Subscribe subscribes the collection through m and returns once the first
// init has been applied. The query defaults to every row (limit -1, where
// Directus would apply its default of 100); queries a replica cannot follow
// are refused with *QueryError: event-only subscriptions, offset and page
// (an event re-read through them skips rows), fields that leave out the
// primary key, and a sort with a positive limit (a window such as "the
// latest 20"). Directus applies sort and limit to the init only: events
// bring any changed row that matches the filter, inside the window or not,
// and nothing tells which row takes the place of one that left, so such a
// replica would silently stop being the window (docs/PROTOCOL.md §5.5).
// Subscribe to the whole filtered set instead and read the window through
// NewView, which stays exact after every event. A positive limit without a
// sort is accepted with a warning: only reconcile corrects what it lets in
// or out.
//
// A filtered replica also subscribes, before its own subscription, to the
// collection's updates with only the primary key and the fields its filter
// reads, to remove rows that leave the filter at once (Options.FilterExits,
// the package documentation); that subscription ends with the replica's.
//
// A first init with rows of which not one decodes into T (the collection's
// keys do not fit K, or its fields not T) fails Subscribe with a
// *FailureError matching ErrUndecodable, rather than give a replica that
// says it is synced and holds nothing.
func (c *Collection[K, T]) Subscribe(ctx context.Context, m *manager.Manager, opts manager.SubscribeOptions) (*manager.Subscription, error) {
	q, err := c.replicaQuery(opts)
	if err != nil {
		return nil, err
	}
	opts.Query = q
	exits, noExits, err := c.exitPlan(opts, q)
	if err != nil {
		return nil, err
	}
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.isClosed() {
		return nil, ErrClosed
	}
	if c.sub != nil {
		return nil, ErrSubscribed
	}
	var comp *manager.Subscription
	if exits != nil {
		comp = c.startExits(ctx, m, opts, exits)
	} else {
		c.setExits(false, noExits)
	}
	fail := func(err error) (*manager.Subscription, error) {
		if comp != nil {
			_ = comp.Unsubscribe()
			c.lock()
			c.seen, c.tombs = nil, nil
			c.unlock()
			c.setExits(false, "")
		}
		return nil, err
	}
	sub, err := m.Subscribe(ctx, opts, c)
	if err != nil {
		return fail(err)
	}
	// The manager returns when the init arrived; a replica is ready when it
	// has been applied.
	select {
	case <-c.firstInit:
	case <-ctx.Done():
		_ = sub.Unsubscribe()
		return fail(ctx.Err())
	}
	if c.firstErr != nil {
		_ = sub.Unsubscribe()
		return fail(c.firstErr)
	}
	c.sub = sub
	if comp != nil {
		c.companion = comp
		c.endWith(sub, comp)
	}
	if c.opts.ReconcileInterval > 0 || comp != nil {
		// With filter exits followed, reconciles are also asked for when
		// the companion lost events; without an interval, only then.
		c.stopLoop = make(chan struct{})
		c.loopDone = make(chan struct{})
		go c.reconcileLoop(sub, c.stopLoop, c.loopDone)
	}
	return sub, nil
}

func (c *Collection[K, T]) replicaQuery(opts manager.SubscribeOptions) (*protocol.Query, error) {
	if opts.Event != "" {
		return nil, &QueryError{Reason: "an event-only subscription carries no rows"}
	}
	q := protocol.Query{Limit: -1}
	if opts.Query != nil {
		q = *opts.Query
		if q.Limit == 0 {
			q.Limit = -1
		}
	}
	if q.Offset > 0 || q.Page > 0 {
		return nil, &QueryError{Reason: "offset and page skip rows of events too"}
	}
	if len(q.Fields) > 0 && !slices.Contains(q.Fields, "*") && !slices.Contains(q.Fields, c.opts.KeyField) {
		return nil, &QueryError{Reason: "fields leave out the primary key " + c.opts.KeyField}
	}
	if q.Limit > 0 && len(q.Sort) > 0 {
		return nil, &QueryError{Reason: "sort with a positive limit: events ignore both (any changed row that matches the filter arrives, " +
			"inside the window or not) and no event tells which row takes the place of one that left; " +
			"subscribe to the whole (filtered) set and read it through store.NewView, a sorted window that stays exact"}
	}
	if q.Limit > 0 {
		c.log.Warn("replicating only the first rows: rows pushed out of them send no event and are only corrected by reconcile; "+
			"for the first rows in an order, subscribe to every row and read them through store.NewView", "limit", q.Limit)
	}
	return &q, nil
}

// Subscription returns the subscription made by Subscribe, or nil.
func (c *Collection[K, T]) Subscription() *manager.Subscription {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	return c.sub
}

// Reconcile re-reads the subscription's query now (a read for this
// replica alone; see manager.Subscription.Resync), replaces the rows with
// the answer, and returns when that has been applied.
//
// When the server refuses the read, the query selects no row this identity
// can see (Directus answers FORBIDDEN when the identity lost read
// permission, and when the item of a single-item subscription no longer
// exists, whose delete it may never have sent): the replica is emptied,
// its Status fails with ErrRefused, and manager.ErrResyncRefused is
// returned.
func (c *Collection[K, T]) Reconcile(ctx context.Context) error {
	c.ctl.Lock()
	sub := c.sub
	c.ctl.Unlock()
	if sub == nil {
		return ErrNotSubscribed
	}
	c.reconciles.Add(1)
	start := time.Now()
	c.lastResyncChanges.Store(0)
	err := sub.Resync(ctx)
	changes := int(c.lastResyncChanges.Load())
	switch {
	case errors.Is(err, manager.ErrResyncRefused):
		changes = c.replace(nil, true, 0, time.Time{})
		c.reconcileFailures.Add(1)
		cause := sub.Stats().LastError
		if c.setFailure(ErrRefused, cause) {
			fe := &FailureError{Kind: ErrRefused, Err: cause, Since: time.Now()}
			c.log.Error("the server refused to read the replica's query; replica emptied, retrying later", "err", cause)
			c.reportError(fe)
		} else {
			c.log.Warn("the server still refuses to read the replica's query", "err", cause)
		}
	case err != nil:
		c.reconcileFailures.Add(1)
	default:
		c.statusMu.Lock()
		var fe *FailureError
		refused := errors.As(c.status.Err, &fe) && fe.Kind == ErrRefused
		if refused {
			c.status.Err = nil
		}
		c.statusMu.Unlock()
		if refused {
			c.log.Info("the server reads the replica's query again; the replica follows it")
		}
	}
	c.reconcileChanges.Add(uint64(changes))
	took := time.Since(start)
	c.reconcileNanos.Add(int64(took))
	c.recordReconcile(err, changes, took)
	return err
}

func (c *Collection[K, T]) reconcileSoon() {
	select {
	case c.soon <- struct{}{}:
	default:
	}
}

// reconcileLoop reconciles every ReconcileInterval (±10%), and sooner when
// asked (an error event, a refused or undecodable init), but never sooner
// than the retry backoff allows: however many error events arrive, one
// reconcile per backoff step runs. The backoff grows with each reconcile
// brought forward, and goes back to its start after Retry.ResetAfter
// without one.
func (c *Collection[K, T]) reconcileLoop(sub *manager.Subscription, stop, done chan struct{}) {
	defer close(done)
	defer c.setNextReconcile(time.Time{})
	every := c.opts.ReconcileInterval
	var (
		step      int
		lastStart time.Time
		lastSoon  time.Time
	)
	for {
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(every))
		due := time.Now().Add(every + jitter)
		t := time.NewTimer(time.Until(due))
		if every > 0 {
			c.setNextReconcile(due)
		} else {
			t.Stop() // reconciles on demand only
		}
		select {
		case <-stop:
			t.Stop()
			return
		case <-sub.Done():
			t.Stop()
			return
		case <-c.soon:
			t.Stop()
			if time.Since(lastSoon) >= c.opts.Retry.ResetAfter {
				step = 0
			}
			at := lastStart.Add(c.opts.Retry.Delay(step))
			step++
			lastSoon = time.Now()
			if wait := time.Until(at); wait > 0 {
				c.setNextReconcile(at)
				w := time.NewTimer(wait)
				select {
				case <-stop:
					w.Stop()
					return
				case <-sub.Done():
					w.Stop()
					return
				case <-w.C:
				}
			}
			// Requests that came while waiting are served by this one.
			select {
			case <-c.soon:
			default:
			}
		case <-t.C:
		}
		lastStart = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), max(every, 30*time.Second))
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := c.Reconcile(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, manager.ErrResyncRefused) {
			c.log.Warn("reconcile failed", "err", err)
		}
		cancel()
	}
}

func (c *Collection[K, T]) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}

// Close unsubscribes, stops the reconcile loop and the listeners, and waits
// for them. The rows stay readable; no event is applied any more.
func (c *Collection[K, T]) Close() error {
	c.closeOnce.Do(func() {
		c.lock()
		c.closed = true
		close(c.closedCh)
		listeners := c.listeners
		c.listeners = map[*listener[K, T]]struct{}{}
		c.unlock()
		for l := range listeners {
			l.halt()
		}
		c.ctl.Lock()
		sub, stop, done := c.sub, c.stopLoop, c.loopDone
		c.ctl.Unlock()
		if stop != nil {
			close(stop)
			<-done
		}
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		c.listenWG.Wait()
	})
	return nil
}

// ByTime builds an Options.Stale from a version timestamp such as Directus's
// date_updated: an incoming row older than the current one is stale. Rows
// with a zero time are never stale.
func ByTime[T any](version func(T) time.Time) func(incoming, current T) bool {
	return func(incoming, current T) bool {
		in, cur := version(incoming), version(current)
		return !in.IsZero() && !cur.IsZero() && in.Before(cur)
	}
}
