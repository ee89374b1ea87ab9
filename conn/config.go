package conn

import (
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/e41af43e/directus-realtime/protocol"
)

// Defaults applied to zero fields of Config.
const (
	// DefaultReadLimit bounds one frame. An init of a large collection
	// arrives as one frame (100,000 small rows are about 6 MiB), so the
	// 32 KiB default of coder/websocket is far too small.
	DefaultReadLimit int64 = 64 << 20

	// DefaultDialTimeout bounds the TCP connect and the HTTP upgrade. A wrong
	// path is never answered by Directus, so the upgrade needs a deadline.
	DefaultDialTimeout = 10 * time.Second

	// DefaultAuthTimeout bounds the wait for an auth reply. Email/password
	// auth takes about 500 ms on the server (argon2); the others under 10 ms.
	DefaultAuthTimeout = 8 * time.Second

	// DefaultRequestTimeout bounds requests whose context has no deadline.
	// Directus sends no reply at all to some failing requests.
	DefaultRequestTimeout = 30 * time.Second

	// DefaultWriteTimeout bounds one frame write; a write stuck that long
	// means a dead link, and the session is replaced.
	DefaultWriteTimeout = 10 * time.Second

	// DefaultPingInterval is how long the connection may stay silent before
	// the client sends its own JSON ping. The server's heartbeat (30 s by
	// default) is answered separately, at once.
	DefaultPingInterval = 15 * time.Second

	// DefaultPingTimeout is how long after its ping the client waits for any
	// frame before it declares the link dead and reconnects.
	DefaultPingTimeout = 10 * time.Second

	// DefaultMaxPendingRequests caps requests waiting for a reply; further
	// requests wait for a free slot.
	DefaultMaxPendingRequests = 1024

	// DefaultSendQueue is the number of frames that may wait for the writer.
	DefaultSendQueue = 256

	// DefaultMaxHeldBytes bounds the subscription frames a session holds
	// back until its OnConnect hook has run (and, after TOKEN_EXPIRED, until
	// the re-authentication). Past it the session is dropped and replaced
	// rather than buffer a flood for as long as a hook or an auth reply
	// takes.
	DefaultMaxHeldBytes int64 = 64 << 20

	// DefaultCloseTimeout bounds how long Close waits for user callbacks
	// (OnStateChange, OnError, OnRefreshToken) that are still running.
	DefaultCloseTimeout = 10 * time.Second
)

