package conn

import (
	"log/slog"
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
	// nil means http.DefaultClient.
	HTTPClient *http.Client

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
	// without uid (*ServerError), unusable frames (*ProtocolError), failed
	// reconnect attempts and re-authentication failures. Same goroutine as
	// OnStateChange.
	OnError func(error)

	// OnRefreshToken receives each new refresh token Directus hands out on
	// email/password and refresh-token auth (refresh tokens rotate), so that
	// a service can persist it. Same goroutine as OnStateChange.
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
