// Package jsonskip finds where a JSON value ends without decoding it, for
// the frame splitter of protocol and the init chunker of store, which both
// walk bytes a validator has already accepted.
package jsonskip

// Value returns the index just past the JSON value that starts at b[i], or
// len(b) when it does not end. b[i:] is expected to be valid JSON: Value
// checks nothing, but never reads outside b.
func Value(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return len(b)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			case '"':
				i = Value(b, i) - 1
			}
		}
		return len(b)
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}
