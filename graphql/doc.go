// Package graphql keeps subscriptions to the GraphQL realtime endpoint of a
// Directus server (its "/graphql" path, enabled by
// WEBSOCKETS_GRAPHQL_ENABLED, protocol graphql-ws with the
// graphql-transport-ws subprotocol) alive on one connection: the
// counterpart of package manager for deployments that turn the REST-style
// "/websocket" endpoint off.
//
// The protocol is implemented here on github.com/coder/websocket, as conn
// does for /websocket, rather than through a graphql-ws client library:
// none takes a context on every call, uses conn.Backoff for its reconnects
// and log/slog for its logging, and the protocol is six message types.
//
// A Manager dials, authenticates in connection_init (handshake mode) or in
// the upgrade URL (strict mode, and public mode with a credential), waits
// for connection_ack before it sends anything else (Directus closes with
// 4403 a frame that arrives while it authenticates), pings after
// Config.PingInterval of silence and replaces a session that stays silent
// Config.PingTimeout longer. Lost sessions are replaced after conn.Backoff's
// jittered exponential delay, reported through conn.State and
// conn.StateChange, and every live subscription is sent again on the new
// session under a fresh id (graphql-ws forbids reusing an active one). As
// graphql-ws acknowledges no subscribe, the Manager turns StateConnected,
// and Subscribe returns, once the server has answered a ping sent after the
// subscribes: it has then read them (docs/PROTOCOL.md §13.5).
// Credentials that the server refuses on the first connect end the Manager
// (StateClosed with the cause); later refusals are retried with backoff.
// A JWT whose exp has passed, with no TokenSource, RefreshToken or
// password to replace it, cannot heal: the endpoint sends no TOKEN_EXPIRED
// and keeps a live session's events flowing past exp (§13.2), but the next
// dial, or a replica's next snapshot read, ends with
// conn.ErrCredentialsExpired (the Manager closed, or the replica ended),
// reported once to OnError, and nothing is sent with that token again.
// Email/Password and RefreshToken are turned into an access token by REST
// (/auth/login, /auth/refresh) at the configured host, with no redirect
// followed by default.
//
// # What the endpoint can and cannot do (docs/PROTOCOL.md §13)
//
// A subscription is one <collection>_mutated field, optionally restricted
// to one event, with a selection of named fields. Events come one per key
// (a batch write of n rows is n events), updates re-read per key under the
// subscriber's permissions, deletes with the key only. There is no filter,
// no query, no single-item form and no init, and permission errors are
// swallowed by the server: Subscribe refuses Query (other than Fields),
// Item and Event init with an *UnsupportedError (errors.Is ErrUnsupported)
// rather than emulate them. GraphQL sends primary keys as strings.
//
// Replicate fills that gap for replicas: it subscribes first and buffers,
// reads the snapshot over REST, delivers it as a handlers.KindInit event and
// then the buffered and live events, so that a store.Collection fed by its
// Handle method works unchanged; the same happens after every reconnect
// (the init then has Resync set), and on ReconcileInterval, which also
// corrects rows that left the identity's permissions. Manager.Source is the
// same replica as a store.Source, for coll.Follow(ctx, m.Source(opts)).
// Because graphql-ws
// acknowledges no subscribe, a write made while the server is still
// setting a (re)sent subscription up may emit its event before the
// subscription listens: a snapshot read after it contains the write, but
// one read before it does not; ReconcileInterval bounds how long such a
// row can stay stale.
//
// # Guarantees
//
// Each subscription's handler receives its events in the order the server
// sent them, one at a time, on a goroutine of its own. Its queue is bounded
// in events and bytes; a handler that falls a whole queue behind loses the
// queued events: a replica re-reads its snapshot, a plain subscription gets
// one KindError event with ErrOverflow in their place, and an
// *OverflowError goes to OnError once per episode. A handler that panics is
// recovered (*protocol.PanicError to OnError); a replica then re-reads,
// paced by its Retry backoff. Nothing the network sends makes the package
// panic. Tokens and passwords never appear in an error or log line.
//
// # Concurrency
//
// All methods of Manager and Subscription are safe for concurrent use. A
// Manager runs one supervisor goroutine, per session a reader and a
// heartbeat goroutine, one goroutine per subscription for its handler, one
// for each of OnStateChange and OnError, and one per snapshot read. Close
// waits for all of them, abandoning handlers and callbacks still running
// after Config.CloseTimeout and saying so in its error.
package graphql
