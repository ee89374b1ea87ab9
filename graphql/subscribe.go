package graphql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/queue"
	"github.com/e41af43e/directus-realtime/protocol"
)

// SubscribeOptions are manager.SubscribeOptions as far as the GraphQL
// endpoint can serve them.
type SubscribeOptions struct {
	// Collection is required, and must be a GraphQL name.
	Collection string
	// Query.Fields are the fields selected in data, required: GraphQL has
	// no "*". Relational fields are not supported (they need a nested
	// selection). Any other part of Query is refused with an
	// *UnsupportedError: the server's _mutated field takes no filter,
	// sort, limit or search.
	Query *protocol.Query
	// Item is refused (*UnsupportedError): there is no single-item form.
	Item any
	// Event, when set (protocol.EventCreate, EventUpdate or EventDelete),
	// delivers only that action. protocol.EventInit is refused: the
	// endpoint sends no init (Replicate reads one over REST).
	Event string
	// UID names the subscription locally; a second Subscribe with an
	// active UID fails with *DuplicateError. Empty means a generated one.
	UID string
	// Persistent subscriptions live until Unsubscribe or Close, and
	// UnsubscribeCollection and UnsubscribeAll spare them. Others end when
	// the ctx given to Subscribe is done.
	Persistent bool
	// QueueSize and QueueBytes bound the events waiting for the handler; 0
	// means Config.QueueSize and QueueBytes.
	QueueSize  int
	QueueBytes int64
}

// DuplicateError is the refusal of a Subscribe whose UID is active.
type DuplicateError struct{ UID string }

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("directus graphql: uid %q is already subscribed", e.UID)
}

// ErrOverflow is the Err of the KindError event a plain subscription
// receives in place of the events discarded because its handler fell a
// whole queue behind. (A replica re-reads its snapshot instead.)
var ErrOverflow = errors.New("directus graphql: the handler fell behind; queued events were discarded")

func (o *SubscribeOptions) validate() ([]string, error) {
	if !isName(o.Collection) {
		return nil, &protocol.ConfigError{Field: "Collection", Reason: "must be a GraphQL name ([_A-Za-z][_0-9A-Za-z]*)"}
	}
	if o.Item != nil {
		return nil, &UnsupportedError{Option: "Item", Reason: "the GraphQL endpoint has no single-item subscription; subscribe to the collection"}
	}
	switch o.Event {
	case "", protocol.EventCreate, protocol.EventUpdate, protocol.EventDelete:
	case protocol.EventInit:
		return nil, &UnsupportedError{Option: "Event init", Reason: "the GraphQL endpoint sends no init; use Replicate for a snapshot followed by the changes"}
	default:
		return nil, &protocol.ConfigError{Field: "Event", Reason: "must be create, update or delete"}
	}
	if o.Query == nil || len(o.Query.Fields) == 0 {
		return nil, &protocol.ConfigError{Field: "Query.Fields", Reason: "required: GraphQL selects named fields"}
	}
	q := *o.Query
	q.Fields = nil
	if !isZeroQuery(q) {
		return nil, &UnsupportedError{Option: "Query", Reason: "the GraphQL endpoint takes no filter, search, sort, limit, offset, page, meta or deep; only Fields"}
	}
	for _, f := range o.Query.Fields {
		if f == "*" || strings.Contains(f, "*") {
			return nil, &UnsupportedError{Option: "Query.Fields", Reason: "wildcards: GraphQL selects named fields"}
		}
		if !isName(f) {
			return nil, &UnsupportedError{Option: "Query.Fields", Reason: fmt.Sprintf("%q: only fields of the collection itself (GraphQL names), no dotted relational paths", protocol.Truncate(f, 60))}
		}
	}
	return slices.Clone(o.Query.Fields), nil
}

func isZeroQuery(q protocol.Query) bool {
	return q.Fields == nil && q.Filter == nil && q.Search == "" && q.Sort == nil && q.Limit == 0 &&
		q.Offset == 0 && q.Page == 0 && q.Meta == "" && q.Deep == nil
}

// Subscribe starts a subscription whose events go to h. While a session
// is up it returns once the server has read the subscribe (the pong of a
// ping sent after it, §13.5); otherwise at once, and the subscribe goes
// out with the next session. graphql-ws acknowledges no subscribe, so
// Subscribe first checks, by a REST read of no row (GET /items/<collection>
// ?limit=0 with the same token and fields), that the collection exists,
// the fields exist and the identity may read them, and refuses with that
// read's *protocol.ServerError otherwise. A refusal the server sends later
// (a *SubscribeError) ends the subscription: Done closes and Err says why.
//
// Events are create, update and delete, one per key (a batch of n rows is n
// events), shaped as on the REST endpoint so that handlers and store work
// unchanged: Data is an array of one row for create and update and an
// array of one key for delete. There is never an init.
func (m *Manager) Subscribe(ctx context.Context, opts SubscribeOptions, h handlers.Handler) (*Subscription, error) {
	fields, err := opts.validate()
	if err != nil {
		return nil, err
	}
	if err := m.precheck(ctx, opts.Collection, fields); err != nil {
		return nil, err
	}
	return m.subscribe(ctx, opts, fields, h, nil)
}

// precheck asks REST for no row of collection with fields.
func (m *Manager) precheck(ctx context.Context, collection string, fields []string) error {
	tok, err := m.creds.accessToken(ctx)
	if err != nil {
		return err
	}
	q := url.Values{"limit": {"0"}, "fields": {strings.Join(fields, ",")}}
	var rows json.RawMessage
	return m.s.restDo(ctx, http.MethodGet, "/items/"+url.PathEscape(collection), q, tok, nil, &rows)
}

