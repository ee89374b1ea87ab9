package graphql

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Defaults of Config.
const (
	DefaultPath         = "/graphql"
	DefaultPingInterval = 25 * time.Second
	DefaultPingTimeout  = 10 * time.Second
	// DefaultAckTimeout bounds the wait for connection_ack. Directus gives
	// up on a connection_init that does not arrive within 3 s.
	DefaultAckTimeout   = 10 * time.Second
	DefaultReadLimit    = 16 << 20
	DefaultQueueSize    = 1024
	DefaultQueueBytes   = 16 << 20
	DefaultCloseTimeout = 5 * time.Second
)

// Config configures a Manager. Zero fields mean their defaults.
type Config struct {
	// URL is the Directus server, http(s)://host[:port][/prefix]. The
	// WebSocket endpoint is URL+Path with the ws(s) scheme; logins and
	// snapshot reads go to URL over REST.
	URL string
	// Path is WEBSOCKETS_GRAPHQL_PATH, DefaultPath when empty.
	Path string

	// Auth holds the mode (WEBSOCKETS_GRAPHQL_AUTH) and the credentials,
	// as for conn.Config.Auth. The endpoint knows only access tokens:
	// Email/Password and RefreshToken are turned into one by REST
	// (/auth/login, /auth/refresh) before each session. In handshake mode
	// the token goes in the connection_init payload; in strict mode, and in
	// public mode with a credential, in the upgrade URL (Directus ignores
	// the payload in those modes).
	Auth conn.Auth

	// HTTPClient sends the upgrade and the REST requests. nil means a
	// client that follows no redirect: credentials go to the configured
	// host only. A client given here keeps its own redirect policy.
	HTTPClient *http.Client

	// Backoff paces the reconnects, as for conn.Config.Backoff.
	Backoff conn.Backoff

	// PingInterval is the silence after which a graphql-ws ping is sent;
	// PingTimeout how long after that the session may stay silent before
	// it is replaced.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// AckTimeout bounds the wait for connection_ack after connection_init.
	AckTimeout time.Duration
	// ReadLimit is the largest frame accepted, DefaultReadLimit when 0.
	ReadLimit int64

	// QueueSize and QueueBytes bound each subscription's pending events.
	QueueSize  int
	QueueBytes int64

	// CloseTimeout bounds how long Close waits for handlers still running.
	CloseTimeout time.Duration

	// OnStateChange and OnError are called from one goroutine each, in
	// order; they may block (holding up only their own kind) and may panic
	// (recovered, reported as *protocol.PanicError to OnError).
	OnStateChange func(conn.StateChange)
	OnError       func(error)

	// Logger receives debug and warning lines; nil is silent. Tokens and
	// passwords are never logged.
	Logger *slog.Logger
}

type settings struct {
	Config
	base  *url.URL // REST base, no trailing slash in Path
	wsURL *url.URL
	http  *http.Client
	log   *slog.Logger

	ownTransport *http.Transport // nil when Config.HTTPClient was given
}

func (c *Config) settings() (*settings, error) {
	if c == nil {
		return nil, &protocol.ConfigError{Field: "Config", Reason: "nil"}
	}
	s := &settings{Config: *c}
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return nil, &protocol.ConfigError{Field: "URL", Reason: "not an absolute URL"}
	}
	switch u.Scheme {
	case "http", "https":
	default:
		return nil, &protocol.ConfigError{Field: "URL", Reason: "scheme must be http or https"}
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, &protocol.ConfigError{Field: "URL", Reason: "no user info, query or fragment"}
	}
	u.Path = strings.TrimRight(u.Path, "/")
	s.base = u
	if s.Path == "" {
		s.Path = DefaultPath
	}
	if !strings.HasPrefix(s.Path, "/") {
		return nil, &protocol.ConfigError{Field: "Path", Reason: "must start with /"}
	}
	w := *u
	w.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	w.Path = u.Path + s.Path
	s.wsURL = &w
	if err := validateAuth(c.Auth); err != nil {
		return nil, err
	}
	if err := c.Backoff.Validate("Backoff"); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"PingInterval", &s.PingInterval, DefaultPingInterval},
		{"PingTimeout", &s.PingTimeout, DefaultPingTimeout},
		{"AckTimeout", &s.AckTimeout, DefaultAckTimeout},
		{"CloseTimeout", &s.CloseTimeout, DefaultCloseTimeout},
	} {
		if *d.v < 0 {
			return nil, &protocol.ConfigError{Field: d.name, Reason: "negative"}
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if s.ReadLimit <= 0 {
		s.ReadLimit = DefaultReadLimit
	}
	if s.QueueSize <= 0 {
		s.QueueSize = DefaultQueueSize
	}
	if s.QueueBytes <= 0 {
		s.QueueBytes = DefaultQueueBytes
	}
	s.http = c.HTTPClient
	if s.http == nil {
		// A transport of its own, so that Close can release its idle
		// connections.
		s.ownTransport = http.DefaultTransport.(*http.Transport).Clone()
		s.http = &http.Client{Transport: s.ownTransport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	s.log = c.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

func authMode(a conn.Auth) conn.AuthMode {
	if a.Mode != "" {
		return a.Mode
	}
	if hasCredentials(a) {
		return conn.AuthHandshake
	}
	return conn.AuthPublic
}

func hasCredentials(a conn.Auth) bool {
	return a.Token != "" || a.TokenSource != nil || a.RefreshToken != "" || a.Email != ""
}

func validateAuth(a conn.Auth) error {
	switch authMode(a) {
	case conn.AuthPublic:
	case conn.AuthHandshake, conn.AuthStrict:
		if !hasCredentials(a) {
			return &protocol.ConfigError{Field: "Auth", Reason: string(authMode(a)) + " mode needs a credential"}
		}
	default:
		return &protocol.ConfigError{Field: "Auth.Mode", Reason: "must be public, handshake or strict"}
	}
	if (a.Email == "") != (a.Password == "") {
		return &protocol.ConfigError{Field: "Auth", Reason: "Email and Password go together"}
	}
	return nil
}
