package directustest

import "net/http"

// Error codes used by Directus and reproduced here.
const (
	codeAuthFailed         = "AUTH_FAILED"
	codeTokenExpired       = "TOKEN_EXPIRED"
	codeAuthTimeout        = "AUTH_TIMEOUT"
	codeInvalidPayload     = "INVALID_PAYLOAD"
	codeInvalidQuery       = "INVALID_QUERY"
	codeForbidden          = "FORBIDDEN"
	codeInvalidCollection  = "INVALID_COLLECTION"
	codeInvalidCredentials = "INVALID_CREDENTIALS"
	codeRecordNotUnique    = "RECORD_NOT_UNIQUE"
	codeRouteNotFound      = "ROUTE_NOT_FOUND"
	codeRequestsExceeded   = "REQUESTS_EXCEEDED"
)

// Messages observed on Directus 12.4.1 (docs/PROTOCOL.md §9).
const (
	msgHandshakeFailed  = "Authentication handshake failed."
	msgAuthFailed       = "Authentication failed."
	msgTokenExpired     = "Token expired."
	msgAuthTimeout      = "Authentication timed out."
	msgUnparsable       = "Unable to parse the incoming message."
	msgForbidden        = "You don't have permission to access this."
	msgSystemCollection = "Cannot trigger an action on a system collection."
	msgDeleteNeedsKeys  = "Either 'ids', 'id' or 'query' is required for a DELETE request."
	msgBadCredentials   = "Invalid user credentials."
)

// dxError is a Directus error: a code, a message and the HTTP status the
// REST API uses for it.
type dxError struct {
	status  int
	code    string
	message string
}

func (e *dxError) Error() string { return e.code + ": " + e.message }

func newError(status int, code, message string) *dxError {
	return &dxError{status: status, code: code, message: message}
}

func errForbiddenCollection(collection string) *dxError {
	return newError(http.StatusForbidden, codeForbidden,
		`You don't have permission to access collection "`+collection+`" or it does not exist. Queried in root.`)
}

// errForbiddenRead is what Directus's MetaService throws for an identity
// without read permission (a delete event to a subscription asking for meta).
func errForbiddenRead(collection string) *dxError {
	return newError(http.StatusForbidden, codeForbidden,
		`You don't have permission to perform "read" for collection "`+collection+`" or it does not exist.`)
}

func errForbiddenField(field, collection string) *dxError {
	return newError(http.StatusForbidden, codeForbidden,
		`You don't have permission to access field "`+field+`" in collection "`+collection+`" or it does not exist. Queried in root.`)
}

func errForbidden() *dxError {
	return newError(http.StatusForbidden, codeForbidden, msgForbidden)
}

func errInvalidQuery(reason string) *dxError {
	return newError(http.StatusBadRequest, codeInvalidQuery, "Invalid query. "+reason+".")
}

func errInvalidPayload(message string) *dxError {
	return newError(http.StatusBadRequest, codeInvalidPayload, message)
}

func errValidation(issue string) *dxError {
	return errInvalidPayload("Validation error: " + issue)
}

func errRecordNotUnique(field, collection string) *dxError {
	return newError(http.StatusBadRequest, codeRecordNotUnique,
		`Value for field "`+field+`" in collection "`+collection+`" has to be unique.`)
}

func errInvalidCredentials() *dxError {
	return newError(http.StatusUnauthorized, codeInvalidCredentials, msgBadCredentials)
}

func errTokenExpired() *dxError {
	return newError(http.StatusUnauthorized, codeTokenExpired, msgTokenExpired)
}

// zod-style issue texts, as Directus formats them.
func issueExpected(expected, received, path string) string {
	s := "Invalid input: expected " + expected + ", received " + received
	if path != "" {
		s += ` at "` + path + `"`
	}
	return s
}
