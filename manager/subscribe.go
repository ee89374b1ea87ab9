package manager

import (
	"context"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// serverSub is one subscription on the server, shared by every local
// subscription with the same collection, query, item and event. All fields
// are guarded by Manager.mu.
type serverSub struct {
	key       string
	seq       uint64                    // creation order, the order restore sends in
	msg       protocol.SubscribeMessage // without uid
	eventOnly bool
	// recompute: the query aggregates, so events (the aggregate of the
	// changed rows alone, docs/PROTOCOL.md §5.5) are answered by a fresh
	// read of the whole aggregate instead of being delivered.
	recompute bool
	locals    []*Subscription

	// wireUID is the uid of the last subscribe frame sent; each attempt
	// gets a new one, never reused, so frames of a replaced attempt are
	// recognised and dropped.
	wireUID  protocol.UID
	awaiting bool          // subscribe sent on the current session, init not received
	sentAt   time.Time     // when the session took the awaited subscribe; zero before
	wait     time.Duration // the init timeout of the current attempt
	handoff  uint64        // the attempt's place among the subscribes handed to sessions
	inflight bool          // the attempt holds an in-flight slot (outbox.go)
	attempt  uint64
	timeouts int // consecutive attempts without init in time, for the backoff
	timer    *time.Timer
}

func (ss *serverSub) stopTimer() {
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
}

// Subscribe subscribes and returns once the subscription's first init
// arrived, bounded by ctx. The handler then receives the init and every
// later event in order. A subscription that is not Persistent ends when ctx
// is done.
//
// A subscription identical to a live one (same collection, query, item and
// event) shares its server subscription: it gets its own init by an items
// read, and the others see nothing of the join.
//
// If opts.UID names a live subscription, no server subscription is made and
// h is not attached: with the same options, Subscribe waits for that
// subscription's first init like its own caller and returns it with a
// *DuplicateError; with other options, it returns a *DuplicateError saying
// what differs (errors.Is(err, ErrConflict)) and no subscription.
//
// A failed Subscribe leaves nothing behind. The server's refusal is returned
// as *protocol.ServerError carrying the local uid; invalid options as
// *protocol.ConfigError.
func (m *Manager) Subscribe(ctx context.Context, opts SubscribeOptions, h handlers.Handler) (*Subscription, error) {
	return m.subscribe(ctx, opts, h, nil)
}

func (m *Manager) subscribe(ctx context.Context, opts SubscribeOptions, h handlers.Handler, scope *Scope) (*Subscription, error) {
	if isNil(h) {
		return nil, &protocol.ConfigError{Field: "handler", Reason: "nil"}
	}
	msg, err := opts.message()
	if err != nil {
		return nil, err
	}
	key := specKey(msg)

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	uid := opts.UID
	if uid == "" {
		m.autoSeq++
		uid = opts.Collection + "#" + strconv.FormatUint(m.autoSeq, 10)
	}
	if existing := m.locals[uid]; existing != nil {
		conflict := existing.conflict(msg, key)
		m.mu.Unlock()
		if conflict != "" {
			return nil, &DuplicateError{UID: uid, Conflict: conflict}
		}
		if err := existing.waitReady(ctx); err != nil {
			return nil, err
		}
		return existing, &DuplicateError{UID: uid}
	}
	s := &Subscription{
		m: m, uid: uid, opts: opts, handler: h, item: msg.Item != nil, created: time.Now(), scope: scope,
		ready: make(chan struct{}), done: make(chan struct{}),
	}
	size, bytes := opts.QueueSize, opts.QueueBytes
	if size <= 0 {
		size = m.opts.QueueSize
	}
	if bytes <= 0 {
		bytes = m.opts.QueueBytes
	}
	s.newQueues(size, bytes)
	m.createSeq++
	s.seq = m.createSeq
	s.opts.UID = uid
	if scope != nil {
		s.opts.Persistent = false
	}
	m.locals[uid] = s
	ss := m.servers[key]
	fresh := ss == nil
	if fresh {
		ss = &serverSub{key: key, seq: s.seq, msg: msg, eventOnly: msg.Event != "", recompute: msg.Query.Aggregated()}
		m.servers[key] = ss
	}
	ss.locals = append(ss.locals, s)
	s.ss = ss
	switch {
	case fresh:
		s.markAwaiting(awaitWire, CauseRequested)
		m.sendSubscribeLocked(ss)
	default:
		// A subscribe under way serves the newcomer too; otherwise it reads
		// its own init, and those already there see nothing.
		m.localResyncLocked(s, CauseRequested)
	}
	m.mu.Unlock()

	if err := s.waitReady(ctx); err != nil {
		_ = m.end(s, err)
		return nil, err
	}
	if scope != nil {
		if !scope.add(s) {
			_ = m.end(s, ErrScopeClosed)
			return nil, ErrScopeClosed
		}
	} else if !opts.Persistent {
		s.bind(ctx)
	}
	return s, nil
}

// isNil reports a nil handler, including a typed nil (a nil HandlerFunc or
// a nil pointer in the interface), which would crash on the first event.
func isNil(h handlers.Handler) bool {
	if h == nil {
		return true
	}
	v := reflect.ValueOf(h)
	switch v.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Map, reflect.Interface, reflect.Chan, reflect.Slice:
		return v.IsNil()
	}
	return false
}

