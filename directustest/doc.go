// Package directustest provides an in-process server that speaks the
// realtime WebSocket protocol of Directus (the REST-style endpoint,
// /websocket), plus the small part of the REST API needed to drive it. It is
// to a Directus client what net/http/httptest is to an HTTP client: tests,
// examples and benchmarks run against it instead of a real Directus.
//
//	srv := directustest.NewServer(nil) // seeded: posts, tags, admin, reader
//	defer srv.Close()
//	// dial srv.WebSocketURL(), authenticate with directustest.AdminToken,
//	// subscribe; srv.Create("posts", ...) then emits the create events.
//
// # Reference
//
// The behaviour is that of Directus 12.4.1 as observed on a real server and
// recorded frame by frame in the repository (docs/PROTOCOL.md, and the raw
// frames in internal/transcript/transcript.txt). The package's tests replay every scenario of that
// transcript against this server and compare the frames byte for byte, after
// mapping only tokens, refresh tokens and UUIDs (integer ids are made equal
// by starting the auto-increment where the recording did).
//
// # What is faithful
//
//   - Endpoint and upgrade: only the exact Options.Path answers; an upgrade
//     on any other path is never answered (the request hangs until the
//     client gives up, Stop or Close). ?access_token= (static token or JWT)
//     authenticates at upgrade time in every mode, a bad one gets HTTP 401
//     with an empty body; strict mode without a token gets 401; a foreign
//     Origin header and a full Options.ConnLimit get 403.
//   - Authentication modes handshake, strict and public; the three auth forms
//     (access_token, email/password, refresh_token); refresh tokens that
//     rotate; the generic "Authentication handshake failed." without uid for
//     every handshake failure (including invalid JSON, a non-auth first frame
//     and the AuthTimeout) and "Authentication failed." with the uid for a
//     failed re-authentication; the close without status (the client sees
//     1005) except in public mode, which falls back to the Public role.
//   - Access tokens are HS256 JWTs with Directus' claims (id, role,
//     app_access, admin_access, iat, exp, iss="directus"). A connection
//     authenticated by a JWT, a login or a refresh gets TOKEN_EXPIRED at exp
//     (one-second resolution), continues with the Public role, keeps its
//     subscriptions (each event then yields a FORBIDDEN error frame per
//     subscription), and gets AUTH_TIMEOUT and a close after AuthTimeout
//     unless it re-authenticates. Static tokens never expire.
//   - uid handling: echoed with its JSON type on auth, pong, items and most
//     errors; always a string (String(uid)) on subscription frames; absent
//     from handshake failures, subscribe/unsubscribe schema errors and
//     "server" errors. The exact error codes and messages of the catalogue,
//     the field order of every frame, and silence for unknown message types.
//   - Heartbeat: one global timer while connections exist; every period each
//     connection past the handshake is sent {"type":"ping"}, and a connection
//     that sent no valid non-auth frame since the previous ping is closed
//     (1005) without an error frame. Auth frames and invalid JSON do not
//     count as an answer. RFC 6455 PING control frames are never answered.
//   - Subscriptions: init with an array (collection), an object (item) or no
//     data (event-only subscriptions, which skip the permission check);
//     QUERY_LIMIT_DEFAULT applies to the init; meta on every frame when the
//     query asks for it; a uid reused on a connection replaces the old
//     subscription; unsubscribe of an unknown uid is acknowledged and an
//     unsubscribe without uid removes every subscription of the connection.
//   - Events re-read the rows through the subscription's query with the
//     subscriber's current identity: one create frame per created item (a
//     batch is served subscription by subscription, each in key order, as
//     Directus does), one update frame per request with the rows that still
//     match, no frame at all for rows that do not match (no "leave" event),
//     deletes carrying the keys exactly as the request named them ("1521"
//     from a URL path, 1521 from a JSON body), unfiltered and not
//     permission-checked, also to subscriptions whose filter never matched
//     (but a FORBIDDEN error in place of the delete when the query asks for
//     meta and the identity cannot read the collection), and no frame for a
//     delete that names no key.
//   - Quirks reproduced on purpose: a single-item subscription stores
//     String(item) and compares it with === to the event keys, so updates
//     whose keys are JSON numbers never reach it (batch PATCH, WS items update
//     by numeric id, Server.Update with an int key); its delete data is the
//     bare key string. A missing id in items read is FORBIDDEN, not "not
//     found". The readMany of an event applies the subscription's limit,
//     offset and page. Values are stored as given, like SQLite (which the
//     reference recording used): {"views":"not-a-number"} is kept.
//   - items over WebSocket with every action and reply shape of the
//     reference, INVALID_COLLECTION for directus_* collections, FORBIDDEN for
//     unknown collections, missing ids and missing permissions. Replies to
//     create and update come after the events they caused, replies to delete
//     before them, as in the recording.
//   - Directus answers messages concurrently, so replies to pipelined
//     requests may come in any order; here a connection's messages are
//     handled one at a time, in order, which is one of the orders a client
//     must accept.
//   - With Options.GraphQL, the GraphQL subscriptions endpoint on
//     Options.GraphQLPath (docs/PROTOCOL.md §13): graphql-ws on the
//     graphql-transport-ws subprotocol, the token in connection_init or the
//     upgrade URL and its failures (4403, Directus's AUTH_FAILED frame then
//     4408 after 3 s), <collection>_mutated with its event argument and
//     GraphQL's validation messages, one next per key from the same event
//     fan-out as /websocket, string ids, no token expiry. Unlike Directus, a
//     subscribe is registered as soon as it is read, so the gap of §13.5
//     does not exist here; documents other than that one subscription
//     shape are refused.
//
// # What deliberately differs
//
//   - No database, no schema, no relations: collections are in-memory tables
//     of untyped, nullable fields (Collection), permissions are whole
//     collection read/create/update/delete flags per user and for the Public
//     role (Permission; exactly what Directus 12 allows without a license).
//     Filters support _eq _neq _lt _lte _gt _gte _in _nin _between
//     _nbetween _null _nnull _empty _nempty _contains _icontains
//     _starts_with _ends_with (and their i/n variants), _and and _or, with
//     SQL semantics (a NULL value matches no comparison, numeric strings
//     compare as numbers; _contains is case-sensitive). sort, limit (-1 =
//     all), offset, page and meta (total_count, filter_count, *) are
//     supported; deep, search, aggregate, groupBy and alias are ignored.
//   - No init/registration gap: Directus reads the init data and only then
//     registers the subscription, so a write in between is lost. Here the
//     init read and the registration happen atomically.
//   - No data race between events: every write and the queueing of all its
//     frames happen under one lock, so every connection sees events in
//     commit order (unless SetReorder is on). Directus dispatches events
//     concurrently and gives no such guarantee.
//   - Email/password authentication is instant (Directus spends about 500 ms
//     in argon2). A token expiring later than 15 minutes gets its timer at
//     exp directly (Directus re-checks every 15 minutes). The session cookie,
//     the rate limiter, GraphQL subscriptions, collaborative editing and the
//     logs endpoint are not implemented. Unhandled-exception silences (a
//     PostgreSQL type error gets no reply at all) are not simulated, except
//     that a panic while handling a frame is logged and the frame gets no
//     reply. System collections do not exist.
//   - REST is a subset: GET/POST/PATCH/DELETE /items/{collection}[/{id}],
//     POST /auth/login, /auth/refresh and /auth/logout, GET /server/ping,
//     /server/info and /server/health, with Directus' envelopes and errors.
//
// # Concurrency contract
//
// All methods of Server are safe for concurrent use. Each connection has its
// own reader goroutine and its own writer goroutine with an unbounded queue,
// so a client that stops reading blocks neither writes nor other clients
// (its queue grows instead). Writes (from Go, REST or WebSocket) take one
// server-wide lock during which the data changes and every resulting frame
// is queued; they never wait for network I/O. Options.OnFrame is called on
// the reader and writer goroutines without any lock held; it must not call
// Close. Close stops the listener, cuts every connection and returns only
// when every goroutine of the server has exited.
//
// # Fault controls
//
// DropConnections, RefuseConnections, Stop, Start and Restart simulate
// crashes and outages (clients see 1006 and ECONNREFUSED; the port never
// changes); Stall makes the server silent; SetFrameDelay, SetReorder and
// Inject disturb the outbound stream; ExpireTokens and IssueToken drive
// token expiry; SetHeartbeatPeriod changes the heartbeat at run time.
// ConnCount, WaitConns and Subscriptions observe the server without polling.
package directustest
