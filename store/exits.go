package store

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/filter"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// FilterExitMode says whether a filtered replica removes a row that left its
// filter at the update that moved it out (Options.FilterExits).
//
// Directus sends nothing to a subscription when an update makes a row stop
// matching its filter (docs/PROTOCOL.md §5.2). A replica in FilterExitsAuto
// therefore also subscribes, on the same manager, to the collection's
// updates without the filter, reading only the primary key and the fields
// the filter reads; identical such subscriptions of several replicas share
// one server subscription. It evaluates the filter on each updated row and
// removes, at once, the rows it holds that surely no longer match (a
// Change with FilterExit set). Rows that enter the filter need nothing:
// Directus sends the filtered subscription's own update for them.
type FilterExitMode uint8

const (
	// FilterExitsAuto, the default, follows filter exits when the filter
	// can be evaluated on a row's own fields (see the package
	// documentation), and otherwise leaves them to reconcile, saying so
	// once in the log and in Status.
	FilterExitsAuto FilterExitMode = iota
	// FilterExitsOff leaves filter exits to reconcile: one subscription
	// less, and no update of the collection reaches this process unless
	// it matches the filter.
	FilterExitsOff
	// FilterExitsRequired is FilterExitsAuto, except that Subscribe fails
	// with a *QueryError when the filter cannot be evaluated locally.
	FilterExitsRequired
	filterExitModes // the number of modes, for validation
)

// exitWatch is the handler of the companion subscription: the collection's
// updates, unfiltered, with the key and the fields the filter reads.
type exitWatch[K comparable, T any] struct {
	c *Collection[K, T]
	f *filter.Filter
	// sub is the companion subscription, once Subscribe returned it, and
	// overflows the count of its queue overflows last seen.
	sub       atomic.Pointer[manager.Subscription]
	overflows atomic.Uint64
}

// Handle evaluates the filter on each updated row. A row that does not
// decode, or for which the filter's answer is not a sure No, stays: only
// reconcile can correct what is uncertain.
func (w *exitWatch[K, T]) Handle(ev handlers.Event) error {
	c := w.c
	switch ev.Kind {
	case handlers.KindUpdate:
	case handlers.KindError:
		// A lost update may have moved a row out.
		c.errorEvents.Add(1)
		c.reconcileSoon()
		return nil
	case handlers.KindInit:
		// The init of an event-only subscription carries nothing. One
		// after a queue overflow follows lost updates, which only a
		// reconcile can stand for; after a reconnect, the replica's own
		// fresh init does (the companion is restored first).
		if sub := w.sub.Load(); sub != nil && ev.Resync {
			if n := sub.Stats().Overflows; n > w.overflows.Swap(n) {
				c.reconcileSoon()
			}
		}
		return nil
	default:
		return nil
	}
	c.exitChecks.Add(1)
	rows, err := handlers.Items[map[string]json.RawMessage](ev)
	if err != nil {
		c.badRows.Add(1)
		return err
	}
	var gone []K
	var errs []error
	for _, row := range rows {
		if w.f.MatchFields(row) != filter.No {
			continue
		}
		raw, ok := row[c.opts.KeyField]
		if !ok {
			continue
		}
		nk, err := handlers.NormalizeKey(raw)
		if err == nil {
			var k K
			if k, err = convertKey[K](nk); err == nil {
				gone = append(gone, k)
				continue
			}
		}
		c.badRows.Add(1)
		errs = append(errs, err)
	}
	if len(gone) > 0 {
		c.exit(gone, ev.Received)
	}
	c.appliedLocked() // WaitFor conditions may read Stats
	return errors.Join(errs...)
}

// exit removes the rows that left the filter, unless the replica heard of
// them after the update that said so: the companion's events and the
// replica's own arrive on two subscriptions, handled by two goroutines, so
// a later update that brought the row back (or a later init that holds it)
// may have been applied first. Received times order them, as frames of one
// connection are received in turn.
func (c *Collection[K, T]) exit(keys []K, at time.Time) {
	c.lock()
	defer c.unlock()
	if c.closed {
		return
	}
	if !c.initAt.Before(at) {
		return
	}
	var changes []Change[K, T]
	notify := len(c.listeners) > 0 || len(c.views) > 0
	n := 0
	for _, k := range keys {
		if c.mainAt.Before(at) {
			// The replica's own events lag this one: those still to
			// come that are older show the row before it left.
			c.tombLocked(k, at)
		}
		old, ok := c.rows[k]
		if !ok {
			continue
		}
		if seen, ok := c.seen[k]; ok && !seen.Before(at) {
			continue
		}
		c.deleteLocked(k)
		delete(c.seen, k)
		n++
		if notify {
			changes = append(changes, Change[K, T]{Op: OpDelete, Key: k, Old: old, FilterExit: true})
		}
	}
	if n == 0 {
		return
	}
	c.filterExits.Add(uint64(n))
	c.notifyLocked(changes)
}

// maxTombs bounds the exits remembered while the replica's own events lag
// behind the companion's; past it the oldest are forgotten (an event older
// than a forgotten exit may bring its row back until the next update or
// reconcile).
const maxTombs = 1 << 16

type tomb[K comparable] struct {
	k  K
	at time.Time
}

