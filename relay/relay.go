package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// Defaults of Options.
const (
	// DefaultLeaseTTL is how long a leader's lease lasts without renewal:
	// a standby takes over within about this long after the leader died.
	DefaultLeaseTTL = 3 * time.Second
	// DefaultLeaseBucket is the KV bucket of the lease.
	DefaultLeaseBucket = "directus_relay_lease"
	// DefaultDeleteRetention is how long the bucket keeps delete markers
	// before CompactDeletes may remove them: a fleet replica away for
	// longer reloads the whole bucket.
	DefaultDeleteRetention = 24 * time.Hour
	// DefaultHistory is the number of revisions a bucket keeps per key.
	DefaultHistory = 1
)

// handOverTimeout bounds a hand-over's re-read of Directus.
const handOverTimeout = 30 * time.Second

// DefaultRetry paces the relay's retries (watch, writes, lease): 100 ms
// doubling to 5 s.
var DefaultRetry = conn.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, ResetAfter: time.Minute}

// Collection is one collection the relay mirrors into a bucket.
type Collection struct {
	// Name is the Directus collection. Required.
	Name string
	// Query selects the rows; nil means every row (limit -1).
	Query *protocol.Query
	// KeyField is the primary key's field, "id" when empty.
	KeyField string
	// Bucket is the KV bucket; "directus_" + Name when empty (characters
	// a bucket name cannot hold become "_").
	Bucket string
}

// Options configure a Relay; nil means the defaults.
type Options struct {
	// ID names this relay in the lease and the status entries; hostname,
	// pid and a random suffix when empty.
	ID string
	// LeaseBucket holds the lease; DefaultLeaseBucket when empty. Relays
	// sharing it elect one leader among them.
	LeaseBucket string
	// LeaseTTL is DefaultLeaseTTL when 0; at least 100 ms.
	LeaseTTL time.Duration
	// Replicas is the replication of the buckets the relay creates (3 on
	// a clustered JetStream); 1 when 0.
	Replicas int
	// History is the revisions kept per key; DefaultHistory when 0.
	History int
	// ReconcileInterval re-reads each collection from Directus that often
	// (store.Options.ReconcileInterval); 0 never does.
	ReconcileInterval time.Duration
	// DeleteRetention is the age of the delete markers CompactDeletes
	// removes; DefaultDeleteRetention when 0. CompactInterval, when
	// positive, runs CompactDeletes that often while leading.
	DeleteRetention time.Duration
	CompactInterval time.Duration
	// Retry paces retries; DefaultRetry when zero.
	Retry conn.Backoff
	// OnLeader is called with true when this relay starts writing and
	// false when it stops, from one goroutine, in order.
	OnLeader func(leading bool)
	// Logger receives the relay's log; nil is silent.
	Logger *slog.Logger
}

// Stats are a relay's counters, over all its collections.
type Stats struct {
	Puts      uint64 // rows written
	Deletes   uint64 // rows deleted
	Unchanged uint64 // rows found equal in the bucket, not written
	Conflicts uint64 // writes refused because the key had moved on
	HandOvers uint64 // times this relay became leader
}

// Relay mirrors Directus collections into JetStream KV buckets, one bucket
// per collection, while it holds the lease; otherwise it keeps warm
// replicas to take over. See the package documentation for what it
// guarantees. Its methods are safe for concurrent use.
type Relay struct {
	m       *manager.Manager
	js      jetstream.JetStream
	opts    Options
	log     *slog.Logger
	mirrors []*mirror

	leaseMu  sync.Mutex
	lease    *lease // set by Run
	leading  atomic.Bool
	ready    chan struct{} // closed when every mirror was synced and written once as leader, or watched as standby
	runOnce  sync.Once
	stats    struct{ puts, deletes, unchanged, conflicts, handOvers atomic.Uint64 }
	leaderCh chan bool
}

var bucketChars = regexp.MustCompile(`[^a-zA-Z0-9_-]`)