// conflict says what differs between s's options and another subscribe
// frame, or "" when they would share a server subscription. m.mu is held.
func (s *Subscription) conflict(msg protocol.SubscribeMessage, key string) string {
	if s.ss != nil && s.ss.key == key {
		return ""
	}
	mine, err := s.opts.message()
	if err != nil {
		return "options"
	}
	switch {
	case mine.Collection != msg.Collection:
		return "collection"
	case mine.Event != msg.Event:
		return "event"
	case specKey(protocol.SubscribeMessage{Item: mine.Item}) != specKey(protocol.SubscribeMessage{Item: msg.Item}):
		return "item"
	case specKey(mine) != key:
		return "query"
	}
	return ""
}

// waitReady waits for the first init or the failure of the subscription.
func (s *Subscription) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return s.readyErr
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// bind ends the subscription when ctx is done.
func (s *Subscription) bind(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { _ = s.m.end(s, context.Cause(ctx)) })
	s.dmu.Lock()
	s.stopScoped = stop
	s.dmu.Unlock()
}

func (s *Subscription) unbind() {
	s.dmu.Lock()
	stop := s.stopScoped
	s.stopScoped = nil
	s.dmu.Unlock()
	if stop != nil {
		stop()
	}
}

// message checks the options and builds the subscribe frame (without uid).
func (o SubscribeOptions) message() (protocol.SubscribeMessage, error) {
	msg := protocol.SubscribeMessage{Collection: o.Collection, Event: o.Event, Query: o.Query}
	if o.Collection == "" {
		return msg, &protocol.ConfigError{Field: "Collection", Reason: "required"}
	}
	switch o.Event {
	case "", protocol.EventCreate, protocol.EventUpdate, protocol.EventDelete:
	default:
		return msg, &protocol.ConfigError{Field: "Event", Reason: "must be create, update or delete"}
	}
	switch item := o.Item.(type) {
	case nil:
	case string:
		msg.Item = item
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, json.Number:
		msg.Item = item
	case float64:
		if item != math.Trunc(item) || math.IsInf(item, 0) {
			return msg, &protocol.ConfigError{Field: "Item", Reason: "a number key must be an integer"}
		}
		msg.Item = item
	default:
		return msg, &protocol.ConfigError{Field: "Item", Reason: "must be a string or an integer"}
	}
	if o.Query != nil {
		if _, err := json.Marshal(o.Query); err != nil {
			return msg, &protocol.ConfigError{Field: "Query", Reason: err.Error()}
		}
	}
	if o.Query.Aggregated() && (o.Event != "" || o.Item != nil) {
		return msg, &protocol.ConfigError{Field: "Query", Reason: "an aggregate needs a subscription to the whole collection: without Event and Item, its init is what the manager reads again after each event"}
	}
	if o.QueueSize < 0 || o.QueueBytes < 0 {
		return msg, &protocol.ConfigError{Field: "QueueSize", Reason: "negative"}
	}
	return msg, nil
}

// specKey identifies identical subscriptions. encoding/json sorts map keys,
// so equal queries give equal keys.
func specKey(msg protocol.SubscribeMessage) string {
	b, _ := json.Marshal(msg)
	return string(b)
}

// Unsubscribe ends the subscription with this uid, persistent or not.
func (m *Manager) Unsubscribe(uid string) error {
	m.mu.Lock()
	s := m.locals[uid]
	m.mu.Unlock()
	if s == nil {
		return ErrNotFound
	}
	return m.end(s, ErrUnsubscribed)
}

// UnsubscribeCollection ends the non-persistent subscriptions of a
// collection and returns how many it ended.
func (m *Manager) UnsubscribeCollection(collection string) int {
	return m.endWhere(func(s *Subscription) bool { return !s.opts.Persistent && s.opts.Collection == collection })
}

// UnsubscribeAll ends every non-persistent subscription and returns how
// many it ended. Persistent ones end only with Unsubscribe(uid) or Close.
func (m *Manager) UnsubscribeAll() int {
	return m.endWhere(func(s *Subscription) bool { return !s.opts.Persistent })
}

func (m *Manager) endWhere(match func(*Subscription) bool) int {
	m.mu.Lock()
	var victims []*Subscription
	for _, s := range m.locals {
		if match(s) {
			victims = append(victims, s)
		}
	}
	m.mu.Unlock()
	n := 0
	for _, s := range victims {
		if m.end(s, ErrUnsubscribed) == nil {
			n++
		}
	}
	return n
}

// end removes s from the registry, and its server subscription when s was
// the last one on it.
func (m *Manager) end(s *Subscription, cause error) error {
	m.mu.Lock()
	if m.locals[s.uid] != s {
		m.mu.Unlock()
		return ErrNotFound
	}
	delete(m.locals, s.uid)
	m.detachLocked(s)
	m.mu.Unlock()
	s.unbind()
	if s.scope != nil {
		s.scope.remove(s)
	}
	if !s.finish(cause) {
		return ErrNotFound
	}
	return nil
}

// detachLocked takes s off its server subscription and unsubscribes that
// one from the server when nobody is left on it.
func (m *Manager) detachLocked(s *Subscription) {
	ss := s.ss
	if ss == nil {
		return
	}
	s.ss = nil
	for i, l := range ss.locals {
		if l == s {
			last := len(ss.locals) - 1
			ss.locals[i] = ss.locals[last]
			ss.locals[last] = nil
			ss.locals = ss.locals[:last]
			break
		}
	}
	if len(ss.locals) == 0 {
		m.dropServerLocked(ss)
	}
}

func (m *Manager) dropServerLocked(ss *serverSub) {
	if m.servers[ss.key] == ss {
		delete(m.servers, ss.key)
	}
	ss.stopTimer()
	m.releaseLocked(ss)
	if ss.wireUID != "" {
		delete(m.wire, ss.wireUID)
		m.sendLocked(protocol.UnsubscribeMessage{UID: ss.wireUID})
		ss.wireUID = ""
	}
}