func (m *Manager) subscribe(ctx context.Context, opts SubscribeOptions, fields []string, h handlers.Handler, rep *replicaState) (*Subscription, error) {
	if h == nil || isNilHandler(h) {
		return nil, &protocol.ConfigError{Field: "handler", Reason: "nil"}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	qs, qb := opts.QueueSize, opts.QueueBytes
	if qs <= 0 {
		qs = m.s.QueueSize
	}
	if qb <= 0 {
		qb = m.s.QueueBytes
	}
	sub := &Subscription{
		m:          m,
		opts:       opts,
		fields:     fields,
		h:          h,
		done:       make(chan struct{}),
		wake:       make(chan struct{}, 1),
		q:          queue.New[handlers.Event](qs, qb),
		queueBytes: qb,
		replica:    rep,
	}
	if rep != nil {
		rep.sub = sub
	}
	m.wmu.Lock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.wmu.Unlock()
		return nil, protocol.ErrClosed
	}
	if opts.UID == "" {
		m.nextUID++
		sub.uid = "gql-" + strconv.FormatUint(m.nextUID, 10)
		for m.subs[sub.uid] != nil {
			m.nextUID++
			sub.uid = "gql-" + strconv.FormatUint(m.nextUID, 10)
		}
	} else {
		if m.subs[opts.UID] != nil {
			m.mu.Unlock()
			m.wmu.Unlock()
			return nil, &DuplicateError{UID: opts.UID}
		}
		sub.uid = opts.UID
	}
	m.subs[sub.uid] = sub
	m.workers.Add(1)
	go sub.work()
	ss := m.sess
	var f frame
	ready := make(chan struct{})
	if ss != nil {
		f = m.attachLocked(sub, ss, ready)
	}
	m.mu.Unlock()
	if ss != nil {
		m.writeFrames(ss, []frame{f})
		_ = ss.ping(ctx, ready)
	}
	m.wmu.Unlock()
	if !opts.Persistent {
		stop := context.AfterFunc(ctx, func() { m.end(sub, nil) })
		m.mu.Lock()
		sub.stopScope = stop
		m.mu.Unlock()
	}
	if ss != nil {
		// The pong of the ping sent after the subscribe: the server has
		// read it (§13.5). A session lost meanwhile closes ready too; the
		// next one restores the subscription.
		select {
		case <-ready:
		case <-ctx.Done():
			m.end(sub, nil)
			return nil, ctx.Err()
		}
	}
	return sub, nil
}

func isNilHandler(h handlers.Handler) bool {
	switch v := h.(type) {
	case handlers.HandlerFunc:
		return v == nil
	}
	return false
}

// Unsubscribe ends the subscription uid, persistent or not.
func (m *Manager) Unsubscribe(uid string) error {
	m.mu.Lock()
	sub := m.subs[uid]
	m.mu.Unlock()
	if sub == nil {
		return fmt.Errorf("directus graphql: no subscription %q", uid)
	}
	m.end(sub, nil)
	return nil
}

// UnsubscribeCollection ends the non-persistent subscriptions of collection
// and returns how many.
func (m *Manager) UnsubscribeCollection(collection string) int {
	return m.endWhere(func(s *Subscription) bool { return !s.opts.Persistent && s.opts.Collection == collection })
}

// UnsubscribeAll ends every non-persistent subscription and returns how
// many.
func (m *Manager) UnsubscribeAll() int {
	return m.endWhere(func(s *Subscription) bool { return !s.opts.Persistent })
}

func (m *Manager) endWhere(match func(*Subscription) bool) int {
	m.mu.Lock()
	var victims []*Subscription
	for _, s := range m.subs {
		if match(s) {
			victims = append(victims, s)
		}
	}
	m.mu.Unlock()
	for _, s := range victims {
		m.end(s, nil)
	}
	return len(victims)
}

// end removes sub and tells the server (complete) when it is live there.
func (m *Manager) end(sub *Subscription, cause error) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	if sub.ended {
		m.mu.Unlock()
		return
	}
	sub.ended, sub.err = true, cause
	delete(m.subs, sub.uid)
	var f frame
	ss := m.sess
	send := false
	if sub.wireID != "" {
		delete(m.byWireID, sub.wireID)
		if ss != nil && sub.sentOn == ss {
			f, send = frame{Type: "complete", ID: sub.wireID}, true
		}
	}
	if sub.replica != nil {
		sub.replica.stopLocked()
	}
	close(sub.done)
	stopScope := sub.stopScope
	m.mu.Unlock()
	if stopScope != nil {
		stopScope()
	}
	if send {
		m.writeFrames(ss, []frame{f})
	}
}

// Info describes one subscription.
type Info struct {
	UID        string
	Collection string
	Event      string
	Fields     []string
	Persistent bool
	Replica    bool
}

// ActiveSubscriptions lists the live subscriptions, by uid.
func (m *Manager) ActiveSubscriptions() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.subs))
	for _, s := range m.subs {
		out = append(out, Info{UID: s.uid, Collection: s.opts.Collection, Event: s.opts.Event,
			Fields: slices.Clone(s.fields), Persistent: s.opts.Persistent, Replica: s.replica != nil})
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.UID, b.UID) })
	return out
}

// HasSubscription reports whether uid is live.
func (m *Manager) HasSubscription(uid string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.subs[uid] != nil
}

// Subscription returns the live subscription uid, or nil.
func (m *Manager) Subscription(uid string) *Subscription {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.subs[uid]
}
