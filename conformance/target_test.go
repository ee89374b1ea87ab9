package conformance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
)

// Profile names one server configuration of scripts/directus/ci.sh.
type Profile string

const (
	Default Profile = "default" // handshake auth, Directus defaults
	Short   Profile = "short"   // handshake, heartbeat 3 s, token TTL 15 s, auth timeout 5 s
	Strict  Profile = "strict"  // token at the HTTP upgrade
	Public  Profile = "public"  // unauthenticated sockets act as the Public role
	Limited Profile = "limited" // handshake, rate limiter on: 200 messages per second per socket
)

// Settings are a server's realtime settings.
type Settings struct {
	Mode        conn.AuthMode
	Heartbeat   time.Duration // WEBSOCKETS_HEARTBEAT_PERIOD; 0 when disabled
	TokenTTL    time.Duration // ACCESS_TOKEN_TTL
	AuthTimeout time.Duration // WEBSOCKETS_REST_AUTH_TIMEOUT
	// RateLimit is RATE_LIMITER_POINTS per RATE_LIMITER_DURATION when
	// RATE_LIMITER_ENABLED; the zero value when off.
	RateLimit directustest.RateLimit
}

// profiles are the settings ci.sh starts each profile with.
var profiles = map[Profile]Settings{
	Default: {Mode: conn.AuthHandshake, Heartbeat: 30 * time.Second, TokenTTL: 15 * time.Minute, AuthTimeout: 10 * time.Second},
	Short:   {Mode: conn.AuthHandshake, Heartbeat: 3 * time.Second, TokenTTL: 15 * time.Second, AuthTimeout: 5 * time.Second},
	Strict:  {Mode: conn.AuthStrict, Heartbeat: 30 * time.Second, TokenTTL: 15 * time.Minute, AuthTimeout: 10 * time.Second},
	Public:  {Mode: conn.AuthPublic, Heartbeat: 30 * time.Second, TokenTTL: 15 * time.Minute, AuthTimeout: 10 * time.Second},
	Limited: {Mode: conn.AuthHandshake, Heartbeat: 30 * time.Second, TokenTTL: 15 * time.Minute, AuthTimeout: 10 * time.Second,
		RateLimit: directustest.RateLimit{Points: 200, Duration: time.Second}},
}

// shortOfShort is the short profile of the embedded server under -short,
// for the quick loop: the same scenarios with a heartbeat of 1 s and a token
// lifetime of 11 s, still above the 10 s below which conn takes an early
// TOKEN_EXPIRED for a sign of trouble and backs off.
var shortOfShort = Settings{Mode: conn.AuthHandshake, Heartbeat: time.Second, TokenTTL: 11 * time.Second, AuthTimeout: 5 * time.Second}

// shortOfLimited is the limited profile of the embedded server under
// -short: the same rate in a window of 250 ms, so that what the limiter
// drops is answered with a delay a quarter as long.
var shortOfLimited = Settings{Mode: conn.AuthHandshake, Heartbeat: 30 * time.Second, TokenTTL: 15 * time.Minute, AuthTimeout: 10 * time.Second,
	RateLimit: directustest.RateLimit{Points: 50, Duration: 250 * time.Millisecond}}

// Credentials of the seeded model. Empty fields are unknown: scenarios
// that need them skip.
type Credentials struct {
	AdminToken    string
	AdminEmail    string
	AdminPassword string
	ReaderToken   string
}

// Target is what a scenario runs against: directustest or a real Directus.
type Target interface {
	// Name is the subtest's name, "directustest" or "directus".
	Name() string
	// Real reports a real Directus.
	Real() bool
	// Creds returns the seeded credentials.
	Creds() Credentials
	// Server returns the server of profile p. It skips t when the target
	// has none (and fails it when REQUIRE_DIRECTUS=1).
	Server(t testing.TB, p Profile) Server
}

// Server is one server of a target.
type Server interface {
	Profile() Profile
	// URL is the base URL ("/websocket" is appended by conn).
	URL() string
	Settings() Settings
	// REST is a REST client authenticated as the admin.
	REST() *REST
	// Restartable reports whether Restart and Kill9AndRestart work.
	Restartable() bool
	// Restart stops the server process (SIGTERM) and starts it again; it
	// returns once the server is healthy.
	Restart(ctx context.Context) error
	// Kill9AndRestart kills the server process with SIGKILL and starts it
	// again; it returns once the server is healthy.
	Kill9AndRestart(ctx context.Context) error
	// Reset deletes every row of posts and tags.
	Reset(ctx context.Context) error
	// Quiet returns a writer whose writes emit no events, or nil when the
	// target cannot make one (a real Directus needs a Flow for that).
	Quiet() *directustest.Writer
}

