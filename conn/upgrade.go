package conn

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// maxRedirects bounds a chain of followed redirects (Config.FollowRedirects).
const maxRedirects = 5

// RedirectError reports a redirect answer to the WebSocket upgrade that was
// not followed. Directus never redirects its realtime endpoint, so by default
// no redirect is followed: the target would receive the credentials of the
// handshake (the auth frame, Config.Header, and in strict mode the token in
// the URL and in Referer). With Config.FollowRedirects set, a redirect is
// followed only to the configured host and port, never from wss to ws.
// Location is the target without its query (which may hold a token).
type RedirectError struct {
	Location string
	Reason   string
}

func (e *RedirectError) Error() string {
	return "directus: redirect to " + e.Location + " not followed: " + e.Reason
}

// ErrRedirect matches every *RedirectError.
var ErrRedirect = errors.New("directus: redirect not followed")

// Is makes every RedirectError match ErrRedirect.
func (e *RedirectError) Is(target error) bool { return target == ErrRedirect }

// upgrader performs the WebSocket upgrades of a Conn: with the configured
// HTTP client, its redirect policy replaced by checkRedirect, and, when the
// client's transport is an *http.Transport (the default), with a transport
// of its own per upgrade that records the raw connection, so that a session
// can always be closed at once (coder/websocket's CloseNow waits while a
// close handshake is under way, up to 5 s per step).
type upgrader struct {
	base     *http.Client
	endpoint *url.URL // the configured endpoint, for the redirect policy
	follow   bool
}

func newUpgrader(cfg *Config, endpoint *url.URL) *upgrader {
	base := cfg.HTTPClient
	if base == nil {
		base = http.DefaultClient
	}
	return &upgrader{base: base, endpoint: endpoint, follow: cfg.FollowRedirects}
}

// rawConn holds the network connection one upgrade dialed.
type rawConn struct {
	mu sync.Mutex
	c  net.Conn
}

func (r *rawConn) set(c net.Conn) {
	r.mu.Lock()
	r.c = c
	r.mu.Unlock()
}

// close closes the raw connection, if one was recorded.
func (r *rawConn) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	c := r.c
	r.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// client returns the HTTP client for one upgrade, and the holder of its raw
// connection (nil when the transport cannot be wrapped), and a function to
// call once the upgrade is over.
func (u *upgrader) client() (*http.Client, *rawConn, func()) {
	cl := *u.base
	cl.CheckRedirect = u.checkRedirect
	var raw *rawConn
	done := func() {}
	var t *http.Transport
	switch rt := u.base.Transport.(type) {
	case nil:
		if dt, ok := http.DefaultTransport.(*http.Transport); ok {
			t = dt
		}
	case *http.Transport:
		t = rt
	}
	if t != nil {
		// A transport of its own: no connection is shared with another
		// upgrade, so the one dialed here is the session's.
		own := t.Clone()
		raw = &rawConn{}
		dial := own.DialContext
		if dial == nil {
			dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		}
		own.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err == nil {
				raw.set(c)
			}
			return c, err
		}
		if tlsDial := own.DialTLSContext; tlsDial != nil {
			own.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := tlsDial(ctx, network, addr)
				if err == nil {
					raw.set(c)
				}
				return c, err
			}
		}
		cl.Transport = own
		done = own.CloseIdleConnections
	}
	return &cl, raw, done
}

// checkRedirect refuses every redirect unless Config.FollowRedirects is set,
// and then any that leaves the configured host or port or goes from https to
// http. A followed redirect carries no Referer (in strict mode it would hold
// the token).
func (u *upgrader) checkRedirect(req *http.Request, via []*http.Request) error {
	loc := redactedURL(req.URL)
	if !u.follow {
		return &RedirectError{Location: loc, Reason: "redirects are not followed (Config.FollowRedirects)"}
	}
	if len(via) >= maxRedirects {
		return &RedirectError{Location: loc, Reason: "too many redirects"}
	}
	if !sameHost(req.URL, u.endpoint) {
		return &RedirectError{Location: loc, Reason: "another host than " + u.endpoint.Host}
	}
	if prev := via[len(via)-1].URL; prev.Scheme == "https" && req.URL.Scheme != "https" {
		return &RedirectError{Location: loc, Reason: "from https to an unencrypted scheme"}
	}
	req.Header.Del("Referer")
	return nil
}

// sameHost compares host and port, with the scheme's default port filled in
// (coder/websocket turns ws and wss into http and https before the request).
func sameHost(a, b *url.URL) bool {
	return a.Hostname() == b.Hostname() && portOf(a) == portOf(b)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch u.Scheme {
	case "https", "wss":
		return "443"
	}
	return "80"
}

// redactedURL is u without user info, query and fragment.
func redactedURL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment, c.RawFragment = nil, "", "", ""
	return c.String()
}

// retryAfter reads the Retry-After header of a 429 or 503 answer: delay
// seconds or an HTTP date. It returns 0 when there is none.
func retryAfter(resp *http.Response, now time.Time) time.Duration {
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// maxRetryAfter caps what a server's Retry-After can ask for: a hostile one
// could otherwise park the client for good.
const maxRetryAfter = 10 * time.Minute
