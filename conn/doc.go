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
//     gives up unless Backoff.MaxAttempts is set. A 429 or 503 upgrade's
//     Retry-After is honoured (up to 10 minutes); a TOKEN_EXPIRED that comes
//     less than 10 s after an authentication takes the next backoff step
//     before the re-authentication.
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
// Credentials go to the configured host only: no redirect of the upgrade is
// followed unless Config.FollowRedirects, and then only to the same host
// and port, never from https to http, and without the Referer header.
//
// A condition no retry can mend ends the Conn once, in StateClosed with its
// cause, instead of looping: an expired JWT with nothing to renew it
// (ErrCredentialsExpired), and, on the first Connect, a rejection of the
// credentials or of the client (AUTH_FAILED, HTTP 401 or 403, a redirect,
// no credentials against a server that requires them: ErrAuthRequired) or
// of the server's TLS certificate by the client (unknown authority, wrong
// host name: errors.As finds the crypto/x509 error).
// Other failures are retried with backoff and reported to OnError once per
// run of failures of one kind, with one log line per attempt.
//
// Nothing the network sends makes the package panic. Frames that cannot be
// used are reported as *ProtocolError to Config.OnError and skipped; a frame
// above Config.ReadLimit ends the session with ErrFrameTooLarge; more than
// Config.MaxHeldBytes (64 MiB) of subscription frames held back while a
// session gets ready (during the handshake and the OnConnect hook, or
// between TOKEN_EXPIRED and re-authentication) end it with a
// *protocol.ProtocolError rather than grow memory; error frames without uid
// go to OnError as *protocol.ServerError; the rate limiter's
// REQUESTS_EXCEEDED pauses the writer for the delay it names, and a request
// it may have dropped is sent again when idempotent or fails with
// *RateLimitedError; frames of unknown types are ignored, as Directus
// itself ignores them. Tokens and passwords never appear
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
// one supervisor goroutine (which runs OnConnect), one goroutine for each of
// OnStateChange, OnError and OnRefreshToken (which may block and may call
// the Conn; a blocked one holds up only its own kind), and per session a
// reader (which runs OnSubscription), a writer and a heartbeat goroutine. A
// panic in any callback is recovered and reported as *protocol.PanicError
// unless Config.CrashOnPanic. Close waits for all of them, except the
// goroutine it is called from and callbacks still running after
// Config.CloseTimeout, which it abandons and names in its error.
package conn
