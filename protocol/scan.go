package protocol

import "bytes"

// The frame's JSON is validated and its envelope split in one pass over the
// bytes: json.Valid followed by a split read every frame twice, and its
// scanner (a function call per byte) cost more than the split. What is valid
// here is exactly what json.Valid accepts (FuzzValidJSON holds the two
// together): RFC 8259 grammar, strings of any bytes but control characters
// (invalid UTF-8 included, as encoding/json), nesting up to maxDepth.

// maxDepth is encoding/json's nesting limit: deeper input is invalid there,
// so it is here.
const maxDepth = 10000

// splitFrame validates b and, when it is an object, returns the raw values
// of the keys DecodeMessage reads (subslices of b). A repeated key keeps its
// last value, as encoding/json does.
func splitFrame(b []byte) (w wireMessage, valid, object bool) {
	i := skipSpace(b, 0)
	if i < len(b) && b[i] == '{' {
		end := splitValidObject(b, i, &w)
		return w, end >= 0 && skipSpace(b, end) == len(b), true
	}
	return w, validJSON(b), false
}

// validJSON reports whether b is one JSON value with optional white space
// around it.
func validJSON(b []byte) bool {
	end := scanValue(b, skipSpace(b, 0), 0)
	return end >= 0 && skipSpace(b, end) == len(b)
}

// splitValidObject scans the object at b[i], filling w, and returns the
// index past it, or -1 if it is not valid JSON.
func splitValidObject(b []byte, i int, w *wireMessage) int {
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		keyEnd := scanString(b, i)
		if keyEnd < 0 {
			return -1
		}
		key := b[i+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			if s, err := jsonString(b[i:keyEnd]); err == nil {
				key = []byte(s)
			}
		}
		i = skipSpace(b, keyEnd)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipSpace(b, i+1)
		end := scanValue(b, i, 1)
		if end < 0 {
			return -1
		}
		w.set(key, b[i:end:end])
		i = skipSpace(b, end)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1
		default:
			return -1
		}
	}
}

// scanValue returns the index just past the valid JSON value at b[i], or -1.
// depth is the nesting of the containers around it.
func scanValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		return scanString(b, i)
	case c == '{' || c == '[':
		return scanContainer(b, i, depth+1)
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return -1
}

func scanContainer(b []byte, i, depth int) int {
	if depth > maxDepth {
		return -1
	}
	obj := b[i] == '{'
	closer := byte(']')
	if obj {
		closer = '}'
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == closer {
		return i + 1
	}
	for {
		if obj {
			if i >= len(b) || b[i] != '"' {
				return -1
			}
			if i = scanString(b, i); i < 0 {
				return -1
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ':' {
				return -1
			}
			i = skipSpace(b, i+1)
		}
		if i = scanValue(b, i, depth); i < 0 {
			return -1
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case closer:
			return i + 1
		default:
			return -1
		}
	}
}

// scanString returns the index past the string at b[i] (a '"'), or -1.
func scanString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			i++
			if i >= len(b) {
				return -1
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return -1
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return -1
					}
				}
				i += 4
			default:
				return -1
			}
		}
	}
	return -1
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// scanNumber returns the index past the number at b[i], or -1: an optional
// minus, 0 or digits not starting with 0, an optional fraction, an optional
// exponent.
func scanNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func scanLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}
