package conn

import (
	"math/rand/v2"
	"time"
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

// Backoff paces reconnect attempts. The n-th consecutive failed attempt waits
// min(Initial·Factor^n, Max), less a random part of up to Jitter of it, so
// that many clients restarted together do not return together. Max is never
// exceeded. A session that stayed up for ResetAfter resets the sequence.
type Backoff struct {
	Initial    time.Duration // 0 means DefaultBackoffInitial
	Max        time.Duration // 0 means DefaultBackoffMax
	Factor     float64       // 0 means DefaultBackoffFactor; must be ≥ 1
	Jitter     float64       // 0 means DefaultBackoffJitter; negative means none; at most 1
	ResetAfter time.Duration // 0 means DefaultBackoffResetAfter

	// MaxAttempts, when positive, closes the Conn after that many
	// consecutive failed reconnect attempts. 0 means never give up.
	MaxAttempts int
}

func (b Backoff) withDefaults() Backoff {
	setDuration(&b.Initial, DefaultBackoffInitial)
	setDuration(&b.Max, DefaultBackoffMax)
	setDuration(&b.ResetAfter, DefaultBackoffResetAfter)
	if b.Factor < 1 {
		b.Factor = DefaultBackoffFactor
	}
	switch {
	case b.Jitter == 0:
		b.Jitter = DefaultBackoffJitter
	case b.Jitter < 0:
		b.Jitter = 0
	case b.Jitter > 1:
		b.Jitter = 1
	}
	return b
}

// Delay returns the wait before attempt n (0-based) of a run of failures.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := float64(b.Initial)
	for i := 0; i < n && d < float64(b.Max); i++ {
		d *= b.Factor
	}
	d = min(d, float64(b.Max))
	d -= d * b.Jitter * rand.Float64()
	return time.Duration(d)
}
