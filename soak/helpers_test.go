package soak_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

func TestMain(m *testing.M) {
	if os.Getenv(childServerEnv) != "" {
		serveChild() // the server process of the load tests
		return
	}
	goleak.VerifyTestMain(m)
}

// Rows of the three collections the soak writes to: the seeded posts
// (integer keys) and tags (uuid keys), and notes (integer keys), which alone
// also receives quiet writes.
type post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

type tag struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type note struct {
	ID    int64  `json:"id"`
	Body  string `json:"body"`
	Level int64  `json:"level"`
}

// decodeRow converts one of the server's rows (as Server.Items returns it)
// into T through JSON, as a client would see it.
func decodeRow[T any](m map[string]any) (T, error) {
	var v T
	b, err := json.Marshal(m)
	if err != nil {
		return v, err
	}
	err = json.Unmarshal(b, &v)
	return v, err
}

// observer counts what one manager's callbacks report.
type observer struct {
	name                                  string
	secrets                               *secretScan
	connects, reconnects, reauths         atomic.Int64
	protocolErrs, serverErrs, handlerErrs atomic.Int64
	connectFails, reauthFails, otherErrs  atomic.Int64
	authFailed, refreshTokens             atomic.Int64
	mu                                    sync.Mutex
	samples                               []string // a few unexpected errors, for the log
}

func (o *observer) onError(err error) {
	o.secrets.checkError(err)
	var se *protocol.ServerError
	var he *manager.HandlerError
	msg := err.Error()
	switch {
	case errors.Is(err, protocol.ErrProtocol):
		o.protocolErrs.Add(1)
	case errors.As(err, &he):
		o.handlerErrs.Add(1)

	case strings.Contains(msg, "connect attempt"):
		o.connectFails.Add(1)
	case strings.Contains(msg, "re-authentication") || strings.Contains(msg, "token refresh"):
		o.reauthFails.Add(1)
		o.sample(msg)
	case errors.As(err, &se):
		o.serverErrs.Add(1)
		if se.Code == protocol.CodeAuthFailed {
			o.authFailed.Add(1)
		}
	default:
		o.otherErrs.Add(1)
		o.sample(msg)
	}
}

// sample keeps the first errors of kinds a healthy run should rarely see.
func (o *observer) sample(msg string) {
	o.mu.Lock()
	if len(o.samples) < 5 {
		o.samples = append(o.samples, msg)
	}
	o.mu.Unlock()
}

func (o *observer) onState(sc conn.StateChange) {
	if sc.Err != nil {
		o.secrets.checkError(sc.Err)
	}
	if sc.To == conn.StateReconnecting {
		o.reconnects.Add(1)
	}
}

func (o *observer) onConnect(_ *conn.Session, r conn.ConnectReason) {
	if r == conn.ReasonReauthenticated {
		o.reauths.Add(1)
	} else {
		o.connects.Add(1)
	}
}

func (o *observer) onRefreshToken(tok string) {
	o.refreshTokens.Add(1)
	o.secrets.add(tok)
}

func (o *observer) String() string {
	return fmt.Sprintf("%s: connects %d (reconnects %d), reauths %d, connect failures %d, reauth failures %d, protocol errors %d, uid-less server errors %d (AUTH_FAILED %d), handler errors %d, refresh tokens %d, other errors %d",
		o.name, o.connects.Load(), o.reconnects.Load(), o.reauths.Load(), o.connectFails.Load(), o.reauthFails.Load(),
		o.protocolErrs.Load(), o.serverErrs.Load(), o.authFailed.Load(), o.handlerErrs.Load(), o.refreshTokens.Load(), o.otherErrs.Load())
}

// secretScan is the io.Writer under a debug-level slog text handler: it
// keeps nothing but the lines that contain a secret. Secrets are added as
// they appear (refresh tokens rotate).
type secretScan struct {
	mu      sync.Mutex
	secrets []string
	leaks   []string
	lines   atomic.Int64
}

func newSecretScan(secrets ...string) *secretScan { return &secretScan{secrets: secrets} }

func (s *secretScan) add(secret string) {
	s.mu.Lock()
	s.secrets = append(s.secrets, secret)
	s.mu.Unlock()
}

func (s *secretScan) Write(p []byte) (int, error) {
	s.lines.Add(1)
	s.check(string(p))
	return len(p), nil
}

func (s *secretScan) checkError(err error) { s.check(err.Error()) }

func (s *secretScan) check(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sec := range s.secrets {
		if strings.Contains(text, sec) {
			s.leaks = append(s.leaks, text)
			return
		}
	}
}

func (s *secretScan) leaked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.leaks)
}

// gate blocks handlers and listeners while it is shut: the slow-consumer
// fault shuts it, lets events pile up, and opens it again.
type gate struct {
	mu sync.Mutex
	ch chan struct{} // nil while open
}

func (g *gate) shut() {
	g.mu.Lock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
	g.mu.Unlock()
}

func (g *gate) open() {
	g.mu.Lock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
	g.mu.Unlock()
}