// run runs scenario against every target, as subtests "directustest" and
// "directus".
func run(t *testing.T, scenario func(t *testing.T, tg Target)) {
	if testing.Short() {
		// The quick loop has the embedded target only, a server of its
		// own per scenario: they all wait for their timers together.
		parallel(t)
	}
	t.Run("directustest", func(t *testing.T) {
		scenario(t, newEmbedded(t))
	})
	t.Run("directus", func(t *testing.T) {
		scenario(t, realTarget(t))
	})
}

// parallelTests are the tests parallel has made parallel.
var parallelTests sync.Map

// parallel calls t.Parallel once, however many times it is asked to (by
// the test itself and by run).
func parallel(t *testing.T) {
	if _, done := parallelTests.LoadOrStore(t, true); !done {
		t.Parallel()
	}
}

// --- directustest -----------------------------------------------------------

type embedded struct {
	t       *testing.T
	mu      sync.Mutex
	servers map[Profile]*embeddedServer
}

func newEmbedded(t *testing.T) *embedded {
	return &embedded{t: t, servers: map[Profile]*embeddedServer{}}
}

func (e *embedded) Name() string { return "directustest" }
func (e *embedded) Real() bool   { return false }
func (e *embedded) Creds() Credentials {
	return Credentials{
		AdminToken:    directustest.AdminToken,
		AdminEmail:    directustest.AdminEmail,
		AdminPassword: directustest.AdminPassword,
		ReaderToken:   directustest.ReaderToken,
	}
}

// Server starts the profile's server on first use, with the options of the
// real profile; it is closed when the test ends.
func (e *embedded) Server(t testing.TB, p Profile) Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.servers[p]; s != nil {
		return s
	}
	set, ok := profiles[p]
	if !ok {
		t.Fatalf("unknown profile %q", p)
	}
	if p == Short && testing.Short() {
		set = shortOfShort
	}
	if p == Limited && testing.Short() {
		set = shortOfLimited
	}
	srv := directustest.NewServer(&directustest.Options{
		AuthMode:        directustest.AuthMode(set.Mode),
		AuthTimeout:     set.AuthTimeout,
		HeartbeatPeriod: set.Heartbeat,
		AccessTokenTTL:  set.TokenTTL,
		RateLimit:       set.RateLimit,
		GraphQL:         true, // on by default in Directus
	})
	e.t.Cleanup(srv.Close)
	s := &embeddedServer{p: p, srv: srv, set: set, rest: newREST(srv.URL(), directustest.AdminToken)}
	e.t.Cleanup(s.rest.Close)
	e.servers[p] = s
	return s
}

type embeddedServer struct {
	p    Profile
	srv  *directustest.Server
	set  Settings
	rest *REST
}

func (s *embeddedServer) Profile() Profile                      { return s.p }
func (s *embeddedServer) URL() string                           { return s.srv.URL() }
func (s *embeddedServer) Settings() Settings                    { return s.set }
func (s *embeddedServer) REST() *REST                           { return s.rest }
func (s *embeddedServer) Restartable() bool                     { return true }
func (s *embeddedServer) Restart(context.Context) error         { s.srv.Restart(); return nil }
func (s *embeddedServer) Kill9AndRestart(context.Context) error { s.srv.Restart(); return nil }
func (s *embeddedServer) Reset(ctx context.Context) error       { return s.rest.Reset(ctx) }
func (s *embeddedServer) Quiet() *directustest.Writer           { return s.srv.Quiet() }

// --- a real Directus --------------------------------------------------------

// realEnv is read once from the environment.
type realEnv struct {
	urls    map[Profile]string // from DIRECTUS_URL_<PROFILE>
	single  string             // DIRECTUS_URL, when no profile URL is set
	creds   Credentials
	require bool
}

var (
	realOnce sync.Once
	realEnvV realEnv

	realMu      sync.Mutex
	realServers = map[Profile]*realServer{}
	realProbed  bool
	realProbeE  error
)

func loadRealEnv() realEnv {
	realOnce.Do(func() {
		e := realEnv{urls: map[Profile]string{}, require: os.Getenv("REQUIRE_DIRECTUS") == "1"}
		for _, p := range []Profile{Default, Short, Strict, Public, Limited} {
			if u := strings.TrimSpace(os.Getenv("DIRECTUS_URL_" + strings.ToUpper(string(p)))); u != "" {
				e.urls[p] = strings.TrimRight(u, "/")
			}
		}
		if len(e.urls) == 0 {
			e.single = strings.TrimRight(strings.TrimSpace(os.Getenv("DIRECTUS_URL")), "/")
		}
		e.creds = Credentials{
			AdminToken:    os.Getenv("DIRECTUS_ADMIN_TOKEN"),
			AdminEmail:    os.Getenv("DIRECTUS_ADMIN_EMAIL"),
			AdminPassword: os.Getenv("DIRECTUS_ADMIN_PASSWORD"),
			ReaderToken:   os.Getenv("DIRECTUS_READER_TOKEN"),
		}
		realEnvV = e
	})
	return realEnvV
}

