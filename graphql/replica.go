package graphql

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// ReplicaOptions configure Replicate.
type ReplicaOptions struct {
	// Collection and Fields are as for Subscribe; Fields must include
	// KeyField.
	Collection string
	Fields     []string
	// KeyField is the primary key's field, "id" when empty.
	KeyField string
	// StringKey says the primary key is a string even when it looks like
	// an integer. GraphQL sends every primary key as a string (its ID
	// type); Replicate turns it back into the JSON type the REST snapshot
	// has, and, while the snapshot has no row to learn it from, into a
	// number when it is a decimal integer, unless StringKey.
	StringKey bool
	// ReconcileInterval, when positive, re-reads the snapshot that often
	// (±10% jitter) and delivers it as an init with Resync set: it corrects
	// rows that left the identity's permissions (GraphQL sends nothing for
	// them) and any event lost in the gap the protocol leaves (§13.5).
	ReconcileInterval time.Duration
	// Retry paces snapshot reads that fail; zero means conn.Backoff's
	// defaults.
	Retry conn.Backoff
	// UID, Persistent, QueueSize and QueueBytes are as for Subscribe.
	UID        string
	Persistent bool
	QueueSize  int
	QueueBytes int64
}

// Replicate feeds h (typically a store.Collection) with a replica of
// collection: it subscribes to all its events, buffers them, reads the
// snapshot over REST (GET /items/<collection>?fields=…&limit=-1, same
// token, configured host only), delivers it as a KindInit event and then
// the buffered and live events, in order. After every reconnect, overflow,
// panic of h, reconcile and Resync the same happens again, with Resync set
// on the init. It returns once the first init is queued for h, or with the
// snapshot's refusal (*protocol.ServerError).
func (m *Manager) Replicate(ctx context.Context, opts ReplicaOptions, h handlers.Handler) (*Subscription, error) {
	if opts.KeyField == "" {
		opts.KeyField = "id"
	}
	so := SubscribeOptions{Collection: opts.Collection, UID: opts.UID, Persistent: opts.Persistent,
		QueueSize: opts.QueueSize, QueueBytes: opts.QueueBytes}
	if len(opts.Fields) > 0 {
		so.Query = &protocol.Query{Fields: opts.Fields}
	}
	fields, err := so.validate()
	if err != nil {
		return nil, err
	}
	hasKey := false
	for _, f := range fields {
		hasKey = hasKey || f == opts.KeyField
	}
	if !hasKey {
		return nil, &protocol.ConfigError{Field: "Fields", Reason: "must include KeyField " + opts.KeyField}
	}
	if err := opts.Retry.Validate("Retry"); err != nil {
		return nil, err
	}
	rep := &replicaState{opts: opts, first: make(chan error, 1)}
	sub, err := m.subscribe(ctx, so, fields, h, rep)
	if err != nil {
		return nil, err
	}
	var first error
	select {
	case first = <-rep.first:
		return firstSnapshot(m, sub, first)
	case <-ctx.Done():
	case <-sub.done:
	}
	// The first snapshot may have been delivered (and handled) just before
	// the replica ended with ctx: a select among ready cases picks at
	// random, so the outcome is looked at first.
	select {
	case first = <-rep.first:
		return firstSnapshot(m, sub, first)
	default:
	}
	if ctx.Err() != nil {
		m.end(sub, nil)
		return nil, ctx.Err()
	}
	if err := sub.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("directus graphql: the replica ended before its first snapshot")
}

// firstSnapshot is Replicate's answer once the first snapshot's outcome is
// known.
func firstSnapshot(m *Manager, sub *Subscription, err error) (*Subscription, error) {
	if err != nil {
		m.end(sub, err)
		return nil, err
	}
	return sub, nil
}

// Resync re-reads a replica's snapshot and returns once its init is queued
// for the handler. It fails with ErrUnsupported for a plain subscription.
func (s *Subscription) Resync(ctx context.Context) error {
	if s.replica == nil {
		return &UnsupportedError{Option: "Resync", Reason: "only a Replicate subscription has a snapshot to re-read"}
	}
	s.m.mu.Lock()
	if s.ended {
		err := s.err
		s.m.mu.Unlock()
		return endedError(err)
	}
	synced := s.replica.startLocked()
	s.m.mu.Unlock()
	select {
	case <-synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return endedError(s.Err())
	}
}

