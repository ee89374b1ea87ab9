// Package manager keeps subscriptions to a Directus server alive on one
// connection: the Go counterpart of the useDirectusRealtime composable, made
// for long-running services.
//
// A Manager owns one conn.Conn. Subscribe takes the composable's options
// (collection, query, item, event, uid, persistent) and a handlers.Handler,
// and returns once the subscription's init arrived. Subscriptions are
// persistent (they live until Unsubscribe or Close) or scoped: they end by
// themselves when the context given to Subscribe is done, which makes a
// request's context the natural scope, or when their Scope closes. Events
// is the iterator form: `for ev, err := range m.Events(ctx, opts)` is a
// subscription that lasts as long as the loop, with the loop body as its
// handler.
//
// # Guarantees
//
//   - Each subscription's handler receives its events in the order the server
//     sent them, one at a time, from a goroutine of the subscription that
//     stays parked between events of a steady stream and exits after a second
//     without any. Handlers of different subscriptions run concurrently: a
//     slow handler does not hold up another subscription's events while its
//     queue has room.
//   - A subscription's queue is bounded in events and in bytes
//     (Options.QueueSize, QueueBytes). When it is full, the connection's read
//     loop waits at most Options.OverflowWait (100 ms by default) for the
//     handler to take an event: a handler that keeps up on average rides out
//     a burst with backpressure on the server. If the handler makes no room
//     in that time, the queued events are discarded, Stats.Overflows is
//     incremented, the subscription turns StateStalled and a *StallError is
//     reported once to OnError; events are dropped until the handler returns,
//     and then (after the Retry backoff) it receives a fresh init with
//     Resync set, which replaces what was discarded. A stuck handler costs the
//     server nothing while it is stuck, and delays the other subscriptions by
//     at most one OverflowWait per overflow (none with a negative
//     OverflowWait). Events are never dropped without that init following.
//   - After every reconnect, Reconnect, and re-authentication after
//     TOKEN_EXPIRED, each live subscription is restored exactly once, before
//     any event of the new session is routed, and its handler receives the
//     fresh init with Resync set. (A proactive token refresh loses nothing
//     and restores nothing.)
//   - Duplicate uids are refused without a race: a second Subscribe with a
//     live uid makes no server subscription, does not attach its handler and
//     returns a *DuplicateError (with the existing subscription when the
//     options are the same, and naming what differs when they are not).
//   - Identical subscriptions (same collection, query, item and event) share
//     one server subscription, reference-counted; each keeps its own uid,
//     handler, queue and counters. A newcomer gets its own init by an items
//     read of the same query, for it alone: the others see nothing of the
//     join and lose no event. Subscription.Resync works the same way.
//   - Error frames with a uid reach their subscription: the refusal of a
//     subscribe fails Subscribe with a *protocol.ServerError; per-event errors
//     (Directus's FORBIDDEN for an item the identity cannot read) arrive as
//     handlers.KindError events and do not end the subscription. Errors
//     without uid go to the Config's OnError.
//   - An unsubscribe frame is never sent without a uid: Directus would drop
//     every subscription of the connection.
//   - Subscribe and unsubscribe frames reach the wire in registry order,
//     through an outbox that never makes a caller wait for the writer, and
//     at most Options.MaxInFlight subscribes await their answer at once.
//     Frames sent through SendMessage, Request or Items may overtake them.
//   - Every retry backs off: a handler that keeps falling behind or
//     panicking, a resync read that fails, a subscribe without init in time
//     (InitTimeout, then longer), subscribes the server's rate limiter may
//     have dropped: each goes through Options.Retry, a jittered exponential
//     backoff with a cap that only a minute without trouble resets.
//   - A handler that panics does not take the process down: the panic is
//     recovered and reported to OnError as a *protocol.PanicError with its
//     stack, the subscription's queued events are discarded and it is
//     resynced after the Retry backoff (Options.CrashOnPanic turns recovery
//     off). A nil handler, typed or not, is refused by Subscribe.
//
// What is not guaranteed: Directus itself has no resume token, so events the
// server emitted while the connection was down are not replayed; the resync
// init carries the resulting state instead. Event-only subscriptions have no
// state to resync (their init has no data), so events missed while down or
// discarded by an overflow are lost, and counted. Directus dispatches events
// concurrently: two events of one row, or an event and a resync read, may
// reach the client in the other order than they happened (the store
// package's Stale guard covers this for replicas). The store package builds
// replicas that stay equal to the server on top of these guarantees.
//
// # Concurrency
//
// All methods are safe for concurrent use, including from handlers (Flush
// and Resync excepted on the subscription's own handler, which would wait
// for itself). Close waits for running handlers to return, at most
// Options.CloseTimeout, and leaves no goroutine behind except those of
// handlers it reports as abandoned; called from a handler, it does not wait
// for that handler.
package manager