// realTarget returns the real Directus target, or skips t when the
// environment names none (fails it with REQUIRE_DIRECTUS=1).
func realTarget(t testing.TB) Target {
	t.Helper()
	e := loadRealEnv()
	if len(e.urls) == 0 && e.single == "" {
		missing(t, e, "no real Directus: set DIRECTUS_URL_DEFAULT/SHORT/STRICT/PUBLIC (scripts/directus/ci.sh) or DIRECTUS_URL")
	}
	if e.creds.AdminToken == "" {
		missing(t, e, "DIRECTUS_ADMIN_TOKEN is not set")
	}
	return &realDirectus{env: e}
}

func missing(t testing.TB, e realEnv, why string) {
	t.Helper()
	if e.require {
		t.Fatalf("REQUIRE_DIRECTUS=1: %s", why)
	}
	t.Skip(why)
}

type realDirectus struct{ env realEnv }

func (r *realDirectus) Name() string       { return "directus" }
func (r *realDirectus) Real() bool         { return true }
func (r *realDirectus) Creds() Credentials { return r.env.creds }

func (r *realDirectus) Server(t testing.TB, p Profile) Server {
	t.Helper()
	realMu.Lock()
	defer realMu.Unlock()
	if !realProbed {
		realProbed = true
		realProbeE = r.probeLocked()
	}
	if realProbeE != nil {
		t.Fatalf("real Directus: %v", realProbeE)
	}
	shared := realServers[p]
	if shared == nil {
		if len(r.env.urls) > 0 {
			missing(t, r.env, fmt.Sprintf("DIRECTUS_URL_%s is not set", strings.ToUpper(string(p))))
		}
		missing(t, r.env, fmt.Sprintf("DIRECTUS_URL does not run the %s profile (%s); set DIRECTUS_URL_%s (see conformance/doc.go)",
			p, describe(profiles[p]), strings.ToUpper(string(p))))
	}
	// A REST client per test: its idle connections end with the test.
	s := *shared
	s.rest = newREST(s.base, r.env.creds.AdminToken)
	t.Cleanup(s.rest.Close)
	return &s
}

func describe(s Settings) string {
	return fmt.Sprintf("WEBSOCKETS_REST_AUTH=%s, heartbeat %v, ACCESS_TOKEN_TTL %v", s.Mode, s.Heartbeat, s.TokenTTL)
}

// probeLocked asks every configured server for its settings and checks that
// they are those of its profile.
func (r *realDirectus) probeLocked() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	creds := r.env.creds
	add := func(p Profile, base string) error {
		rest := newREST(base, creds.AdminToken)
		set, err := rest.Settings(ctx, creds)
		rest.Close()
		if err != nil {
			return fmt.Errorf("%s (%s): %w", base, p, err)
		}
		want := profiles[p]
		if set.Mode != want.Mode {
			return fmt.Errorf("%s (profile %s) runs WEBSOCKETS_REST_AUTH=%s, want %s", base, p, set.Mode, want.Mode)
		}
		if p == Short && (set.Heartbeat != want.Heartbeat || (set.TokenTTL != 0 && set.TokenTTL != want.TokenTTL)) {
			return fmt.Errorf("%s (profile short) runs heartbeat %v and token TTL %v, want %v and %v",
				base, set.Heartbeat, set.TokenTTL, want.Heartbeat, want.TokenTTL)
		}
		if set.TokenTTL == 0 {
			set.TokenTTL = want.TokenTTL
		}
		// Not observable from outside: the value ci.sh sets, which is also
		// the Directus default for every profile but short.
		set.AuthTimeout = want.AuthTimeout
		set.RateLimit = want.RateLimit
		realServers[p] = newRealServer(p, base, set)
		return nil
	}
	if r.env.single != "" {
		rest := newREST(r.env.single, creds.AdminToken)
		set, err := rest.Settings(ctx, creds)
		rest.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", r.env.single, err)
		}
		p, ok := map[conn.AuthMode]Profile{conn.AuthHandshake: Default, conn.AuthStrict: Strict, conn.AuthPublic: Public}[set.Mode]
		if !ok {
			return fmt.Errorf("%s: unknown WEBSOCKETS_REST_AUTH %q", r.env.single, set.Mode)
		}
		if set.TokenTTL == 0 {
			set.TokenTTL = profiles[p].TokenTTL
		}
		// The auth timeout cannot be read from the server; start.sh's
		// connection file says it, else it is Directus's default.
		set.AuthTimeout = profiles[Default].AuthTimeout
		if v, err := strconv.Atoi(os.Getenv("DIRECTUS_SERVER_AUTH_TIMEOUT")); err == nil && v > 0 {
			set.AuthTimeout = time.Duration(v) * time.Second
		}
		realServers[p] = newRealServer(p, r.env.single, set)
		// A handshake server with a short heartbeat and token lifetime
		// serves the short profile's scenarios too.
		if p == Default && set.Heartbeat > 0 && set.Heartbeat <= 10*time.Second && set.TokenTTL <= time.Minute {
			realServers[Short] = newRealServer(Short, r.env.single, set)
		}
		return nil
	}
	for p, base := range r.env.urls {
		if err := add(p, base); err != nil {
			return err
		}
	}
	return nil
}