// errEnded is what Resync returns for a subscription that ended without a
// cause (Unsubscribe, its context).
var errEnded = errors.New("directus graphql: subscription ended")

// endedError is the error of a call on an ended subscription: its cause,
// or errEnded.
func endedError(cause error) error {
	if cause != nil {
		return cause
	}
	return errEnded
}

// replicaState is the snapshot side of a Replicate subscription, guarded
// by Manager.mu.
type replicaState struct {
	opts  ReplicaOptions
	sub   *Subscription
	first chan error // the outcome of the first snapshot

	epoch     uint64
	buffering bool
	buffer    []handlers.Event
	bufBytes  int64
	synced    chan struct{} // closed when the current epoch is delivered
	inited    bool
	failures  int  // consecutive failed reads or panics: the retry step
	keyKind   int8 // 0 unknown, 1 number, -1 string
	reconcile *time.Timer
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// startLocked begins a new snapshot epoch at once: buffer, read, deliver.
func (r *replicaState) startLocked() chan struct{} { return r.startAfterLocked(closedChan) }

// startAfterLocked begins a new snapshot epoch whose read waits for ready.
func (r *replicaState) startAfterLocked(ready <-chan struct{}) chan struct{} {
	s := r.sub
	if s == nil || s.ended {
		return make(chan struct{})
	}
	r.epoch++
	r.buffering = true
	r.buffer, r.bufBytes = nil, 0
	if r.synced == nil || isClosed(r.synced) {
		r.synced = make(chan struct{})
	}
	if r.reconcile != nil {
		r.reconcile.Stop()
		r.reconcile = nil
	}
	ep, delay := r.epoch, time.Duration(0)
	if r.failures > 0 {
		delay = r.opts.Retry.Delay(r.failures - 1)
	}
	s.m.workers.Add(1)
	go r.read(ep, delay, ready)
	return r.synced
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (r *replicaState) stopLocked() {
	if r.reconcile != nil {
		r.reconcile.Stop()
		r.reconcile = nil
	}
}

// event takes one live event: buffered during a snapshot, queued otherwise.
func (r *replicaState) event(ev handlers.Event) {
	s := r.sub
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.ended || r.sub == nil {
		return
	}
	if r.buffering {
		size := int64(len(ev.Data))
		if r.bufBytes+size > s.queueBytes && len(r.buffer) > 0 {
			// More changed while the snapshot was read than a queue
			// holds: read again, later.
			r.startLocked()
			return
		}
		r.buffer = append(r.buffer, ev)
		r.bufBytes += size
		return
	}
	r.normalize(&ev)
	s.pushLocked(ev, int64(len(ev.Data)))
}

// read reads the snapshot of epoch ep after delay, retrying with backoff.
func (r *replicaState) read(ep uint64, delay time.Duration, ready <-chan struct{}) {
	s := r.sub
	m := s.m
	defer m.workers.Done()
	select {
	case <-ready:
	case <-s.done:
		return
	case <-m.ctx.Done():
		return
	}
	reported := false
	for attempt := 0; ; attempt++ {
		if delay > 0 && !m.wait(delay) {
			return
		}
		m.mu.Lock()
		stale := s.ended || r.epoch != ep
		m.mu.Unlock()
		if stale {
			return
		}
		data, err := r.fetch(m.ctx)
		if m.ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		if s.ended || r.epoch != ep {
			m.mu.Unlock()
			return
		}
		if err != nil {
			if !r.inited && attempt == 0 {
				// The first snapshot's refusal is Replicate's answer.
				select {
				case r.first <- err:
				default:
				}
				m.mu.Unlock()
				return
			}
			m.mu.Unlock()
			if errors.Is(err, conn.ErrCredentialsExpired) {
				// No snapshot can be read any more: the replica ends
				// with the cause instead of retrying for ever.
				m.reportError(err)
				m.end(s, err)
				return
			}
			if !reported {
				reported = true
				m.reportError(err)
			}
			m.s.log.Warn("graphql: snapshot read failed", "collection", r.opts.Collection, "err", err)
			delay = r.opts.Retry.Delay(attempt)
			continue
		}
		r.deliverLocked(data)
		m.mu.Unlock()
		return
	}
}

func (r *replicaState) fetch(ctx context.Context) (json.RawMessage, error) {
	m := r.sub.m
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tok, err := m.creds.accessToken(ctx)
	if err != nil {
		return nil, err
	}
	data, err := m.s.readItems(ctx, tok, r.opts.Collection, r.sub.fields)
	var se *protocol.ServerError
	if errors.As(err, &se) && (se.Code == protocol.CodeTokenExpired || se.Code == "INVALID_CREDENTIALS" || se.Code == protocol.CodeAuthFailed) {
		// The socket lives on with an expired token (§13.2); REST does
		// not: a login token is replaced before the next attempt.
		m.creds.invalidate(tok)
	}
	return data, err
}

// deliverLocked queues the init and the buffered events.
func (r *replicaState) deliverLocked(data json.RawMessage) {
	s := r.sub
	r.learnKeyKind(data)
	init := handlers.Event{Kind: handlers.KindInit, Resync: r.inited, UID: s.uid, Collection: s.opts.Collection, Data: data, Received: time.Now()}
	// The init replaces whatever was still queued. It and the buffered
	// events are queued whatever the queue's bounds: the buffer is itself
	// bounded by QueueBytes (event), and an overflow here would start the
	// next epoch in the middle of delivering this one.
	s.q.Discard()
	s.q.Push(init, int64(len(data)))
	for _, ev := range r.buffer {
		r.normalize(&ev)
		s.q.Push(ev, int64(len(ev.Data)))
	}
	s.wakeLocked()
	r.buffer, r.bufBytes, r.buffering = nil, 0, false
	first := !r.inited
	r.inited = true
	r.failures = 0
	if !isClosed(r.synced) {
		close(r.synced)
	}
	if first {
		select {
		case r.first <- nil:
		default:
		}
	}
	if d := r.opts.ReconcileInterval; d > 0 {
		d = time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
		r.reconcile = time.AfterFunc(d, func() {
			s.m.mu.Lock()
			defer s.m.mu.Unlock()
			if !s.ended && !r.buffering {
				r.startLocked()
			}
		})
	}
}

// learnKeyKind reads the JSON type of the key from the snapshot's first row.
func (r *replicaState) learnKeyKind(data json.RawMessage) {
	var rows []map[string]json.RawMessage
	if json.Unmarshal(data, &rows) != nil || len(rows) == 0 {
		return
	}
	k := bytes.TrimSpace(rows[0][r.opts.KeyField])
	if len(k) == 0 {
		return
	}
	if k[0] == '"' {
		r.keyKind = -1
	} else {
		r.keyKind = 1
	}
}

// normalize turns GraphQL's string IDs back into numbers when the key is
// numeric (§13.4), in the row's key field and in a delete's key.
func (r *replicaState) normalize(ev *handlers.Event) {
	numeric := r.keyKind == 1 || (r.keyKind == 0 && !r.opts.StringKey)
	if !numeric {
		return
	}
	fix := func(raw json.RawMessage) (json.RawMessage, bool) {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return raw, false
		}
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return raw, false
		}
		return json.RawMessage(s), true
	}
	switch ev.Kind {
	case handlers.KindDelete:
		var keys []json.RawMessage
		if json.Unmarshal(ev.Data, &keys) == nil && len(keys) == 1 {
			if k, ok := fix(keys[0]); ok {
				ev.Data = wrap(k)
			}
		}
	case handlers.KindCreate, handlers.KindUpdate:
		var rows []map[string]json.RawMessage
		if json.Unmarshal(ev.Data, &rows) != nil || len(rows) != 1 {
			return
		}
		if k, ok := fix(rows[0][r.opts.KeyField]); ok {
			rows[0][r.opts.KeyField] = k
			if b, err := json.Marshal(rows[0]); err == nil {
				ev.Data = wrap(b)
			}
		}
	}
}
