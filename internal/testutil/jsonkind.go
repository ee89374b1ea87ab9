package testutil

import (
	"bytes"
	"encoding/json"
)

// JSONKind classifies b as one JSON value, the way the fuzz tests' simpler
// reference decodings need it: "string", "number", "null", "bool",
// "object", "array", "empty" (only JSON whitespace) or "invalid". Only the
// four characters JSON allows around a value are whitespace: "0\v" is
// invalid, as encoding/json says.
func JSONKind(b []byte) string {
	b = bytes.Trim(b, " \t\r\n")
	if len(b) == 0 {
		return "empty"
	}
	if !json.Valid(b) {
		return "invalid"
	}
	switch c := b[0]; {
	case c == '"':
		return "string"
	case c == '-' || (c >= '0' && c <= '9'):
		return "number"
	case c == 'n':
		return "null"
	case c == 't' || c == 'f':
		return "bool"
	case c == '{':
		return "object"
	}
	return "array"
}