type realServer struct {
	p    Profile
	base string
	set  Settings
	rest *REST // per test; see Server

	port   string // set when this checkout's scripts run the server
	script string
}

func newRealServer(p Profile, base string, set Settings) *realServer {
	s := &realServer{p: p, base: base, set: set}
	// Restartable when scripts/directus started it: a loopback URL whose
	// port has a pid file in $DIRECTUS_HOME/run.
	if u, err := url.Parse(base); err == nil && u.Hostname() == "127.0.0.1" {
		home := os.Getenv("DIRECTUS_HOME")
		if home == "" {
			if h, err := os.UserHomeDir(); err == nil {
				home = filepath.Join(h, ".cache", "directus-realtime", "directus-12.4.1")
			}
		}
		script, _ := filepath.Abs(filepath.Join("..", "scripts", "directus", "restart.sh"))
		if _, err := os.Stat(filepath.Join(home, "run", "directus-"+u.Port()+".pid")); err == nil {
			if _, err := os.Stat(script); err == nil {
				s.port, s.script = u.Port(), script
			}
		}
	}
	return s
}

func (s *realServer) Profile() Profile                  { return s.p }
func (s *realServer) URL() string                       { return s.base }
func (s *realServer) Settings() Settings                { return s.set }
func (s *realServer) REST() *REST                       { return s.rest }
func (s *realServer) Restartable() bool                 { return s.port != "" }
func (s *realServer) Reset(ctx context.Context) error   { return s.rest.Reset(ctx) }
func (s *realServer) Quiet() *directustest.Writer       { return nil }
func (s *realServer) Restart(ctx context.Context) error { return s.restart(ctx, "TERM") }
func (s *realServer) Kill9AndRestart(ctx context.Context) error {
	return s.restart(ctx, "KILL")
}

// knobRE matches the variables restart.sh would take from the caller's
// environment in place of the saved knobs of the instance: the restarted
// server must come back with its own profile, whatever the test's
// environment holds.
var knobRE = regexp.MustCompile(`^(DIRECTUS_(WS_AUTH|HEARTBEAT_PERIOD|ACCESS_TOKEN_TTL|DB_NAME|FRESH_DB|RESEED|PORT)|SIGNAL|WEBSOCKETS_|RATE_LIMITER_|PRESSURE_LIMITER_|ACCESS_TOKEN_|REFRESH_TOKEN_|SESSION_|CACHE_|CORS_|GRAPHQL_|QUERY_|MAX_|LOG_|AUTH_|USER_|EMAIL_|ASSETS_|FILES_|FLOWS_|EXTENSIONS_)`)

// restart runs `SIGNAL=<signal> scripts/directus/restart.sh <port>`.
func (s *realServer) restart(ctx context.Context, signal string) error {
	if s.port == "" {
		return errors.New("not restartable: not started by scripts/directus")
	}
	cmd := exec.CommandContext(ctx, s.script, s.port)
	for _, kv := range os.Environ() {
		if !knobRE.MatchString(kv) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "SIGNAL="+signal)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("SIGNAL=%s restart.sh %s: %w\n%s", signal, s.port, err, out)
	}
	return nil
}

// requireRestart skips t when srv cannot be restarted.
func requireRestart(t testing.TB, srv Server) {
	t.Helper()
	if !srv.Restartable() {
		e := loadRealEnv()
		if e.require {
			t.Fatalf("REQUIRE_DIRECTUS=1: %s cannot be restarted (not started by scripts/directus)", srv.URL())
		}
		t.Skipf("%s cannot be restarted: it was not started by scripts/directus", srv.URL())
	}
}

// hostPort returns the "host:port" of a base URL.
func hostPort(t testing.TB, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(host, port)
}

// setReaderRead grants or revokes the seeded reader's read permission on
// posts.
func (s *embeddedServer) setReaderRead(allowed bool) error {
	perms := map[string]directustest.Permission{}
	if allowed {
		perms["posts"] = directustest.Permission{Read: true}
	}
	return s.srv.SetUserPermissions(directustest.ReaderEmail, perms)
}
