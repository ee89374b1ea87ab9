// Package jwtexp reads the expiry of a Directus access token. It is shared
// by the two transports (conn and graphql), which must agree on when a
// token has run its course; it verifies nothing (the server does).
package jwtexp

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

// Expiry returns the exp claim of a JWT, or the zero time when tok is not
// a JWT or has no usable exp (static tokens never expire).
func Expiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == "" {
		return time.Time{}
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}

// Expired reports whether tok is a JWT whose exp is not after now.
func Expired(tok string, now time.Time) bool {
	exp := Expiry(tok)
	return !exp.IsZero() && !now.Before(exp)
}
