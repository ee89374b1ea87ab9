package directustest

import (
	"encoding/json"
	"log/slog"
	"time"
)

// Credentials of the seeded data model. They are identical to the ones the
// project's script for a real Directus seeds, so a test can switch between
// this server and a real one without changing its credentials.
const (
	// AdminEmail is the e-mail address of the seeded admin user.
	AdminEmail = "admin@example.com"
	// AdminPassword is the password of the seeded admin user.
	AdminPassword = "d1r3ctus"
	// AdminToken is the static token of the seeded admin user.
	AdminToken = "admin-static-token-d1r3ctus"
	// ReaderEmail is the e-mail address of the seeded non-admin user, which
	// may read posts and nothing else.
	ReaderEmail = "reader@example.com"
	// ReaderPassword is the password of the seeded reader user.
	ReaderPassword = "r3ader-pass"
	// ReaderToken is the static token of the seeded reader user.
	ReaderToken = "reader-static-token"
)

// AuthMode is the authentication mode of the WebSocket endpoint, the value of
// Directus' WEBSOCKETS_REST_AUTH.
type AuthMode string

const (
	// AuthHandshake (the default) accepts the upgrade without a token and
	// requires an auth frame as the first message, within Options.AuthTimeout.
	AuthHandshake AuthMode = "handshake"
	// AuthPublic accepts every connection with the Public role; an auth frame
	// can upgrade it at any time and a failed one does not close it.
	AuthPublic AuthMode = "public"
	// AuthStrict requires the token at upgrade time (?access_token=); an
	// upgrade without one gets HTTP 401.
	AuthStrict AuthMode = "strict"
)

// Default values of Options.
const (
	DefaultAuthTimeout     = 10 * time.Second
	DefaultHeartbeatPeriod = 30 * time.Second
	DefaultAccessTokenTTL  = 15 * time.Minute
	DefaultQueryLimit      = 100
	DefaultPath            = "/websocket"
	DefaultGraphQLPath     = "/graphql"
	refreshTokenTTL        = 7 * 24 * time.Hour
	maxInboundMessage      = 64 << 20
	restartDowntime        = 50 * time.Millisecond
	reorderGrace           = 5 * time.Millisecond
)

// Options configures a Server. A nil *Options, and every zero field, means
// the default, which is the default of a real Directus 12.4.1.
type Options struct {
	// AuthMode is WEBSOCKETS_REST_AUTH. Default AuthHandshake.
	AuthMode AuthMode
	// AuthTimeout is WEBSOCKETS_REST_AUTH_TIMEOUT: the time allowed for the
	// first auth frame in handshake mode, and for re-authentication after
	// TOKEN_EXPIRED. Default 10s.
	AuthTimeout time.Duration
	// HeartbeatPeriod is WEBSOCKETS_HEARTBEAT_PERIOD. Default 30s; a negative
	// value disables the heartbeat (WEBSOCKETS_HEARTBEAT_ENABLED=false).
	HeartbeatPeriod time.Duration
	// AccessTokenTTL is ACCESS_TOKEN_TTL, the lifetime of the JWTs issued by
	// login and refresh (REST and WebSocket). Default 15m.
	AccessTokenTTL time.Duration
	// RateLimit is RATE_LIMITER_ENABLED with RATE_LIMITER_POINTS and
	// RATE_LIMITER_DURATION for WebSocket frames; the zero value is off.
	RateLimit RateLimit
	// ConnLimit is WEBSOCKETS_REST_CONN_LIMIT. 0 means unlimited; when
	// ConnLimit sockets are open further upgrades get HTTP 403.
	ConnLimit int
	// DefaultLimit is QUERY_LIMIT_DEFAULT, the row limit of reads that do
	// not set one (subscription init, items read, REST list). Default 100.
	DefaultLimit int
	// Path is WEBSOCKETS_REST_PATH. Default "/websocket". Upgrade requests
	// on any other path are never answered.
	Path string
	// GraphQL serves the GraphQL subscriptions endpoint (graphql-ws, the
	// graphql-transport-ws subprotocol) on GraphQLPath, as
	// WEBSOCKETS_GRAPHQL_ENABLED does (docs/PROTOCOL.md §13). Off by
	// default here (on in Directus) so that existing tests see no change.
	GraphQL bool
	// GraphQLPath is WEBSOCKETS_GRAPHQL_PATH. Default "/graphql".
	GraphQLPath string
	// GraphQLAuthMode is WEBSOCKETS_GRAPHQL_AUTH. Default AuthHandshake:
	// the connection_init payload must carry access_token.
	GraphQLAuthMode AuthMode
	// Empty starts the server without the seeded collections and without the
	// reader user; only the admin user and its static token exist.
	Empty bool
	// Logger receives debug and error logs. nil means silent. Tokens and
	// passwords are never logged.
	Logger *slog.Logger
	// OnFrame, when set, is called synchronously for every WebSocket data
	// frame the server reads (Inbound) or writes, on that connection's reader
	// or writer goroutine with no lock held. It must be fast and must not
	// call Close, Stop, Restart or DropConnections (they wait for those
	// goroutines). Frames lost to Stall are not reported.
	OnFrame func(Frame)
}

// Frame is one WebSocket data frame seen by Options.OnFrame.
type Frame struct {
	// Conn identifies the connection (the same id as SubscriptionInfo.Conn).
	Conn int64
	// Inbound is true for frames sent by the client.
	Inbound bool
	// Data is the frame payload. It must not be modified.
	Data []byte
	// Time is when the frame was read or written.
	Time time.Time
}

// SubscriptionInfo describes one registered subscription (see
// Server.Subscriptions).
type SubscriptionInfo struct {
	// Conn is the id of the connection that owns it.
	Conn int64
	// UID is the subscription uid as Directus stores it (String(uid)), ""
	// when the client sent none.
	UID string
	// Collection is the subscribed collection.
	Collection string
	// Query is the query object as sent, nil when none was sent.
	Query json.RawMessage
	// Item is String(item) for single-item subscriptions, "" otherwise.
	Item string
	// Event is "create", "update" or "delete" for event-only subscriptions,
	// "" otherwise.
	Event string
}

// withDefaults returns a copy of o with the defaults filled in.
func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.AuthMode == "" {
		r.AuthMode = AuthHandshake
	}
	if r.AuthTimeout <= 0 {
		r.AuthTimeout = DefaultAuthTimeout
	}
	if r.HeartbeatPeriod == 0 {
		r.HeartbeatPeriod = DefaultHeartbeatPeriod
	}
	if r.AccessTokenTTL <= 0 {
		r.AccessTokenTTL = DefaultAccessTokenTTL
	}
	if r.DefaultLimit == 0 {
		r.DefaultLimit = DefaultQueryLimit
	}
	if r.Path == "" {
		r.Path = DefaultPath
	}
	if r.GraphQLPath == "" {
		r.GraphQLPath = DefaultGraphQLPath
	}
	if r.GraphQLAuthMode == "" {
		r.GraphQLAuthMode = AuthHandshake
	}
	return r
}
