package directustest

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the JSON helpers. Directus is a Node.js server, so its
// frames are produced by JSON.stringify: object keys keep their insertion
// order, numbers use the JavaScript number formatting and "<", ">" and "&"
// are not escaped. The helpers below reproduce that, which lets the tests
// compare frames byte for byte with the recorded transcript.

// appendJSONString appends s as a JSON string the way JSON.stringify writes
// it. Invalid UTF-8 is replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"':
				b = append(b, '\\', '"')
			case '\\':
				b = append(b, '\\', '\\')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				const hex = "0123456789abcdef"
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsNumber formats f the way JavaScript's Number.prototype.toString does for
// the values that matter here (integers print without exponent below 1e21).
func jsNumber(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null"
	}
	if f == 0 {
		return "0"
	}
	abs := math.Abs(f)
	if abs >= 1e-6 && abs < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'e', -1, 64)
	// Go writes "1e-07", JavaScript "1e-7".
	if i := strings.IndexByte(s, 'e'); i >= 0 && i+2 < len(s) {
		exp := s[i+2:]
		exp = strings.TrimLeft(exp, "0")
		if exp == "" {
			exp = "0"
		}
		s = s[:i+2] + exp
	}
	return s
}

// appendValue appends a normalised JSON value (see normalizeValue). Object
// keys of plain maps are written in sorted order.
func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		if x {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case string:
		return appendJSONString(b, x)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case float64:
		return append(b, jsNumber(x)...)
	case json.Number:
		return appendNumberLiteral(b, string(x))
	case json.RawMessage:
		if len(x) == 0 {
			return append(b, "null"...)
		}
		return append(b, x...)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, e)
		}
		return append(b, ']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendValue(b, x[k])
		}
		return append(b, '}')
	default:
		// Not a normalised value: fall back to encoding/json.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return append(b, "null"...)
		}
		return append(b, bytes.TrimRight(buf.Bytes(), "\n")...)
	}
}

func appendNumberLiteral(b []byte, lit string) []byte {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, jsNumber(f)...)
}

// normalizeNumber converts a JSON number literal into int64 when it is an
// integer that fits, float64 otherwise.
func normalizeNumber(lit string) any {
	if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
		return i
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) {
		// JSON.parse gives Infinity, which JSON.stringify writes as null.
		return nil
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return f
}

// normalizeValue turns any Go value into the canonical representation used by
// the store: nil, bool, string, int64, float64, []any and map[string]any.
// ok is false when the value cannot be represented in JSON.
func normalizeValue(v any) (any, bool) {
	switch x := v.(type) {
	case nil, bool, string, int64:
		return x, true
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), true
		}
		return float64(x), true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
		return float64(x), true
	case float32:
		return normalizeFloat(float64(x))
	case float64:
		return normalizeFloat(x)
	case json.Number:
		return normalizeNumber(string(x)), true
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, ok := normalizeValue(e)
			if !ok {
				return nil, false
			}
			out[i] = n
		}
		return out, true
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, ok := normalizeValue(e)
			if !ok {
				return nil, false
			}
			out[k] = n
		}
		return out, true
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, false
		}
		var decoded any
		if err := decodeJSON(raw, &decoded); err != nil {
			return nil, false
		}
		return normalizeValue(decoded)
	}
}

func normalizeFloat(f float64) (any, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, false
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f), true
	}
	return f, true
}

// decodeJSON decodes data with json.Number for numbers and then normalises
// the result (when v is *any).
func decodeJSON(data []byte, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	if dec.More() {
		return errTrailingData
	}
	n, ok := normalizeValue(raw)
	if !ok {
		return errTrailingData
	}
	*v = n
	return nil
}

type jsonError string

func (e jsonError) Error() string { return string(e) }

const errTrailingData = jsonError("invalid JSON value")

// deepCopy returns a deep copy of a normalised value.
func deepCopy(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	default:
		return x
	}
}

// jsTypeOf names the type of a decoded JSON value the way zod reports it
// ("received array", "received string", ...).
func jsTypeOf(raw json.RawMessage) string {
	t := bytes.TrimLeft(raw, " \t\r\n")
	if len(t) == 0 {
		return "undefined"
	}
	switch t[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}
