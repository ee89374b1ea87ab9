// Package conn is one logical connection to the realtime WebSocket endpoint
// of a Directus server (its "/websocket" path), kept up for as long as the
// program wants it.
//
// A Conn dials with github.com/coder/websocket, authenticates in the server's
// mode (public, handshake with a static token, a JWT, email and password or a
// refresh token, or strict with the token in the upgrade URL), and then:
//
//   - answers the server's JSON {"type":"ping"} at once, and sends its own
//     JSON ping after PingInterval of silence; if nothing at all arrives
//     within PingTimeout after that, the session is dropped and replaced.
//     RFC 6455 ping frames are never used: Directus does not answer them.
//   - re-authenticates when the server sends TOKEN_EXPIRED, well inside the
//     server's auth timeout, without dropping the connection or its
//     subscriptions; and, when the expiry is known (a JWT's exp, or a
//     lifetime of at least 10 s learned from an earlier TOKEN_EXPIRED),
//     before it happens. Refresh tokens rotate; the newest one is always
//     used.
//   - replaces a lost session after a jittered exponential backoff (0.8 s
//     doubling to 30 s by default, reset after two healthy minutes) and never
//     gives up unless Backoff.MaxAttempts is set.
//   - correlates replies to requests (auth, items, ping) by uid: replies come
//     back in any order, and some requests never get one, so every request is
//     bounded by a timeout and fails with ErrTimeout.
//
// # Guarantees
//
// Subscription frames reach Config.OnSubscription in the order the server
// sent them, from a single goroutine. After every connect, reconnect and
// re-authentication following TOKEN_EXPIRED, Config.OnConnect runs before
// any further subscription frame of that session is delivered: this is where
// the manager package restores its subscriptions. Frames of one session are
// all delivered before OnConnect runs for the next one.
//
// Nothing the network sends makes the package panic. Frames that cannot be
// used are reported as *ProtocolError to Config.OnError and skipped; a frame
// above Config.ReadLimit ends the session with ErrFrameTooLarge; more than
// 16 MiB of subscription frames held back outside OnConnect (during the
// handshake, or between TOKEN_EXPIRED and re-authentication) end it with a
// *ProtocolError rather than grow memory until the auth reply; error frames
// without uid go to OnError as *ServerError; frames of unknown types are
// ignored, as Directus itself ignores them. Tokens and passwords never appear
// in an error string or a log line: Auth and AuthMessage redact themselves,
// and dial errors in strict mode are rebuilt without the URL's token.
//
// What is not guaranteed: a frame queued by Send is not known to be written
// (use a request for an acknowledgement), and events the server emitted
// while no session was up, or between TOKEN_EXPIRED and re-authentication,
// are lost at this level. The manager and store packages recover them by
// resubscribing, which yields a fresh init.
//
// # Concurrency
//
// All methods of Conn and Session are safe for concurrent use. Each Conn runs
// one supervisor goroutine, one goroutine for OnStateChange, OnError and
// OnRefreshToken callbacks (which may block and may call the Conn), and per
// session a reader, a writer and a heartbeat goroutine. Close waits for all
// of them.
package conn