func (c *Collection[K, T]) tombLocked(k K, at time.Time) {
	if len(c.tombQ) >= maxTombs {
		c.dropTombLocked()
	}
	c.tombs[k] = at
	c.tombQ = append(c.tombQ, tomb[K]{k: k, at: at})
}

func (c *Collection[K, T]) dropTombLocked() {
	tb := c.tombQ[0]
	if c.tombs[tb.k] == tb.at {
		delete(c.tombs, tb.k)
	}
	c.tombQ[0] = tomb[K]{}
	c.tombQ = c.tombQ[1:]
}

// exitedLocked reports whether an event of the replica's own subscription
// that arrived at at is older than an exit of k: it shows the row before
// it left the filter.
func (c *Collection[K, T]) exitedLocked(k K, at time.Time) bool {
	t, ok := c.tombs[k]
	return ok && at.Before(t)
}

// advanceLocked records that the replica's own events arrived up to at,
// and forgets the exits they have caught up with.
func (c *Collection[K, T]) advanceLocked(at time.Time) {
	if c.seen == nil || !c.mainAt.Before(at) {
		return
	}
	c.mainAt = at
	for len(c.tombQ) > 0 && !c.tombQ[0].at.After(at) {
		c.dropTombLocked()
	}
}

// seenLocked records when the replica's own subscription last showed k
// (under lock); only kept while filter exits are followed.
func (c *Collection[K, T]) seenLocked(k K, at time.Time) {
	if c.seen != nil && !at.IsZero() {
		c.seen[k] = at
	}
}

// exitPlan decides whether a replica with query q follows filter exits: the
// filter it evaluates, or why not ("" when there is no filter to follow).
func (c *Collection[K, T]) exitPlan(opts manager.SubscribeOptions, q *protocol.Query) (*filter.Filter, string, error) {
	if len(q.Filter) == 0 {
		return nil, "", nil
	}
	if c.opts.FilterExits == FilterExitsOff {
		return nil, "Options.FilterExits is FilterExitsOff", nil
	}
	reason := ""
	var f *filter.Filter
	switch {
	case opts.Item != nil:
		reason = "a single-item subscription"
	default:
		var err error
		if f, err = filter.Parse(q.Filter); err != nil {
			reason = err.Error()
		}
	}
	if reason != "" && c.opts.FilterExits == FilterExitsRequired {
		return nil, reason, &QueryError{Reason: "Options.FilterExits is FilterExitsRequired, but filter exits cannot be followed: " + reason}
	}
	return f, reason, nil
}

// companionOptions is the companion subscription of a replica: updates of
// the collection, unfiltered, with only the key and the fields f reads.
// Sorted and without duplicates, so that replicas whose filters read the
// same fields share one server subscription.
func (c *Collection[K, T]) companionOptions(opts manager.SubscribeOptions, f *filter.Filter) manager.SubscribeOptions {
	fields := append([]string{c.opts.KeyField}, f.Fields()...)
	slices.Sort(fields)
	fields = slices.Compact(fields)
	return manager.SubscribeOptions{
		Collection: opts.Collection,
		Event:      protocol.EventUpdate,
		Query:      &protocol.Query{Fields: fields},
		Persistent: opts.Persistent,
		QueueSize:  opts.QueueSize,
		QueueBytes: opts.QueueBytes,
	}
}

// startExits subscribes the companion before the replica's own
// subscription, so that no update after the replica's first init goes
// unseen. It reports whether filter exits are followed. c.ctl is held.
func (c *Collection[K, T]) startExits(ctx context.Context, m *manager.Manager, opts manager.SubscribeOptions, f *filter.Filter) *manager.Subscription {
	c.lock()
	c.seen = make(map[K]time.Time)
	c.tombs = make(map[K]time.Time)
	c.unlock()
	w := &exitWatch[K, T]{c: c, f: f}
	comp, err := m.Subscribe(ctx, c.companionOptions(opts, f), w)
	if err == nil {
		w.sub.Store(comp)
	}
	if err != nil {
		c.lock()
		c.seen, c.tombs = nil, nil
		c.unlock()
		c.setExits(false, "the companion subscription failed: "+err.Error())
		return nil
	}
	c.setExits(true, "")
	return comp
}

// setExits records whether filter exits are followed, and says so once:
// this is called once per Subscribe.
func (c *Collection[K, T]) setExits(on bool, reason string) {
	c.statusMu.Lock()
	c.status.FilterExits, c.status.FilterExitsReason = on, reason
	c.statusMu.Unlock()
	switch {
	case on:
		c.log.Debug("rows that leave the filter are removed at the update that moves them out")
	case reason == "":
	case c.opts.ReconcileInterval > 0:
		c.log.Info("rows that leave the filter wait for the next reconcile", "reason", reason, "interval", c.opts.ReconcileInterval)
	default:
		c.log.Warn("rows that leave the filter stay until the next resync: no reconcile interval is set", "reason", reason)
	}
}

// endWith unsubscribes the companion when the replica's subscription ends,
// or when the collection closes.
func (c *Collection[K, T]) endWith(sub, comp *manager.Subscription) {
	c.listenWG.Add(1)
	go func() {
		defer c.listenWG.Done()
		select {
		case <-sub.Done():
		case <-c.closedCh:
		}
		_ = comp.Unsubscribe()
	}()
}
