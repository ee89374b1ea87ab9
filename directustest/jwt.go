package directustest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

// jwtHeader is the fixed header of the tokens Directus issues.
const jwtHeader = `{"alg":"HS256","typ":"JWT"}`

var b64 = base64.RawURLEncoding

// jwtClaims are the claims of a Directus access token, in Directus' order.
type jwtClaims struct {
	ID          string `json:"id"`
	Role        string `json:"role"`
	AppAccess   bool   `json:"app_access"`
	AdminAccess bool   `json:"admin_access"`
	Iat         int64  `json:"iat"`
	Exp         int64  `json:"exp"`
	Iss         string `json:"iss"`
}

// signJWT issues an HS256 access token for u valid for ttl. exp has the
// one-second resolution of JWTs: the token expires at the start of the
// second now+ttl falls in.
func signJWT(secret []byte, u *user, now time.Time, ttl time.Duration) (string, time.Time) {
	claims := jwtClaims{
		ID:          u.id,
		Role:        u.roleID,
		AppAccess:   true,
		AdminAccess: u.admin,
		Iat:         now.Unix(),
		Exp:         now.Add(ttl).Unix(),
		Iss:         "directus",
	}
	payload, _ := json.Marshal(claims)
	signing := b64.EncodeToString([]byte(jwtHeader)) + "." + b64.EncodeToString(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + b64.EncodeToString(mac.Sum(nil)), time.Unix(claims.Exp, 0)
}

type jwtError int

const (
	jwtInvalid jwtError = iota
	jwtExpired
)

func (e jwtError) Error() string {
	if e == jwtExpired {
		return "jwt expired"
	}
	return "invalid jwt"
}

// looksLikeJWT reports whether tok has the three-part shape of a JWT.
func looksLikeJWT(tok string) bool {
	return strings.Count(tok, ".") == 2
}

// verifyJWT checks the signature, the issuer and the expiry (expired when
// now, in whole seconds, has reached exp, as jsonwebtoken does).
func verifyJWT(secret []byte, tok string, now time.Time) (*jwtClaims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, jwtInvalid
	}
	hdr, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, jwtInvalid
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "HS256" {
		return nil, jwtInvalid
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, jwtInvalid
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, jwtInvalid
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, jwtInvalid
	}
	var c jwtClaims
	if json.Unmarshal(payload, &c) != nil || c.Iss != "directus" || c.ID == "" {
		return nil, jwtInvalid
	}
	if c.Exp != 0 && now.Unix() >= c.Exp {
		return nil, jwtExpired
	}
	return &c, nil
}
