// Package store keeps typed in-memory replicas of Directus collections:
// a Collection[K, T] holds the rows one subscription selects, keyed by
// primary key, and applies that subscription's events.
//
// Directus gives a replica little to stand on: no resume token or version,
// no order guarantee, no event when an item leaves a filter (a replica
// follows those itself, below), deletes that
// ignore the filter, a window between a subscription's init and its
// registration, and writes that emit no event at all (Flows without "emit
// events", raw SQL). The contract below is what a Collection builds on top,
// in the manner of client-go's SharedInformer.
//
// # Applying events
//
// An init replaces the contents: keys absent from it are deleted, changed
// rows updated, new ones added, in one step. A create or update upserts (an
// update of an unknown key is an add: the item entered the filter). A
// delete removes the keys present and ignores the others (Directus sends
// deletes to every subscription of the collection). Keys arrive as JSON
// strings or numbers and are converted to K. Single-item subscriptions
// (object data, a bare delete key) work the same. With Options.Stale set, a
// row the guard says is older than the one held is not applied. Rows and
// keys that do not decode are skipped and counted; an init in which not one
// row decodes is skipped whole (the rows are kept, and the next reconcile
// comes at once) rather than emptying the replica.
//
// # What a reader sees
//
// Get, Len, Range, List, Keys, Snapshot and the index queries are safe from
// any goroutine at any time. Each answers from one state: an event (an init,
// or a batch update of many rows) is applied entirely or not at all, and
// the indexes always agree with the rows. Range holds that state for its
// duration. A reader may see a state older than the server's, never a mix
// of two states.
//
// # What a listener hears
//
// Each listener receives changes (add, update, delete, with the old and new
// row) in the order they were applied, from its own goroutine, after the
// rows and indexes show them. A listener added late first hears an add for
// every row present. Changes of the first init are marked Initial, those of
// later inits Resync. Unchanged rows produce no change. A listener that
// falls more than Options.ListenerQueue changes (or ListenerBytes of rows)
// behind gets one OpReset in place of its backlog and should re-read the
// collection. A listener that panics is recovered and reported to
// Options.OnError, and hears the next change. Listeners of one
// collection are independent of each other: no ordering holds between them.
//
// # How long the replica can differ from the server
//
// For every key, the sequence of rows the replica holds is a subsequence of
// the rows the server held, in order, as long as Directus delivers a
// subscription's events in commit order (the embedded server directustest
// always does; a real Directus dispatches events concurrently and may
// reorder two events of one row within milliseconds, which Options.Stale
// with a version field such as date_updated guards against). Divergence
// lasts:
//
//   - for a change that produced an event: until the event is applied,
//     normally milliseconds;
//   - across a reconnect, a re-authentication after TOKEN_EXPIRED or a
//     subscription queue overflow: until the fresh init that the manager
//     requests automatically is applied;
//   - for an item that left a filter the replica cannot follow (below), a
//     write that emitted no event, an event Directus replaced by an error
//     frame, and a write that fell into
//     Directus's window between an init and its registration: until the next
//     reconcile (Options.ReconcileInterval, or Reconcile on demand; an error
//     event brings the next reconcile forward, as soon as Options.Retry
//     allows).
//
// # Rows that leave the filter
//
// Directus re-reads an updated row through each subscription's filter and
// sends nothing when it no longer matches. A filtered replica (without Item)
// therefore also subscribes, on the same manager and before its own
// subscription, to the collection's updates without filter, with fields
// limited to the primary key and the fields the filter reads; replicas whose
// filters read the same fields share that one server subscription. It
// evaluates its filter on each of those rows (internal/filter) and removes
// at once a row it holds that surely no longer matches: listeners hear an
// OpDelete with FilterExit set. A row entering the filter needs nothing: the
// replica's own subscription sends an update for it (docs/PROTOCOL.md §5.2).
// The two subscriptions are handled by two goroutines, ordered by when
// their frames arrived: an exit received before the update or init that
// last showed the row is ignored, so a row that left and came back stays;
// and an update or init of the replica's own that arrived before an exit
// already applied is not applied to that row, so a row that came in and
// left again stays out (the replica remembers up to 65,536 such exits while
// its own events lag behind the companion's). That relies on the frames' order on the
// connection; a real Directus, which dispatches events concurrently, may
// send the re-entry's update before the exit's (two writes of one row
// within milliseconds), and the row is then missing until its next update
// or reconcile.
//
// This is exact within one event for filters on the row's own fields with
// _eq (and bare values), _neq, _in, _nin, _lt, _lte, _gt, _gte, _between,
// _nbetween, _null, _nnull, _empty, _nempty, _contains, _ncontains,
// _icontains, _nicontains, the _starts_with and _ends_with families, _and and
// _or, numbers given as strings included ({"_gt": "5"} on an integer field),
// with SQL's null semantics (a null field matches only _null, _empty and
// _eq null: not _neq, _nin or _ncontains). Where the database decides, the
// evaluator answers "unknown" and the row waits for reconcile rather than
// risk a wrong removal: a case-sensitive string operator whose answer
// changes with ASCII case (SQLite's LIKE ignores it, Postgres's does not),
// %, _ or \ in a LIKE needle, a string row compared with a number, ordering
// comparisons that a non-binary collation may answer otherwise, values that
// look like dates or times, JSON fields, and a field the update's row lacks.
//
// A filter the evaluator cannot read at all makes the replica leave every
// exit to reconcile, which it says once (logged at info with a reconcile
// interval, warn without) and in Status().FilterExitsReason: relational
// paths (author.name, nested objects), _some and _none, variables ($NOW,
// $CURRENT_USER, $CURRENT_ROLE, any operand starting with $), functions such
// as year(date), _regex, geometry operators and unknown operators; so does a
// single-item subscription. Options.FilterExits turns the companion off
// (FilterExitsOff) or makes Subscribe refuse a filter it cannot follow
// (FilterExitsRequired). Exits the companion may have missed (its error
// events, an overflow of its queue) bring a reconcile forward, paced by
// Options.Retry, even without a reconcile interval; after a reconnect the
// companion is registered before the replica's own subscription again, whose
// fresh init covers the gap.
//
// Without a reconcile interval, divergence of the last kind lasts until the
// next resync of any cause. After every reconcile that completes without
// concurrent writes, the replica equals the server's rows for its query. A
// reconcile is a read of the query for this replica alone (other
// subscriptions sharing its server subscription are not disturbed).
//
// # When the server cannot be followed
//
// A reconcile the server refuses (FORBIDDEN: the identity lost read
// permission, or the item of a single-item subscription is gone, maybe
// deleted by keys Directus never matches against the item) empties the
// replica; an init in which not one row decodes into T keeps the rows held.
// Either way Status().Err says so (a *FailureError matching ErrRefused or
// ErrUndecodable, with the time it began), the condition is reported once
// (OnError for a refusal, the manager's OnError for rows that do not decode),
// and the replica keeps trying at the pace of Options.Retry: however many
// error events arrive, at most one reconcile per backoff step runs, 1 s
// doubling to 5 minutes by default. The first success clears the failure.
// A first init in which no row decodes fails Subscribe instead.
//
// # Queries
//
// Subscribe defaults the query to every row (limit -1; Directus would
// apply its default of 100) and refuses queries a replica cannot follow:
// event-only subscriptions, offset and page, fields without the primary
// key, and a sort with a positive limit (read such a window through a
// View, below). A positive limit without a sort is accepted with a warning.
//
// # Sorted windows
//
// A View (NewView) reads a Collection as its first N rows in an order: a
// leaderboard, the latest 20 posts. Directus cannot keep such a window for
// a replica: it applies a subscription's sort and limit to the init only, so
// events bring changed rows inside the window or not, and nothing tells
// which row takes the place of one that left; Subscribe refuses the query.
// A View is instead kept over a
// replica of the whole (filtered) set, and its window is exact: after every
// applied event it equals the collection's rows sorted by the view's
// comparison, ties broken by key, cut to N.
//
// The window is updated while the event applies, under the collection's
// lock, so it shares the collection's atomicity: View.Rows answers from the
// same state as Get or Range would at that moment (inside Range, from the
// state Range holds), and never shows half an event. View.Changes yields
// the window each time an event changes it (rows that entered, left, moved
// or changed), coalesced for a slow reader rather than queued, with the
// keys that entered and the rows that left since the window yielded
// before. A view costs O(log n + N) per changed row, and a scan of the
// collection at most once per max(N, 256) rows leaving the window. The
// window is only as fresh as the replica under it: the divergence above
// applies to it unchanged.
//
// A Collection is also a plain handlers.Handler and can replicate any
// subscription it is given; Subscribe adds the query checks and reconcile.
package store
