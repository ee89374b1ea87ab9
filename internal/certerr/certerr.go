// Package certerr recognises a TLS certificate the client refused, for the
// two transports (conn and graphql), which treat it alike: before the
// first session it is the client's configuration (its RootCAs, its URL),
// which no retry mends; once a session has been up, a rotation on the
// server's side may heal, and it is retried with backoff.
package certerr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// Is reports that err holds the refusal of the server's certificate:
// unknown authority, wrong host name, expired or otherwise invalid.
func Is(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}
