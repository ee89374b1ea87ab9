package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/store"
)

// SourceOptions configure a Source; nil means the defaults.
type SourceOptions struct {
	// Revision, when set, resumes after that revision instead of loading
	// the bucket: the Collection given to Follow must hold the rows as of
	// it (the Revision of an earlier Source that fed it). When the bucket's
	// history no longer reaches back to it, the Source reloads the bucket.
	Revision uint64
	// Retry paces the re-watches after a NATS outage; DefaultRetry when
	// zero.
	Retry  conn.Backoff
	Logger *slog.Logger
}

// SourceStats are a Source's counters.
type SourceStats struct {
	Loads    uint64 // full loads of the bucket: the first and the reloads
	Resumes  uint64 // watches resumed from a revision
	Entries  uint64 // bucket entries applied
	Revision uint64 // the last revision applied
}

// Source feeds a store.Collection from a relay's bucket (a fleet replica):
//
//	src := relay.NewSource(js, relay.BucketName("posts"), nil)
//	go posts.Follow(ctx, src) // posts is a store.Collection[int64, Post]
//	posts.WaitSynced(ctx)
//
// It loads the bucket's current values and hands them to the Collection as
// one init once the initial values are done and the relay's status entry
// says the bucket is complete; the Collection is synced then. Live updates
// follow as events. After the watch ends (a NATS outage the client could
// not ride out) it resumes from the last revision it applied, so nothing
// is reloaded; when the bucket's history no longer reaches back that far
// (delete markers compacted, a bucket made anew), it reloads the bucket as
// an init with Resync set, and the Collection's listeners hear exactly the
// differences. A Source feeds one Collection at a time.
type Source struct {
	js     jetstream.JetStream
	bucket string
	opts   SourceOptions
	log    *slog.Logger

	rev                     atomic.Uint64
	loads, resumes, entries atomic.Uint64
	running                 sync.Mutex
}

// NewSource returns a Source of bucket.
func NewSource(js jetstream.JetStream, bucket string, opts *SourceOptions) *Source {
	s := &Source{js: js, bucket: bucket, log: slog.New(slog.DiscardHandler)}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Retry == (conn.Backoff{}) {
		s.opts.Retry = DefaultRetry
	}
	if s.opts.Logger != nil {
		s.log = s.opts.Logger.With("component", "directus-relay-source", "bucket", bucket)
	}
	s.rev.Store(s.opts.Revision)
	return s
}

// Revision is the last revision applied: what a later Source resumes from.
func (s *Source) Revision() uint64 { return s.rev.Load() }

// Stats returns the counters.
func (s *Source) Stats() SourceStats {
	return SourceStats{Loads: s.loads.Load(), Resumes: s.resumes.Load(), Entries: s.entries.Load(), Revision: s.rev.Load()}
}

var _ store.Source = (*Source)(nil)

// errReload ends a watch that must become a full load.
var errReload = errors.New("relay: the bucket's history does not reach back to the revision; reloading")