// New returns a relay of the collections through m (connected or not) and
// js, or a *protocol.ConfigError.
func New(m *manager.Manager, js jetstream.JetStream, cols []Collection, opts *Options) (*Relay, error) {
	if m == nil || js == nil {
		return nil, &protocol.ConfigError{Field: "manager/jetstream", Reason: "nil"}
	}
	if len(cols) == 0 {
		return nil, &protocol.ConfigError{Field: "Collections", Reason: "none"}
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.ID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		o.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if o.LeaseBucket == "" {
		o.LeaseBucket = DefaultLeaseBucket
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LeaseTTL < 100*time.Millisecond {
		return nil, &protocol.ConfigError{Field: "LeaseTTL", Reason: "below 100ms"}
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.History == 0 {
		o.History = DefaultHistory
	}
	if o.Replicas < 0 || o.History < 0 || o.History > 64 {
		return nil, &protocol.ConfigError{Field: "Replicas/History", Reason: "out of range (History 1..64)"}
	}
	if o.DeleteRetention == 0 {
		o.DeleteRetention = DefaultDeleteRetention
	}
	if o.Retry == (conn.Backoff{}) {
		o.Retry = DefaultRetry
	}
	if err := o.Retry.Validate("Retry"); err != nil {
		return nil, err
	}
	r := &Relay{m: m, js: js, opts: o, log: slog.New(slog.DiscardHandler), ready: make(chan struct{}), leaderCh: make(chan bool, 16)}
	if o.Logger != nil {
		r.log = o.Logger.With("component", "directus-relay", "relay", o.ID)
	}
	seen := map[string]bool{}
	for _, c := range cols {
		if c.Name == "" {
			return nil, &protocol.ConfigError{Field: "Collection.Name", Reason: "required"}
		}
		if c.KeyField == "" {
			c.KeyField = "id"
		}
		if c.Bucket == "" {
			c.Bucket = BucketName(c.Name)
		}
		if seen[c.Bucket] {
			return nil, &protocol.ConfigError{Field: "Collection.Bucket", Reason: "two collections share bucket " + c.Bucket}
		}
		seen[c.Bucket] = true
		mi, err := newMirror(r, c)
		if err != nil {
			return nil, err
		}
		r.mirrors = append(r.mirrors, mi)
	}
	return r, nil
}

// BucketName is the default bucket of a collection.
func BucketName(collection string) string {
	return "directus_" + bucketChars.ReplaceAllString(collection, "_")
}

// ID is the relay's identity.
func (r *Relay) ID() string { return r.opts.ID }

// Leading reports whether this relay is the writer now.
func (r *Relay) Leading() bool {
	l := r.leaseNow()
	return l != nil && r.leading.Load() && l.held()
}

func (r *Relay) leaseNow() *lease {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	return r.lease
}

// Ready is closed once every collection is synced from Directus and the
// relay either wrote it into its bucket as leader or watches its bucket as
// standby.
func (r *Relay) Ready() <-chan struct{} { return r.ready }

// Stats returns the counters.
func (r *Relay) Stats() Stats {
	return Stats{Puts: r.stats.puts.Load(), Deletes: r.stats.deletes.Load(), Unchanged: r.stats.unchanged.Load(),
		Conflicts: r.stats.conflicts.Load(), HandOvers: r.stats.handOvers.Load()}
}

// ErrRunning is returned by a second Run.
var ErrRunning = errors.New("relay: Run was already called")

// Run creates the buckets, replicates the collections from Directus, and
// takes part in the election until ctx ends: as leader it writes, as
// standby it keeps its replicas warm. On return it resigns the lease (a
// standby takes over at once) and closes the replicas; the manager stays
// the caller's. It returns ctx's error, or the first error that keeps it
// from starting.
func (r *Relay) Run(ctx context.Context) error {
	err := ErrRunning
	r.runOnce.Do(func() { err = r.run(ctx) })
	return err
}

func (r *Relay) run(ctx context.Context) error {
	lkv, err := r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: r.opts.LeaseBucket, TTL: r.opts.LeaseTTL, History: 1, Replicas: r.opts.Replicas,
		Description: "directus-realtime relay lease",
	})
	if err != nil {
		return fmt.Errorf("relay: lease bucket %s: %w", r.opts.LeaseBucket, err)
	}
	r.leaseMu.Lock()
	r.lease = &lease{kv: lkv, id: r.opts.ID, ttl: r.opts.LeaseTTL}
	r.leaseMu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.notifyLeader(ctx)
	}()
	for _, mi := range r.mirrors {
		if err := mi.start(ctx, &wg); err != nil {
			cancel()
			for _, m := range r.mirrors {
				m.close()
			}
			return err
		}
	}
	defer func() {
		r.setLeading(false)
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		r.lease.resign(rctx)
		rcancel()
		for _, mi := range r.mirrors {
			mi.close()
		}
	}()
	r.log.Info("replicas synced; joining the election", "collections", len(r.mirrors))
	go func() {
		for _, mi := range r.mirrors {
			select {
			case <-mi.firstPass:
			case <-ctx.Done():
				return
			}
		}
		close(r.ready)
	}()
	return r.elect(ctx)
}

