package conn

import (
	"math/rand/v2"
	"time"

	"github.com/e41af43e/directus-realtime/protocol"
)

// Defaults of Backoff, as in client-go's reflector: 0.8 s doubling to 30 s,
// reset after two minutes of healthy connection.
const (
	DefaultBackoffInitial    = 800 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultBackoffFactor     = 2.0
	DefaultBackoffJitter     = 0.5
	DefaultBackoffResetAfter = 2 * time.Minute
)

// Backoff paces a retry loop: the reconnects of a Conn (Config.Backoff), and
// every other retry of the module (manager.Options.Retry, store.Options.Retry)
// uses the same type. The n-th consecutive failed attempt waits
// min(Initial·Factor^n, Max), less a random part of up to Jitter of it, so
// that many clients restarted together do not return together. Max is never
// exceeded. Only a success resets the sequence: for a connection, a session
// that stayed up for ResetAfter.
//
// Zero fields mean their defaults; a Factor below 1, a Jitter above 1, a
// negative duration or an Initial above a Max that is set is a
// *protocol.ConfigError; with Max unset, an Initial above DefaultBackoffMax
// raises Max to it.
type Backoff struct {
	Initial    time.Duration // 0 means DefaultBackoffInitial
	Max        time.Duration // 0 means DefaultBackoffMax
	Factor     float64       // 0 means DefaultBackoffFactor; must be ≥ 1
	Jitter     float64       // 0 means DefaultBackoffJitter; negative means none; at most 1
	ResetAfter time.Duration // 0 means DefaultBackoffResetAfter

	// MaxAttempts, when positive, gives up after that many consecutive
	// failed attempts (a Conn then closes). 0 means never give up.
	MaxAttempts int
}

// Validate reports a Backoff that would not back off as documented. field
// names it in the error ("Backoff", "Retry", ...).
func (b Backoff) Validate(field string) error {
	bad := func(f, reason string) error { return &protocol.ConfigError{Field: field + "." + f, Reason: reason} }
	switch {
	case b.Initial < 0:
		return bad("Initial", "negative")
	case b.Max < 0:
		return bad("Max", "negative")
	case b.ResetAfter < 0:
		return bad("ResetAfter", "negative")
	case b.Factor != 0 && b.Factor < 1:
		return bad("Factor", "below 1: the delay would shrink after each failure")
	case b.Jitter > 1:
		return bad("Jitter", "above 1")
	case b.MaxAttempts < 0:
		return bad("MaxAttempts", "negative")
	}
	if b.Max != 0 && b.Initial > b.Max {
		return bad("Initial", "above Max")
	}
	return nil
}

func (b Backoff) withDefaults() Backoff {
	setDuration(&b.Initial, DefaultBackoffInitial)
	// An Initial above the default Max, with Max unset, means long waits:
	// Max follows it.
	setDuration(&b.Max, max(DefaultBackoffMax, b.Initial))
	setDuration(&b.ResetAfter, DefaultBackoffResetAfter)
	if b.Factor == 0 {
		b.Factor = DefaultBackoffFactor
	}
	switch {
	case b.Jitter == 0:
		b.Jitter = DefaultBackoffJitter
	case b.Jitter < 0:
		b.Jitter = 0
	}
	return b
}

// Delay returns the wait before attempt n (0-based) of a run of failures.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := float64(b.Initial)
	for i := 0; i < n && d < float64(b.Max); i++ {
		d *= max(b.Factor, 1)
	}
	d = min(d, float64(b.Max))
	d -= d * min(b.Jitter, 1) * rand.Float64()
	return time.Duration(d)
}
