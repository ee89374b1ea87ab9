// Package conformance holds no code, only tests: a suite that runs the
// scenarios of the project's protocol notes (docs/PROTOCOL.md: auth H*, modes T*
// and Q*, subscriptions S* and U*, events R*, permissions P*, expiry X*,
// heartbeat HB, shutdown Z*) with this library — conn, manager, handlers
// and store, never raw sockets — against a target server, and checks that
// the library keeps its promises there and that directustest behaves like
// the real server.
//
// Every test has two subtests that share one scenario function:
//
//   - "directustest" always runs, in an ordinary `go test ./...`. It starts
//     one in-process directustest server per profile the scenario needs,
//     with the options of the real profile.
//   - "directus" runs against a real Directus 12 when the environment names
//     one, and is skipped otherwise (it fails instead when REQUIRE_DIRECTUS=1,
//     also when a profile it needs is missing).
//
// A scenario sees its target through the Target interface: the server of
// each profile (URL, settings, an admin REST client, Reset, Restart,
// Kill9AndRestart), and the seeded credentials. Clients record the frames
// they exchange (Wire, through conn.Config.HTTPClient) so that scenarios can
// check what went over the wire, e.g. that the manager never sends an
// unsubscribe without uid.
//
// # Profiles and scenarios
//
//	profile  server settings                                         scenarios
//	default  handshake auth, Directus defaults                       TestAuthForms, TestAuthFailures, TestPermissions,
//	                                                                 TestSubscriptionLifecycle, TestEvents, TestSingleItem,
//	                                                                 TestFilterExit, TestFilterExits, TestQuietWrites (directustest only),
//	                                                                 TestRestartDuringWrites, TestSoak; over /graphql:
//	                                                                 TestGraphQLAuth, TestGraphQLLimits, TestGraphQLEvents,
//	                                                                 TestGraphQLWire, TestGraphQLReplicaRestart
//	short    handshake, heartbeat 3 s, ACCESS_TOKEN_TTL 15s,          TestTokenExpiry, TestHeartbeat, TestGraphQLTokenLifetime
//	         auth timeout 5 s
//	strict   strict auth (token at the HTTP upgrade)                 TestStrictMode
//	public   public auth (unauthenticated sockets are the Public role) TestPublicMode
//
// TestRestartDuringWrites and the kill -9 part of TestSoak restart the server
// process: against a real Directus only when scripts/directus started it
// (a pid file under $DIRECTUS_HOME/run for its port), through
// `SIGNAL=KILL scripts/directus/restart.sh <port>`.
//
// # Environment
//
// scripts/directus/ci.sh starts the five profiles on ports 8055-8059 and
// writes an env file with DIRECTUS_URL_DEFAULT, DIRECTUS_URL_SHORT,
// DIRECTUS_URL_STRICT, DIRECTUS_URL_PUBLIC, DIRECTUS_URL_LIMITED (the rate
// limiter on: 200 messages per second), DIRECTUS_ADMIN_TOKEN,
// DIRECTUS_READER_TOKEN, DIRECTUS_ADMIN_EMAIL and DIRECTUS_ADMIN_PASSWORD:
//
//	env_file=$(scripts/directus/ci.sh) && . "$env_file" &&
//	  REQUIRE_DIRECTUS=1 go test -race -count=1 ./conformance/
//
// Your own Directus: when no DIRECTUS_URL_<PROFILE> is set, DIRECTUS_URL
// names one server, seeded with scripts/directus/seed.mjs (see
// scripts/directus/README.md). The suite reads its auth mode and heartbeat
// from GET /server/info and its token lifetime from a login, and runs the
// scenarios of the matching profile: default for handshake mode (plus the
// short profile's when the heartbeat is at most 10 s and ACCESS_TOKEN_TTL at
// most a minute), strict or public. The others are skipped. Scenarios that
// need the reader skip without DIRECTUS_READER_TOKEN, those that log in
// without DIRECTUS_ADMIN_EMAIL and DIRECTUS_ADMIN_PASSWORD.
//
// CONFORMANCE_SOAK sets the soak's duration against a real server (default
// 75s; restarts come on top); CONFORMANCE_DEBUG=1 logs the library's debug
// output; CONFORMANCE_WIRE_DIR=dir appends every client's frames to a file
// per test in dir, to compare what the two targets sent in one scenario.
//
// Scenarios start from a clean slate: Reset deletes every row of posts and
// tags. Point the suite only at a server whose data you can lose.
package conformance