// Config configures a Conn. The zero value of every field means its default;
// a nil *Config is not allowed because URL is required.
type Config struct {
	// URL is the Directus base URL, http(s)://host:port[/path], to which
	// "/websocket" is appended (with ws/wss), or a ws(s):// URL used as is.
	URL string

	// Auth selects the authentication mode and credentials.
	Auth Auth

	// Header is sent with the upgrade request. Do not set Origin unless it
	// is the server's own origin: Directus rejects foreign origins with 403.
	Header http.Header

	// HTTPClient performs the upgrade; set its Transport for custom TLS.
	// nil means http.DefaultClient. Its CheckRedirect is not used: see
	// FollowRedirects. When its Transport is an *http.Transport (or nil),
	// each upgrade uses a clone of it, so that the Conn holds the raw
	// connection and can always close a session at once; with another
	// RoundTripper a close of a dead link may take up to 10 s.
	HTTPClient *http.Client

	// FollowRedirects allows redirects of the upgrade request, but only to
	// the configured host and port and never from https to http, and
	// without the Referer header (which holds the token in strict mode).
	// By default no redirect is followed: Directus never redirects its
	// realtime endpoint, and the target of a redirect would receive the
	// credentials. A refused redirect is a *RedirectError.
	FollowRedirects bool

	// ReadLimit is the largest frame accepted, in bytes: 0 means
	// DefaultReadLimit, a negative value means no limit. A larger frame ends
	// the session with ErrFrameTooLarge and the Conn reconnects.
	ReadLimit int64

	DialTimeout    time.Duration // 0 means DefaultDialTimeout
	AuthTimeout    time.Duration // 0 means DefaultAuthTimeout
	RequestTimeout time.Duration // 0 means DefaultRequestTimeout
	WriteTimeout   time.Duration // 0 means DefaultWriteTimeout

	// PingInterval and PingTimeout drive liveness: after PingInterval
	// without any frame the client sends {"type":"ping"}; if still nothing
	// arrives within PingTimeout the session is dropped and replaced. JSON
	// pings are used because Directus never answers RFC 6455 pings.
	// 0 means the default; a negative PingInterval disables client pings.
	PingInterval time.Duration
	PingTimeout  time.Duration

	// Backoff paces reconnect attempts; the zero value means the defaults,
	// which never give up.
	Backoff Backoff

	// MaxPendingRequests caps requests awaiting replies (0 = default).
	MaxPendingRequests int
	// SendQueue is the capacity of the outgoing frame queue (0 = default).
	SendQueue int
	// MaxHeldBytes bounds the subscription frames held back while a session
	// gets ready (0 means DefaultMaxHeldBytes).
	MaxHeldBytes int64

	// SendRate paces the frames each session sends, in frames per second,
	// with bursts of at most SendBurst frames (0 means 1). 0, the default,
	// does not pace. Directus's rate limiter (RATE_LIMITER_ENABLED) counts
	// every frame a socket sends, pongs and auth included, against
	// RATE_LIMITER_POINTS per RATE_LIMITER_DURATION seconds, drops the
	// frames beyond them with REQUESTS_EXCEEDED and keeps the socket open;
	// a window of that duration sees at most SendBurst + SendRate×duration
	// frames from a session, so keep that under the points (e.g. 90% of
	// points/duration and a small burst) and the limiter never drops one.
	// Frames it drops anyway are handled: the writer pauses for the time
	// the server names, requests that may have been dropped are resent
	// (RateLimitedError), and the manager resubscribes what got no init.
	SendRate  float64
	SendBurst int

	// CloseTimeout bounds how long Close waits for callbacks still running
	// (0 means DefaultCloseTimeout). Callbacks still running then are
	// abandoned: their goroutine ends when they return, and nothing else is
	// delivered.
	CloseTimeout time.Duration

	// CrashOnPanic turns off the recovery of panics in callbacks (OnConnect,
	// OnSubscription, OnStateChange, OnError, OnRefreshToken, TokenSource).
	// By default a panic is recovered and reported to OnError as a
	// *protocol.PanicError with its stack, and the Conn goes on.
	CrashOnPanic bool

	// Logger receives debug and warning logs. nil means silent. Tokens and
	// passwords are never logged.
	Logger *slog.Logger

	// OnSubscription receives every subscription frame (type "subscription")
	// and every subscribe/unsubscribe error frame that carries a uid, in the
	// order the server sent them. It is called synchronously from the read
	// loop and must not block; the manager package is built on it. Frames of
	// a new session are held back until OnConnect has returned.
	OnSubscription func(*protocol.Message)

	// OnConnect runs after every successful connect, reconnect and re-auth
	// after TOKEN_EXPIRED, before any frame of the session is passed to
	// OnSubscription, in the Conn's own goroutine. It may send frames and
	// make requests on s but must not wait for subscription frames.
	OnConnect func(s *Session, reason ConnectReason)

	// OnStateChange is called for every state change, in order, from a
	// goroutine of its own: it may block or call the Conn.
	OnStateChange func(StateChange)

	// OnError receives errors that belong to no request: error frames
	// without uid (*protocol.ServerError), unusable frames
	// (*protocol.ProtocolError), failed reconnect attempts (once per run of
	// failures of one kind, not once per attempt), re-authentication
	// failures and recovered panics of callbacks (*protocol.PanicError). It
	// runs on a goroutine of its own, separate from OnStateChange's: a
	// blocked OnError delays no state change.
	OnError func(error)

	// OnRateLimited is called when the server's rate limiter
	// (RATE_LIMITER_ENABLED) dropped a frame and said to retry after d. The
	// Conn's writer pauses for d by itself and requests learn that they may
	// have been dropped (see RateLimitedError); the manager package uses it
	// to send again the subscribes the limiter dropped. Same goroutine as
	// OnError.
	OnRateLimited func(d time.Duration)

	// OnRefreshToken receives each new refresh token Directus hands out on
	// email/password and refresh-token auth (refresh tokens rotate), so that
	// a service can persist it. It runs on a goroutine of its own; when
	// tokens rotate faster than it returns, only the newest one is passed.
	OnRefreshToken func(token string)
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.ReadLimit == 0 {
		d.ReadLimit = DefaultReadLimit
	}
	setDuration(&d.DialTimeout, DefaultDialTimeout)
	setDuration(&d.AuthTimeout, DefaultAuthTimeout)
	setDuration(&d.RequestTimeout, DefaultRequestTimeout)
	setDuration(&d.WriteTimeout, DefaultWriteTimeout)
	setDuration(&d.PingInterval, DefaultPingInterval)
	setDuration(&d.PingTimeout, DefaultPingTimeout)
	if d.MaxPendingRequests <= 0 {
		d.MaxPendingRequests = DefaultMaxPendingRequests
	}
	if d.SendQueue <= 0 {
		d.SendQueue = DefaultSendQueue
	}
	if d.MaxHeldBytes <= 0 {
		d.MaxHeldBytes = DefaultMaxHeldBytes
	}
	if d.SendBurst == 0 {
		d.SendBurst = 1
	}
	setDuration(&d.CloseTimeout, DefaultCloseTimeout)
	d.Backoff = d.Backoff.withDefaults()
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return d
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// validate checks the config and returns the WebSocket URL without credentials.
func (c *Config) validate() (*url.URL, error) {
	if c.URL == "" {
		return nil, &protocol.ConfigError{Field: "URL", Reason: "required"}
	}
	u, err := websocketURL(c.URL)
	if err != nil {
		return nil, err
	}
	if err := c.Auth.validate(); err != nil {
		return nil, err
	}
	if err := c.Backoff.Validate("Backoff"); err != nil {
		return nil, err
	}
	if c.SendRate < 0 || math.IsNaN(c.SendRate) || math.IsInf(c.SendRate, 0) {
		return nil, &protocol.ConfigError{Field: "SendRate", Reason: "must be a finite number of frames per second, 0 for no pacing"}
	}
	if c.SendBurst < 0 {
		return nil, &protocol.ConfigError{Field: "SendBurst", Reason: "negative"}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"DialTimeout", c.DialTimeout}, {"AuthTimeout", c.AuthTimeout}, {"RequestTimeout", c.RequestTimeout},
		{"WriteTimeout", c.WriteTimeout}, {"PingTimeout", c.PingTimeout}, {"CloseTimeout", c.CloseTimeout}} {
		if d.v < 0 {
			return nil, &protocol.ConfigError{Field: d.name, Reason: "negative"}
		}
	}
	return u, nil
}

// websocketURL turns a Directus base URL into its realtime endpoint.
func websocketURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &protocol.ConfigError{Field: "URL", Reason: "not a URL"}
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http", "https":
		if u.Scheme == "http" {
			u.Scheme = "ws"
		} else {
			u.Scheme = "wss"
		}
		u.Path = strings.TrimRight(u.Path, "/") + "/websocket"
		u.RawPath = ""
	default:
		return nil, &protocol.ConfigError{Field: "URL", Reason: "scheme must be http, https, ws or wss"}
	}
	if u.Host == "" {
		return nil, &protocol.ConfigError{Field: "URL", Reason: "no host"}
	}
	if u.User != nil {
		return nil, &protocol.ConfigError{Field: "URL", Reason: "user info is not supported; use Auth"}
	}
	if u.Query().Has("access_token") {
		return nil, &protocol.ConfigError{Field: "URL", Reason: "put the access token in Auth, not in the URL"}
	}
	return u, nil
}
