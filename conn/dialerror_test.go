package conn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// A TLS verification failure must stay reachable through a DialError, so
// that a caller can tell a missing CA from a network error; it used to be
// dropped with the url.Error that carries the strict-mode token.
func TestDialErrorKeepsTheTLSCause(t *testing.T) {
	verify := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	ue := &url.Error{Op: "Get", URL: "https://h/websocket?access_token=s3cret", Err: verify}
	err := fmt.Errorf("failed to WebSocket dial: failed to send handshake request: %w", ue)
	for _, secret := range []string{"s3cret", ""} {
		de := newDialError("wss://h/websocket", err, secret)
		var unknown x509.UnknownAuthorityError
		var cv *tls.CertificateVerificationError
		if !errors.As(de, &unknown) || !errors.As(de, &cv) {
			t.Fatalf("secret %q: x509 cause not reachable from %v", secret, de)
		}
		var leaked *url.Error
		if errors.As(de, &leaked) {
			t.Fatalf("secret %q: the url.Error with the token is reachable", secret)
		}
		if secret != "" && strings.Contains(de.Error(), secret) {
			t.Fatalf("token in %q", de.Error())
		}
		for _, e := range de.Unwrap() {
			if strings.Contains(e.Error(), "s3cret") {
				t.Fatalf("token in cause %q", e.Error())
			}
		}
	}
}
