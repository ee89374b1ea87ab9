package conn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Code is an error code sent by Directus in the "error" object of a frame.
// Codes that are not listed here are kept verbatim: any error a Directus
// service throws reaches the client with its own code.
type Code string

// Error codes a client meets on the realtime endpoint (PROTOCOL.md §9).
const (
	CodeAuthFailed         Code = "AUTH_FAILED"
	CodeTokenExpired       Code = "TOKEN_EXPIRED"
	CodeAuthTimeout        Code = "AUTH_TIMEOUT"
	CodeInvalidPayload     Code = "INVALID_PAYLOAD"
	CodeForbidden          Code = "FORBIDDEN"
	CodeInvalidCollection  Code = "INVALID_COLLECTION"
	CodeInvalidQuery       Code = "INVALID_QUERY"
	CodeRequestsExceeded   Code = "REQUESTS_EXCEEDED"
	CodeServiceUnavailable Code = "SERVICE_UNAVAILABLE"
)

// ServerError is an error frame sent by the server:
// {"type":…,"status":"error","error":{"code":…,"message":…},"uid":…}.
//
// Type is the type of the request that failed ("auth", "subscribe",
// "unsubscribe", "items") or "server" for frames the server could not parse.
// UID is empty when the server did not echo one, which it does not for
// handshake failures, schema errors and "server" errors.
//
// errors.Is matches a ServerError against the sentinels below by code, so
// errors.Is(err, conn.ErrForbidden) holds for any FORBIDDEN frame.
type ServerError struct {
	Type    string
	Code    Code
	Message string
	UID     UID
}

func (e *ServerError) Error() string {
	s := "directus: " + e.Type + " error " + string(e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.UID != "" {
		s += " (uid " + strconv.Quote(string(e.UID)) + ")"
	}
	return s
}

// Is reports whether target is a *ServerError whose non-empty fields all
// equal e's. The package's sentinels set only Code.
func (e *ServerError) Is(target error) bool {
	t, ok := target.(*ServerError)
	if !ok {
		return false
	}
	return (t.Code == "" || t.Code == e.Code) &&
		(t.Type == "" || t.Type == e.Type) &&
		(t.UID == "" || t.UID == e.UID) &&
		(t.Message == "" || t.Message == e.Message)
}

// Sentinels for errors.Is, one per code a client should model.
var (
	ErrAuthFailed         = &ServerError{Code: CodeAuthFailed}
	ErrTokenExpired       = &ServerError{Code: CodeTokenExpired}
	ErrAuthTimeout        = &ServerError{Code: CodeAuthTimeout}
	ErrInvalidPayload     = &ServerError{Code: CodeInvalidPayload}
	ErrForbidden          = &ServerError{Code: CodeForbidden}
	ErrInvalidCollection  = &ServerError{Code: CodeInvalidCollection}
	ErrInvalidQuery       = &ServerError{Code: CodeInvalidQuery}
	ErrRequestsExceeded   = &ServerError{Code: CodeRequestsExceeded}
	ErrServiceUnavailable = &ServerError{Code: CodeServiceUnavailable}
)

var (
	// ErrClosed is returned by every method of a Conn after Close, and by
	// Connect when Close was called meanwhile.
	ErrClosed = errors.New("directus: connection closed")

	// ErrConnectionLost is returned for a request or send whose session
	// ended before it completed. The Conn reconnects by itself; the caller
	// may retry.
	ErrConnectionLost = errors.New("directus: connection lost")

	// ErrTimeout is returned when a request got no reply in time. Directus
	// sends no reply at all for some failures (PROTOCOL.md §6), so every
	// request is bounded. errors.Is(err, context.DeadlineExceeded) also holds.
	ErrTimeout error = timeoutError{}

	// ErrHeartbeatTimeout is the cause of a session ended because nothing
	// arrived from the server within PingInterval+PingTimeout.
	ErrHeartbeatTimeout = errors.New("directus: no frame from the server within the heartbeat timeout")

	// ErrFrameTooLarge is the cause of a session ended by a frame larger than
	// Config.ReadLimit.
	ErrFrameTooLarge = errors.New("directus: frame exceeds the read limit")

	// ErrProtocol matches every *ProtocolError.
	ErrProtocol = errors.New("directus: protocol error")

	// ErrUnauthorized matches an *UpgradeError with HTTP status 401: a bad or
	// expired token in the upgrade URL, or strict mode without a token.
	ErrUnauthorized = errors.New("directus: upgrade rejected: 401 unauthorized")

	// ErrUpgradeForbidden matches an *UpgradeError with HTTP status 403: a
	// foreign Origin header, the server's connection limit, or a locked license.
	ErrUpgradeForbidden = errors.New("directus: upgrade rejected: 403 forbidden")

	// ErrNotReconnecting is the cause of Reconnect's forced session end.
	errReconnectRequested = errors.New("directus: reconnect requested")
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "directus: request timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded
}

// ProtocolError reports a frame that could not be used: invalid JSON, not a
// JSON object, a missing or non-string type, or a field of the wrong shape.
// The frame itself is not kept (it may carry tokens); Size is its length.
type ProtocolError struct {
	Reason string
	Type   string // the frame's type, when it could be read
	Size   int
	Err    error // the decoding error, if any
}

func (e *ProtocolError) Error() string {
	s := "directus: protocol error: " + e.Reason
	if e.Type != "" {
		s += " (type " + strconv.Quote(e.Type) + ")"
	}
	s += fmt.Sprintf(" in a %d-byte frame", e.Size)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// Is makes every ProtocolError match ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

// UpgradeError reports an HTTP response other than 101 to the WebSocket
// upgrade. Directus answers 401 for a bad token (or none in strict mode) and
// 403 for a foreign Origin, a full connection limit or a locked license.
type UpgradeError struct {
	StatusCode int
}

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("directus: upgrade rejected: HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
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
// the credentials or the client itself, and retrying cannot help.
func isFatalOnFirstConnect(err error) bool {
	var ue *UpgradeError
	if errors.As(err, &ue) {
		return ue.StatusCode == http.StatusUnauthorized || ue.StatusCode == http.StatusForbidden
	}
	var se *ServerError
	if errors.As(err, &se) {
		return se.Type == "auth"
	}
	var ce *ConfigError
	return errors.As(err, &ce)
}

// ConfigError reports an invalid Config.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return "directus: invalid config: " + e.Field + ": " + e.Reason
}
