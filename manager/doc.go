// Package manager keeps subscriptions to a Directus server alive on one
// connection: the Go counterpart of the useDirectusRealtime composable, made
// for long-running services.
//
// A Manager owns one conn.Conn. Subscribe takes the composable's options
// (collection, query, item, event, uid, persistent) and a handlers.Handler,
// and returns once the server's init arrived. Subscriptions are persistent
// (they live until Unsubscribe or Close) or scoped: they end by themselves
// when the context given to Subscribe is done, which makes a request's
// context the natural scope, or when their Scope closes.
//
// # Guarantees
//
//   - Each subscription's handler receives its events in the order the server
//     sent them, one at a time. Handlers of different subscriptions run
//     concurrently, each from its own queue: a slow handler does not hold up
//     another subscription's events while its queue has room.
//   - A subscription's queue is bounded (Options.QueueSize). When it is
//     full, the connection's read loop waits at most Options.OverflowWait
//     (100 ms by default) for the handler to take an event: a handler that
//     keeps up on average rides out a burst with backpressure on the server.
//     If the handler makes no room in that time, the queued events are
//     discarded, Stats.Overflows is incremented and the subscription is
//     resynced: the handler next receives a fresh init with Resync set, which
//     replaces what was discarded, and the read loop goes on at once for the
//     other subscriptions. A stuck handler thus delays the others by at most
//     one OverflowWait per overflow (none with a negative OverflowWait).
//     Events are never dropped without that init following.
//   - After every reconnect, Reconnect, and re-authentication after
//     TOKEN_EXPIRED, each live subscription is restored exactly once, before
//     any event of the new session is routed, and its handler receives the
//     fresh init with Resync set. (A proactive token refresh loses nothing
//     and restores nothing.)
//   - Duplicate uids are refused without a race: a second Subscribe with a
//     live uid makes no server subscription, does not attach its handler and
//     returns the existing subscription with a *DuplicateError.
//   - Identical subscriptions (same collection, query, item and event) share
//     one server subscription, reference-counted; each keeps its own uid,
//     handler, queue and counters. A newcomer to an existing server
//     subscription gets its own init by a resubscribe, which the others
//     receive as a resync.
//   - Error frames with a uid reach their subscription: the refusal of a
//     subscribe fails Subscribe with a *conn.ServerError; per-event errors
//     (Directus's FORBIDDEN for an item the identity cannot read) arrive as
//     handlers.KindError events and do not end the subscription. Errors
//     without uid go to the Config's OnError.
//   - An unsubscribe frame is never sent without a uid: Directus would drop
//     every subscription of the connection.
//
// What is not guaranteed: Directus itself has no resume token, so events the
// server emitted while the connection was down are not replayed; the resync
// init carries the resulting state instead. Event-only subscriptions have no
// state to resync (their init has no data), so events missed while down or
// discarded by an overflow are lost, and counted. The store package builds
// replicas that stay equal to the server on top of these guarantees.
//
// # Concurrency
//
// All methods are safe for concurrent use, including from handlers. Each
// subscription delivers from a goroutine that exists only while events are
// queued. Close waits for running handlers to return and leaves no
// goroutine behind.
package manager
