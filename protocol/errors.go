package protocol

import (
	"errors"
	"fmt"
	"strconv"
)

// Code is an error code sent by Directus in the "error" object of a frame.
// Codes that are not listed here are kept verbatim: any error a Directus
// service throws reaches the client with its own code.
type Code string

// Error codes a client meets on the realtime endpoint (docs/PROTOCOL.md §9).
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
// errors.Is(err, protocol.ErrForbidden) holds for any FORBIDDEN frame.
type ServerError struct {
	Type    string
	Code    Code
	Message string
	UID     UID
}

// maxErrorText bounds the server's message and uid as an error string shows
// them: both come from the network, and a hostile server could make every
// log line megabytes long.
const maxErrorText = 256

func (e *ServerError) Error() string {
	s := "directus: " + e.Type + " error " + string(e.Code)
	if e.Message != "" {
		s += ": " + Truncate(e.Message, maxErrorText)
	}
	if e.UID != "" {
		s += " (uid " + strconv.Quote(Truncate(string(e.UID), maxErrorText)) + ")"
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

// ErrProtocol matches every *ProtocolError.
var ErrProtocol = errors.New("directus: protocol error")

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
		s += " (type " + strconv.Quote(Truncate(e.Type, maxErrorText)) + ")"
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

// ErrClosed is returned by every method of a closed Conn, Manager or
// Collection: conn.ErrClosed, manager.ErrClosed and store.ErrClosed are this
// value, so one errors.Is check covers them all.
var ErrClosed = errors.New("directus: closed")

// ConfigError reports an invalid option or configuration: the one way every
// package of the module reports a bad option (conn.Config, manager.Options
// and SubscribeOptions, store.Options, ...). Field names the option, as
// written in Go (for example "Backoff.Factor").
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return "directus: invalid option " + e.Field + ": " + e.Reason
}

// Truncate shortens s to at most n bytes (and a marker saying how long it
// was), cutting at a rune boundary, for error strings and log lines that
// quote what the network sent.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// PanicError reports a panic in user code that the module recovered: a
// handler, a listener, or a callback such as OnConnect. Callback names where
// it happened ("handler of subscription \"posts#1\"", "OnStateChange", ...),
// Value is what was passed to panic and Stack the goroutine's stack at that
// point. Each package documents what it does after recovering (a manager
// resyncs the subscription, for instance) and how to turn recovery off.
type PanicError struct {
	Callback string
	Value    any
	Stack    []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("directus: panic in %s: %v", e.Callback, e.Value)
}

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
