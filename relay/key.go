package relay

import (
	"encoding/base64"
	"errors"
	"strings"
)

// Keys of a bucket.
//
// A NATS KV key is made of [-/_=.a-zA-Z0-9]. A primary key (the text of a
// string key, or the decimal text of a numeric one) made only of
// [-_a-zA-Z0-9], and not empty, is its own KV key: numeric keys and most
// slugs stay readable (the uuid 3f2a…-…-… too). Any other primary key is
// "=" followed by its bytes in unpadded base64url. Neither form contains a
// dot, so the relay's own entries, whose keys all start with "_relay.",
// never collide with a row.
const (
	// StatusKey is the key of a bucket's status entry (a Status as JSON).
	StatusKey = "_relay.status"
	// reservedPrefix starts every key of the relay's own entries.
	reservedPrefix = "_relay."
	encodedPrefix  = "="
)

// ErrBadKey is returned by DecodeKey for a KV key EncodeKey cannot have made.
var ErrBadKey = errors.New("relay: not a key of an encoded primary key")

// EncodeKey returns the KV key of a primary key given as text.
func EncodeKey(pk string) string {
	if plainKey(pk) {
		return pk
	}
	return encodedPrefix + base64.RawURLEncoding.EncodeToString([]byte(pk))
}

// DecodeKey returns the primary key (as text) of a KV key made by EncodeKey.
func DecodeKey(key string) (string, error) {
	if rest, ok := strings.CutPrefix(key, encodedPrefix); ok {
		b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
		if err != nil || plainKey(string(b)) {
			// A plain key is never encoded: only one KV key per row.
			return "", ErrBadKey
		}
		return string(b), nil
	}
	if !plainKey(key) {
		return "", ErrBadKey
	}
	return key, nil
}

// isRowKey reports whether a KV key is a row's rather than the relay's.
func isRowKey(key string) bool { return !strings.HasPrefix(key, reservedPrefix) }

func plainKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