// elect takes part in the election: a goroutine claims or renews the
// lease every quarter of the TTL (also while a hand-over runs); on winning
// the relay hands over (reconcile, then write), on losing it stops writing.
func (r *Relay) elect(ctx context.Context) error {
	heldCh := make(chan bool, 1)
	// The renewals end before elect returns, so that none races the
	// resignation that follows.
	ctx, cancel := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		r.keepLease(ctx, heldCh)
	}()
	defer func() { cancel(); <-kept }()
	var compact <-chan time.Time
	if r.opts.CompactInterval > 0 {
		t := time.NewTicker(r.opts.CompactInterval)
		defer t.Stop()
		compact = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-compact:
			if r.Leading() {
				if err := r.CompactDeletes(ctx); err != nil && ctx.Err() == nil {
					r.log.Warn("compaction failed", "err", err)
				}
			}
		case held := <-heldCh:
			switch {
			case held && !r.leading.Load():
				r.stats.handOvers.Add(1)
				r.log.Info("leader: reconciling the buckets before writing")
				if err := r.handOver(ctx); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					r.log.Warn("hand-over failed; resigning", "err", err)
					r.lease.resign(ctx)
				}
			case !held && r.leading.Load():
				r.log.Warn("lease lost; standing by")
				r.setLeading(false)
			}
		}
	}
}

// keepLease claims or renews the lease every quarter of the TTL and says
// on heldCh (latest state only) whether it is held.
func (r *Relay) keepLease(ctx context.Context, heldCh chan bool) {
	every := r.opts.LeaseTTL / 4
	for {
		tctx, cancel := context.WithTimeout(ctx, every)
		held, err := r.lease.try(tctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			r.log.Warn("lease request failed", "err", err)
		}
		select {
		case <-heldCh:
		default:
		}
		heldCh <- held
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// handOver makes the relay the writer: each replica is re-read from
// Directus (a read that starts after the former leader's lease ended, so it
// is at least as new as anything that leader wrote), each bucket watcher
// catches up with the bucket's last revision, and then every key is
// compared and only differences are written, before and while events are.
func (r *Relay) handOver(ctx context.Context) error {
	// A leader that cannot re-read Directus resigns rather than hold a
	// lease it does not write under.
	ctx, cancel := context.WithTimeout(ctx, handOverTimeout)
	defer cancel()
	for _, mi := range r.mirrors {
		if err := mi.catchUp(ctx); err != nil {
			return err
		}
	}
	if !r.lease.held() {
		return errors.New("relay: lease expired during the hand-over")
	}
	r.setLeading(true)
	for _, mi := range r.mirrors {
		mi.markAll()
	}
	return nil
}

func (r *Relay) setLeading(on bool) {
	if r.leading.Swap(on) != on {
		select {
		case r.leaderCh <- on:
		default:
		}
	}
}

func (r *Relay) notifyLeader(ctx context.Context) {
	for {
		select {
		case on := <-r.leaderCh:
			if r.opts.OnLeader != nil {
				func() {
					defer func() {
						if v := recover(); v != nil {
							r.log.Error("OnLeader panicked; recovered", "panic", v)
						}
					}()
					r.opts.OnLeader(on)
				}()
			}
		case <-ctx.Done():
			return
		}
	}
}

// CompactDeletes removes from every bucket the delete markers older than
// Options.DeleteRetention, after recording in the status entry the
// revision from which the history is whole again. Only the leader
// compacts; a standby returns nil.
func (r *Relay) CompactDeletes(ctx context.Context) error {
	if !r.Leading() {
		return nil
	}
	for _, mi := range r.mirrors {
		if err := mi.compact(ctx, time.Now().Add(-r.opts.DeleteRetention)); err != nil {
			return err
		}
	}
	return nil
}

// compactAll is CompactDeletes for every marker whatever its age (tests).
func (r *Relay) compactAll(ctx context.Context) error {
	for _, mi := range r.mirrors {
		if err := mi.compact(ctx, time.Now().Add(time.Hour)); err != nil {
			return err
		}
	}
	return nil
}

// Replica returns the relay's replica of a collection (nil for one it does
// not mirror): rows as the JSON Directus sent, keyed by primary key text.
// Read it, do not close it.
func (r *Relay) Replica(collection string) *store.Collection[string, json.RawMessage] {
	for _, mi := range r.mirrors {
		if mi.cfg.Name == collection {
			return mi.rows
		}
	}
	return nil
}