func (g *gate) pass() {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// mirror is a hand-written replica of posts built by a raw manager
// subscription whose handler passes through a gate: the slow handler whose
// queue overflows. It must end equal to the server too.
type mirror struct {
	gate *gate

	mu      sync.Mutex
	rows    map[int64]post
	changed chan struct{} // closed and replaced after every event
	inits   int
}

func newMirror(g *gate) *mirror {
	return &mirror{gate: g, rows: map[int64]post{}, changed: make(chan struct{})}
}

func (m *mirror) Handle(ev handlers.Event) error {
	m.gate.pass()
	var err error
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev.Kind {
	case handlers.KindInit:
		var items []post
		if items, err = handlers.Items[post](ev); err == nil {
			m.rows = make(map[int64]post, len(items))
			for _, p := range items {
				m.rows[p.ID] = p
			}
			m.inits++
		}
	case handlers.KindCreate, handlers.KindUpdate:
		var items []post
		if items, err = handlers.Items[post](ev); err == nil {
			for _, p := range items {
				m.rows[p.ID] = p
			}
		}
	case handlers.KindDelete:
		var keys []handlers.Key
		if keys, err = handlers.Keys(ev); err == nil {
			for _, k := range keys {
				if id, perr := strconv.ParseInt(string(k), 10, 64); perr == nil {
					delete(m.rows, id)
				}
			}
		}
	}
	close(m.changed)
	m.changed = make(chan struct{})
	return err
}

// waitFor waits until cond, evaluated under the mirror's lock, holds.
func (m *mirror) waitFor(ctx context.Context, cond func(rows map[int64]post) bool) error {
	for {
		m.mu.Lock()
		ok, ch := cond(m.rows), m.changed
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *mirror) snapshot() map[int64]post {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.rows)
}

// listenMirror rebuilds a replica from its listener's changes, re-reading a
// snapshot after every OpReset, as the store documentation says to.
type listenMirror struct {
	gate *gate
	coll *store.Collection[int64, post]

	mu     sync.Mutex
	rows   map[int64]post
	resets int
}

func (l *listenMirror) OnChange(ch store.Change[int64, post]) {
	l.gate.pass()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch ch.Op {
	case store.OpAdd, store.OpUpdate:
		l.rows[ch.Key] = ch.New
	case store.OpDelete:
		delete(l.rows, ch.Key)
	case store.OpReset:
		l.resets++
		l.rows = l.coll.Snapshot()
	}
}

// replica is one store.Collection under test with the rule that selects
// and shapes its rows from the server's.
type replica[K comparable, T any] struct {
	label      string
	collection string
	strict     bool // equal to the server without a reconcile
	coll       *store.Collection[K, T]
	sub        *manager.Subscription
	key        func(T) K
	match      func(T) bool // the query's filter; nil means every row
	project    func(T) T    // the query's fields; nil means every field
}

// checked is what the soak needs of a replica, whatever its types.
type checked interface {
	name() string
	isStrict() bool
	subscription() *manager.Subscription
	stats() store.Stats
	diff(srv *directustest.Server) error
	waitEqual(ctx context.Context, srv *directustest.Server) error
	waitRow(ctx context.Context, row map[string]any) error
	reconcile(ctx context.Context) error
}

func (r *replica[K, T]) name() string                        { return r.label }
func (r *replica[K, T]) isStrict() bool                      { return r.strict }
func (r *replica[K, T]) subscription() *manager.Subscription { return r.sub }
func (r *replica[K, T]) stats() store.Stats                  { return r.coll.Stats() }
func (r *replica[K, T]) reconcile(ctx context.Context) error { return r.coll.Reconcile(ctx) }

// want returns the rows the replica must hold: the server's, through the
// replica's query.
func (r *replica[K, T]) want(srv *directustest.Server) (map[K]T, error) {
	out := map[K]T{}
	for _, m := range srv.Items(r.collection) {
		v, err := decodeRow[T](m)
		if err != nil {
			return nil, err
		}
		if r.match != nil && !r.match(v) {
			continue
		}
		if r.project != nil {
			v = r.project(v)
		}
		out[r.key(v)] = v
	}
	return out, nil
}

func (r *replica[K, T]) diff(srv *directustest.Server) error {
	want, err := r.want(srv)
	if err != nil {
		return err
	}
	return diffRows(r.label, want, r.coll.Snapshot())
}

// waitEqual waits until the replica equals the server (which must not
// change meanwhile), re-checking after every applied event.
func (r *replica[K, T]) waitEqual(ctx context.Context, srv *directustest.Server) error {
	want, err := r.want(srv)
	if err != nil {
		return err
	}
	err = r.coll.WaitFor(ctx, func() bool { return reflect.DeepEqual(r.coll.Snapshot(), want) })
	if err != nil {
		return fmt.Errorf("%w: %w", err, diffRows(r.label, want, r.coll.Snapshot()))
	}
	return nil
}

// waitRow waits until the replica holds row (a server row) as the server
// has it.
func (r *replica[K, T]) waitRow(ctx context.Context, row map[string]any) error {
	v, err := decodeRow[T](row)
	if err != nil {
		return err
	}
	if r.project != nil {
		v = r.project(v)
	}
	k := r.key(v)
	return r.coll.WaitFor(ctx, func() bool {
		got, ok := r.coll.Get(k)
		return ok && reflect.DeepEqual(got, v)
	})
}

// diffRows describes how got differs from want, or returns nil.
func diffRows[K comparable, T any](label string, want, got map[K]T) error {
	if reflect.DeepEqual(want, got) {
		return nil
	}
	var missing, extra, changed []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, fmt.Sprint(k))
		case !reflect.DeepEqual(g, w):
			changed = append(changed, fmt.Sprintf("%v: have %+v want %+v", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, fmt.Sprint(k))
		}
	}
	first := func(s []string) []string {
		slices.Sort(s)
		return s[:min(len(s), 5)]
	}
	return fmt.Errorf("%s: %d rows, want %d: %d missing %v, %d extra %v, %d differ %v",
		label, len(got), len(want), len(missing), first(missing), len(extra), first(extra), len(changed), first(changed))
}
