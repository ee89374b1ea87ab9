package jwtexp

import (
	"encoding/base64"
	"testing"
	"time"
)

func jwtWith(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + ".sig"
}

func TestExpiry(t *testing.T) {
	tok := jwtWith(`{"id":"x","exp":1795402173,"iat":1795401273}`)
	if got := Expiry(tok); !got.Equal(time.Unix(1795402173, 0)) {
		t.Errorf("exp = %v", got)
	}
	if Expired(tok, time.Unix(1795402172, 0)) || !Expired(tok, time.Unix(1795402173, 0)) {
		t.Error("Expired disagrees with exp")
	}
	for _, tok := range []string{"admin-static-token-d1r3ctus", "a.b.c", jwtWith(`{"id":"x"}`), jwtWith(`{"exp":"soon"}`), jwtWith(`{"exp":-5}`), jwtWith(`[]`), "..", ""} {
		if got := Expiry(tok); !got.IsZero() {
			t.Errorf("%q: exp = %v, want none", tok, got)
		}
		if Expired(tok, time.Now()) {
			t.Errorf("%q: expired, want never", tok)
		}
	}
}
