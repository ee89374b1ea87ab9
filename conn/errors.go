package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/e41af43e/directus-realtime/internal/certerr"
	"github.com/e41af43e/directus-realtime/protocol"
)

var (
	// ErrClosed is returned by every method of a Conn after Close, and by
	// Connect when Close was called meanwhile. It is protocol.ErrClosed.
	ErrClosed = protocol.ErrClosed

	// ErrConnectionLost is returned for a request or send whose session
	// ended before it completed. The Conn reconnects by itself; the caller
	// may retry.
	ErrConnectionLost = errors.New("directus: connection lost")

	// ErrTimeout is returned when a request got no reply in time. Directus
	// sends no reply at all for some failures (docs/PROTOCOL.md §6), so every
	// request is bounded. errors.Is(err, context.DeadlineExceeded) also holds.
	ErrTimeout error = timeoutError{}

	// ErrHeartbeatTimeout is the cause of a session ended because nothing
	// arrived from the server within PingInterval+PingTimeout.
	ErrHeartbeatTimeout = errors.New("directus: no frame from the server within the heartbeat timeout")

	// ErrFrameTooLarge is the cause of a session ended by a frame larger than
	// Config.ReadLimit.
	ErrFrameTooLarge = errors.New("directus: frame exceeds the read limit")

	// ErrUnauthorized matches an *UpgradeError with HTTP status 401: a bad or
	// expired token in the upgrade URL, or strict mode without a token.
	ErrUnauthorized = errors.New("directus: upgrade rejected: 401 unauthorized")

	// ErrUpgradeForbidden matches an *UpgradeError with HTTP status 403: a
	// foreign Origin header, the server's connection limit, or a locked license.
	ErrUpgradeForbidden = errors.New("directus: upgrade rejected: 403 forbidden")

	// ErrCloseTimeout is returned by Close when user callbacks were still
	// running after Config.CloseTimeout; the error names them.
	ErrCloseTimeout = errors.New("directus: close timed out waiting for callbacks")

	// ErrAuthRequired matches the refusal of a connection made without
	// credentials by a server whose WEBSOCKETS_REST_AUTH is not public: set
	// Auth. It also matches protocol.ErrAuthFailed.
	ErrAuthRequired = errors.New("directus: the server requires authentication; Auth has no credential")

	// ErrCredentialsExpired is the cause of a Conn closed because its only
	// credential is a JWT past its exp, with no TokenSource, refresh token
	// or email and password to get another: no retry could succeed.
	ErrCredentialsExpired = errors.New("directus: the access token has expired and no TokenSource, refresh token or password can replace it")

	// errReconnectRequested is the cause of Reconnect's forced session end.
	errReconnectRequested = errors.New("directus: reconnect requested")
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "directus: request timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded
}

// UpgradeError reports an HTTP response other than 101 to the WebSocket
// upgrade. Directus answers 401 for a bad token (or none in strict mode) and
// 403 for a foreign Origin, a full connection limit or a locked license.
type UpgradeError struct {
	StatusCode int
	// RetryAfter is the Retry-After of a 429 or 503 answer (at most 10
	// minutes); the next attempt waits at least that long.
	RetryAfter time.Duration
}

func (e *UpgradeError) Error() string {
	s := fmt.Sprintf("directus: upgrade rejected: HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
	}
	return s
}

// RateLimitedError is returned for a request that got no reply after the
// server's rate limiter answered REQUESTS_EXCEEDED while it waited: the
// limiter drops frames without saying which, so the request was most likely
// dropped. Idempotent requests (ping, items read, auth with an access token)
// are sent again first, up to five times with growing waits; others are
// not, since a resend could apply them twice. errors.Is(err,
// protocol.ErrRequestsExceeded) holds.
type RateLimitedError struct {
	Err    *protocol.ServerError // the limiter's REQUESTS_EXCEEDED
	Resent int                   // how often the request was sent again
}

func (e *RateLimitedError) Error() string {
	s := "directus: request dropped by the server's rate limiter"
	if e.Resent > 0 {
		s += fmt.Sprintf(" (sent %d more times)", e.Resent)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *RateLimitedError) Unwrap() error {
	if e.Err == nil {
		return protocol.ErrRequestsExceeded
	}
	return e.Err
}

// Is matches ErrUnauthorized for 401 and ErrUpgradeForbidden for 403.
func (e *UpgradeError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrUpgradeForbidden:
		return e.StatusCode == http.StatusForbidden
	}
	return false
}

// isFatalOnFirstConnect tells Connect to stop retrying: the server rejected
// the credentials or the client itself, or redirected it, and retrying
// cannot help.
func isFatalOnFirstConnect(err error) bool {
	var ue *UpgradeError
	if errors.As(err, &ue) {
		return ue.StatusCode == http.StatusUnauthorized || ue.StatusCode == http.StatusForbidden
	}
	var se *protocol.ServerError
	if errors.As(err, &se) {
		return se.Type == protocol.TypeAuth
	}
	var ce *protocol.ConfigError
	return errors.As(err, &ce) || errors.Is(err, ErrRedirect) || certerr.Is(err)
}

// CloseError reports that the WebSocket closed. Code 1005 is what Directus
// sends when it closes a connection itself (handshake failure, AUTH_TIMEOUT,
// heartbeat timeout) and 1006 an abrupt end (a crash or SIGTERM).
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	s := fmt.Sprintf("directus: connection closed with code %d", e.Code)
	if e.Reason != "" {
		s += ": " + protocol.Truncate(e.Reason, 256)
	}
	return s
}

// DialError reports a failed dial (connection refused, DNS, TLS, timeout).
// Its text never contains the access token of a strict-mode URL; errors.Is
// and errors.As reach the network error, a TLS verification error (and its
// x509 cause, such as x509.UnknownAuthorityError) and context errors
// underneath.
type DialError struct {
	URL    string // the endpoint, without credentials
	msg    string
	causes []error
}

func (e *DialError) Error() string   { return "directus: dial " + e.URL + ": " + e.msg }
func (e *DialError) Unwrap() []error { return e.causes }

func newDialError(endpoint string, err error, secret string) *DialError {
	msg := err.Error()
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "REDACTED")
	}
	// The chain of err holds the URL with the token in url.Error; expose
	// only the parts that carry none: what the url.Error wraps (the network
	// error, a TLS verification error with its x509 cause), or else the
	// network error.
	var causes []error
	var ue *url.Error
	var op *net.OpError
	if errors.As(err, &ue) && ue.Err != nil && (secret == "" || !strings.Contains(ue.Err.Error(), secret)) {
		causes = append(causes, ue.Err)
	} else if errors.As(err, &op) {
		causes = append(causes, op)
	}
	for _, target := range []error{context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, target) {
			causes = append(causes, target)
		}
	}
	return &DialError{URL: endpoint, msg: msg, causes: causes}
}
