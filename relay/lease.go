package relay

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseKey is the key of the lease in the lease bucket; its value names
// the leader ({"id": …, "since": …}).
const LeaseKey = "leader"

// lease is a relay's claim to be the one writer: a KV entry in a bucket
// whose MaxAge is the TTL. Claimed with Create (only when the key is
// absent: the holder's last renewal expired or it resigned), renewed with
// Update on the revision it holds (compare-and-set: a renewal after someone
// else claimed it fails). A holder counts itself leader only until TTL
// minus a margin after it sent its last successful renewal: the server
// expires the entry TTL after it stored it, which is later, so two relays
// never both count themselves leader (with clocks that run at the same
// rate; a paused process is caught by the writes' compare-and-set).
type lease struct {
	kv  jetstream.KeyValue
	id  string
	ttl time.Duration

	mu    sync.Mutex
	rev   uint64    // the lease entry's revision while held
	until time.Time // held until then (monotonic)
}

type leaseValue struct {
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
}

// validFor is the part of the TTL a holder counts on.
func (l *lease) validFor() time.Duration { return l.ttl - l.ttl/4 }

// held reports whether the lease is held now.
func (l *lease) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev != 0 && time.Now().Before(l.until)
}

// try claims or renews the lease; it reports whether it is held after.
func (l *lease) try(ctx context.Context) (bool, error) {
	l.mu.Lock()
	rev, until := l.rev, l.until
	l.mu.Unlock()
	start := time.Now()
	val, _ := json.Marshal(leaseValue{ID: l.id, Since: start.UTC()})
	var (
		newRev uint64
		err    error
	)
	if rev != 0 && start.Before(until) {
		newRev, err = l.kv.Update(ctx, LeaseKey, val, rev)
	} else {
		newRev, err = l.kv.Create(ctx, LeaseKey, val)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.rev, l.until = newRev, start.Add(l.validFor())
		return true, nil
	case isConflict(err):
		// Someone else holds it (or our renewal came too late).
		l.rev = 0
		return false, nil
	default:
		// Unknown outcome (network): the lease lasts until its time.
		return l.rev != 0 && time.Now().Before(l.until), err
	}
}

// resign gives the lease up at once, so that a standby takes over without
// waiting for the TTL.
func (l *lease) resign(ctx context.Context) {
	l.mu.Lock()
	rev := l.rev
	l.rev = 0
	l.mu.Unlock()
	if rev != 0 {
		_ = l.kv.Delete(ctx, LeaseKey, jetstream.LastRevision(rev))
	}
}

// isConflict reports a compare-and-set that failed: the key is not at the
// revision the write expected.
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