// Run implements store.Source.
func (s *Source) Run(ctx context.Context, h handlers.Handler) error {
	s.running.Lock()
	defer s.running.Unlock()
	step := 0
	loaded := s.rev.Load() > 0
	var kv jetstream.KeyValue
	for {
		var err error
		if kv == nil {
			kv, err = s.js.KeyValue(ctx, s.bucket)
		}
		if err == nil {
			if loaded {
				err = s.resume(ctx, kv, h)
			} else {
				err = s.load(ctx, kv, h, s.loads.Load() > 0 || s.opts.Revision > 0)
				if err == nil {
					loaded = true
					continue
				}
			}
			if errors.Is(err, errReload) {
				s.log.Info("history gone; reloading the bucket", "revision", s.rev.Load())
				loaded = false
				continue
			}
			if err == nil {
				step = 0
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if herr := (*handlerError)(nil); errors.As(err, &herr) {
			return herr.err
		}
		s.log.Warn("bucket watch ended; retrying", "err", err)
		t := time.NewTimer(s.opts.Retry.Delay(step))
		step++
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// handlerError carries an error of the handler, which ends Run.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }

// load reads every current value, then gives them as one init once the
// status says complete, then follows live updates (returning only when the
// watch ends).
func (s *Source) load(ctx context.Context, kv jetstream.KeyValue, h handlers.Handler, resync bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := watchChan(ctx, s.js, s.bucket, 0)
	rows := map[string][]byte{}
	var (
		initDone, complete bool
		last               uint64
	)
	for e := range updates {
		if e == nil {
			initDone = true
		} else {
			last = max(last, e.rev)
			switch key := e.key; {
			case key == StatusKey:
				st, ok := parseStatus(e.value)
				complete = ok && st.Complete && !e.deleted
			case !isRowKey(key):
			case !e.deleted:
				rows[key] = e.value
			default:
				delete(rows, key)
			}
		}
		if !initDone || !complete {
			continue
		}
		var b bytes.Buffer
		b.WriteByte('[')
		n := 0
		for _, v := range rows {
			if n > 0 {
				b.WriteByte(',')
			}
			b.Write(v)
			n++
		}
		b.WriteByte(']')
		rows = nil
		// Counted before the Collection shows the rows, so that whoever
		// sees them sees the counters too.
		s.loads.Add(1)
		s.entries.Add(uint64(n))
		s.rev.Store(last)
		if err := h.Handle(handlers.Event{Kind: handlers.KindInit, Resync: resync, Collection: s.bucket, Data: b.Bytes(), Received: time.Now()}); err != nil {
			return &handlerError{err}
		}
		s.log.Info("bucket loaded", "rows", n, "revision", last, "reload", resync)
		return s.follow(ctx, updates, h)
	}
	return errors.New("relay: bucket watch ended")
}

// resume follows the bucket after the last revision applied, unless its
// history no longer reaches back there.
func (s *Source) resume(ctx context.Context, kv jetstream.KeyValue, h handlers.Handler) error {
	rev := s.rev.Load()
	st, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	state := st.(*jetstream.KeyValueBucketStatus).StreamInfo().State
	if state.LastSeq < rev {
		return errReload // a bucket made anew
	}
	if e, err := kv.Get(ctx, StatusKey); err == nil {
		if status, ok := parseStatus(e.Value()); ok && status.HistoryFrom > rev+1 {
			return errReload
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := watchChan(ctx, s.js, s.bucket, rev+1)
	s.resumes.Add(1)
	s.log.Info("resumed", "revision", rev)
	return s.follow(ctx, updates, h)
}

// follow applies live entries; consecutive puts that are ready together
// go as one update event, consecutive deletes as one delete event.
func (s *Source) follow(ctx context.Context, updates <-chan *kvEntry, h handlers.Handler) error {
	var (
		puts, dels bytes.Buffer
		np, nd     int
		last       uint64
	)
	flush := func() error {
		if np > 0 {
			puts.WriteByte(']')
			if err := h.Handle(handlers.Event{Kind: handlers.KindUpdate, Collection: s.bucket, Data: puts.Bytes(), Received: time.Now()}); err != nil {
				return &handlerError{err}
			}
		}
		if nd > 0 {
			dels.WriteByte(']')
			if err := h.Handle(handlers.Event{Kind: handlers.KindDelete, Collection: s.bucket, Data: dels.Bytes(), Received: time.Now()}); err != nil {
				return &handlerError{err}
			}
		}
		s.entries.Add(uint64(np + nd))
		puts.Reset()
		dels.Reset()
		np, nd = 0, 0
		if last > 0 {
			s.rev.Store(max(s.rev.Load(), last))
		}
		return nil
	}
	for {
		var e *kvEntry
		var ok bool
		select {
		case e, ok = <-updates:
		default:
			if err := flush(); err != nil {
				return err
			}
			select {
			case e, ok = <-updates:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !ok {
			if err := flush(); err != nil {
				return err
			}
			return errors.New("relay: bucket watch ended")
		}
		if e == nil || e.rev <= max(s.rev.Load(), last) {
			continue
		}
		key := e.key
		if key == StatusKey {
			if err := flush(); err != nil {
				return err
			}
			s.rev.Store(e.rev)
			continue
		}
		pk, err := DecodeKey(key)
		if err != nil || !isRowKey(key) {
			continue
		}
		last = e.rev
		if !e.deleted {
			if nd > 0 {
				if err := flush(); err != nil {
					return err
				}
			}
			if np == 0 {
				puts.WriteByte('[')
			} else {
				puts.WriteByte(',')
			}
			puts.Write(e.value)
			np++
		} else {
			if np > 0 {
				if err := flush(); err != nil {
					return err
				}
			}
			if nd == 0 {
				dels.WriteByte('[')
			} else {
				dels.WriteByte(',')
			}
			kb, _ := json.Marshal(pk)
			dels.Write(kb)
			nd++
		}
		if np+nd >= 512 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}
