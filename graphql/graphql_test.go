package graphql_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/graphql"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var fastBackoff = conn.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}

func newServer(t *testing.T, opts *directustest.Options) *directustest.Server {
	t.Helper()
	if opts == nil {
		opts = &directustest.Options{}
	}
	opts.GraphQL = true
	s := directustest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

func newManager(t *testing.T, s *directustest.Server, auth conn.Auth) *graphql.Manager {
	t.Helper()
	m, err := graphql.New(&graphql.Config{URL: s.URL(), Auth: auth, Backoff: fastBackoff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func connect(t *testing.T, m *graphql.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		t.Fatal(err)
	}
}

// recorder collects events and signals each one.
type recorder struct {
	mu     sync.Mutex
	events []handlers.Event
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) Handle(ev handlers.Event) error {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
	return nil
}

// wait returns the first n events, failing after 10 s.
func (r *recorder) wait(t *testing.T, n int) []handlers.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.events) >= n {
			out := append([]handlers.Event(nil), r.events[:n]...)
			r.mu.Unlock()
			return out
		}
		got := len(r.events)
		r.mu.Unlock()
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("%d events after 10 s, want %d", got, n)
		}
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func eventStrings(evs []handlers.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Kind.String() + " " + string(ev.Data)
	}
	return out
}

func fields(f ...string) *protocol.Query { return &protocol.Query{Fields: f} }

func TestAuthForms(t *testing.T) {
	s := newServer(t, nil)
	jwt := func(t *testing.T) string {
		tok, err := s.IssueToken(directustest.AdminEmail, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for name, auth := range map[string]func(t *testing.T) conn.Auth{
		"static token": func(*testing.T) conn.Auth { return conn.Auth{Token: directustest.AdminToken} },
		"jwt":          func(t *testing.T) conn.Auth { return conn.Auth{Token: jwt(t)} },
		"token source": func(t *testing.T) conn.Auth {
			tok := jwt(t)
			return conn.Auth{TokenSource: func(context.Context) (string, error) { return tok, nil }}
		},
		"email+password": func(*testing.T) conn.Auth {
			return conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword}
		},
	} {
		t.Run(name, func(t *testing.T) {
			m := newManager(t, s, auth(t))
			connect(t, m)
			rec := newRecorder()
			ctx := context.Background()
			if _, err := m.Subscribe(ctx, graphql.SubscribeOptions{Collection: "posts", Query: fields("id", "title"), Persistent: true}, rec); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Create("posts", map[string]any{"title": name}); err != nil {
				t.Fatal(err)
			}
			ev := rec.wait(t, 1)[0]
			if ev.Kind != handlers.KindCreate {
				t.Fatalf("got %v", ev.Kind)
			}
		})
	}
}

func TestAuthFailures(t *testing.T) {
	s := newServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	m := newManager(t, s, conn.Auth{Token: "wrong"})
	if err := m.Connect(ctx); !errors.Is(err, protocol.ErrAuthFailed) {
		t.Fatalf("bad token: Connect = %v, want AUTH_FAILED", err)
	}
	if st := m.State(); st != conn.StateClosed {
		t.Fatalf("state %v, want closed", st)
	}

	m = newManager(t, s, conn.Auth{Email: directustest.AdminEmail, Password: "nope"})
	if err := m.Connect(ctx); !errors.Is(err, protocol.ErrAuthFailed) && !errors.Is(err, &protocol.ServerError{Code: "INVALID_CREDENTIALS"}) {
		t.Fatalf("bad password: Connect = %v", err)
	}

	// Public mode against a handshake endpoint: connection_init without a
	// token is closed with 4403.
	m = newManager(t, s, conn.Auth{})
	if err := m.Connect(ctx); !errors.Is(err, graphql.ErrForbidden) {
		t.Fatalf("no credential: Connect = %v, want ErrForbidden", err)
	}

	if _, err := graphql.New(&graphql.Config{URL: s.URL(), Auth: conn.Auth{Mode: conn.AuthHandshake}}); err == nil {
		t.Fatal("handshake mode without a credential accepted")
	}
}

func TestStrictMode(t *testing.T) {
	s := newServer(t, &directustest.Options{GraphQLAuthMode: directustest.AuthStrict})
	m := newManager(t, s, conn.Auth{Mode: conn.AuthStrict, Token: directustest.AdminToken})
	connect(t, m)
	bad := newManager(t, s, conn.Auth{Mode: conn.AuthStrict, Token: "wrong"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := bad.Connect(ctx)
	if !errors.Is(err, protocol.ErrAuthFailed) {
		t.Fatalf("strict with a bad token: %v", err)
	}
	if s := err.Error(); contains(s, "wrong") {
		t.Fatalf("the token leaks into the error: %s", s)
	}
}

func contains(s, sub string) bool { return len(sub) > 0 && len(s) >= len(sub) && indexOf(s, sub) >= 0 }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestEventsPerKey(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	ctx := context.Background()
	all, deletes := newRecorder(), newRecorder()
	if _, err := m.Subscribe(ctx, graphql.SubscribeOptions{Collection: "posts", Query: fields("id", "title")}, all); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Subscribe(ctx, graphql.SubscribeOptions{Collection: "posts", Event: protocol.EventDelete, Query: fields("id")}, deletes); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Create("posts", map[string]any{"title": "a"}, map[string]any{"title": "b"})
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := rows[0]["id"], rows[1]["id"]
	if _, err := s.Update("posts", []any{k1, k2}, map[string]any{"title": "c"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("posts", k1, k2); err != nil {
		t.Fatal(err)
	}
	got := eventStrings(all.wait(t, 6))
	want := []string{
		fmt.Sprintf(`create [{"id":"%v","title":"a"}]`, k1),
		fmt.Sprintf(`create [{"id":"%v","title":"b"}]`, k2),
		fmt.Sprintf(`update [{"id":"%v","title":"c"}]`, k1),
		fmt.Sprintf(`update [{"id":"%v","title":"c"}]`, k2),
		fmt.Sprintf(`delete ["%v"]`, k1),
		fmt.Sprintf(`delete ["%v"]`, k2),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
	gotDel := eventStrings(deletes.wait(t, 2))
	if !reflect.DeepEqual(gotDel, want[4:]) {
		t.Fatalf("delete-only events %q, want %q", gotDel, want[4:])
	}
	for _, ev := range all.wait(t, 6) {
		if ev.Collection != "posts" || ev.UID == "" || ev.Item || ev.Received.IsZero() {
			t.Fatalf("event fields: %+v", ev)
		}
	}
}

func TestRefusals(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.ReaderToken})
	connect(t, m)
	ctx := context.Background()
	h := newRecorder()
	for name, opts := range map[string]graphql.SubscribeOptions{
		"filter":   {Collection: "posts", Query: &protocol.Query{Fields: []string{"id"}, Filter: map[string]any{"id": map[string]any{"_eq": 1}}}},
		"sort":     {Collection: "posts", Query: &protocol.Query{Fields: []string{"id"}, Sort: []string{"id"}}},
		"limit":    {Collection: "posts", Query: &protocol.Query{Fields: []string{"id"}, Limit: 5}},
		"item":     {Collection: "posts", Item: 1, Query: fields("id")},
		"init":     {Collection: "posts", Event: protocol.EventInit, Query: fields("id")},
		"wildcard": {Collection: "posts", Query: fields("*")},
		"relation": {Collection: "posts", Query: fields("author.name")},
	} {
		if _, err := m.Subscribe(ctx, opts, h); !errors.Is(err, graphql.ErrUnsupported) {
			t.Errorf("%s: Subscribe = %v, want ErrUnsupported", name, err)
		}
	}
	var ce *protocol.ConfigError
	if _, err := m.Subscribe(ctx, graphql.SubscribeOptions{Collection: "posts"}, h); !errors.As(err, &ce) {
		t.Errorf("no fields: %v, want ConfigError", err)
	}
	if _, err := m.Subscribe(ctx, graphql.SubscribeOptions{Collection: "tags", Query: fields("id")}, h); !errors.Is(err, protocol.ErrForbidden) {
		t.Errorf("unreadable collection: %v, want FORBIDDEN", err)
	}
	if _, err := m.Subscribe(ctx, graphql.SubscribeOptions{Collection: "posts", Query: fields("nope")}, h); !errors.Is(err, protocol.ErrForbidden) {
		t.Errorf("unknown field: %v, want FORBIDDEN", err)
	}
	if len(m.ActiveSubscriptions()) != 0 {
		t.Errorf("refused subscriptions left behind: %v", m.ActiveSubscriptions())
	}
}

// A subscription the server refuses after a reconnect (the identity lost
// its read permission) ends with a *SubscribeError.
func TestServerRefusalEndsSubscription(t *testing.T) {
	s := newServer(t, nil)
	var errs sync.Map
	m, err := graphql.New(&graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: directustest.ReaderToken}, Backoff: fastBackoff,
		OnError: func(e error) { errs.Store(e.Error(), e) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	connect(t, m)
	sub, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("id"), Persistent: true}, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetUserPermissions(directustest.ReaderEmail, map[string]directustest.Permission{}); err != nil {
		t.Fatal(err)
	}
	s.DropConnections()
	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the refused subscription did not end")
	}
	var se *graphql.SubscribeError
	if !errors.As(sub.Err(), &se) || len(se.Messages) == 0 {
		t.Fatalf("Err = %v, want *SubscribeError with messages", sub.Err())
	}
	if m.HasSubscription(sub.UID()) {
		t.Fatal("still listed")
	}
}

func TestUnsubscribeFamily(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	h := newRecorder()
	sub := func(ctx context.Context, uid, coll string, persistent bool) *graphql.Subscription {
		t.Helper()
		s, err := m.Subscribe(ctx, graphql.SubscribeOptions{UID: uid, Collection: coll, Query: fields("id"), Persistent: persistent}, h)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sub(context.Background(), "p1", "posts", true)
	sub(context.Background(), "p2", "posts", false)
	sub(context.Background(), "t1", "tags", false)
	scoped := sub(ctx, "s1", "posts", false)
	var de *graphql.DuplicateError
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{UID: "p1", Collection: "posts", Query: fields("id")}, h); !errors.As(err, &de) {
		t.Fatalf("duplicate uid: %v", err)
	}
	cancel()
	select {
	case <-scoped.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("scoped subscription outlived its context")
	}
	if n := m.UnsubscribeCollection("posts"); n != 1 {
		t.Fatalf("UnsubscribeCollection = %d, want 1 (p2)", n)
	}
	if n := m.UnsubscribeAll(); n != 1 {
		t.Fatalf("UnsubscribeAll = %d, want 1 (t1)", n)
	}
	if !m.HasSubscription("p1") || len(m.ActiveSubscriptions()) != 1 {
		t.Fatalf("persistent p1 not spared: %v", m.ActiveSubscriptions())
	}
	if err := m.Unsubscribe("p1"); err != nil {
		t.Fatal(err)
	}
	if m.HasSubscription("p1") {
		t.Fatal("p1 still there")
	}
	// Ended subscriptions receive nothing: a sentinel subscribed after
	// them gets the event, they do not.
	sentinel := newRecorder()
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("id")}, sentinel); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("posts", map[string]any{"title": "after"}); err != nil {
		t.Fatal(err)
	}
	sentinel.wait(t, 1)
	if h.count() != 0 {
		t.Fatalf("events after unsubscribe: %d", h.count())
	}
}

func TestReconnectRestoresSubscriptions(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	states := m.WatchState(t.Context())
	rec := newRecorder()
	if _, err := m.Subscribe(context.Background(), graphql.SubscribeOptions{Collection: "posts", Query: fields("title"), Persistent: true}, rec); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	waitState(t, states, conn.StateReconnecting)
	waitState(t, states, conn.StateConnected)
	if _, err := s.Create("posts", map[string]any{"title": "after restart"}); err != nil {
		t.Fatal(err)
	}
	if got := eventStrings(rec.wait(t, 1)); got[0] != `create [{"title":"after restart"}]` {
		t.Fatalf("got %q", got)
	}
}

func waitState(t *testing.T, ch <-chan conn.StateChange, want conn.State) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case sc, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed before %v", want)
			}
			if sc.To == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %v within 10 s", want)
		}
	}
}

type post struct {
	ID     int     `json:"id"`
	Title  *string `json:"title"`
	Status *string `json:"status"`
	Views  any     `json:"views"`
}

func newReplica(t testing.TB) *store.Collection[int, post] {
	t.Helper()
	c, err := store.New(store.Options[int, post]{Key: func(p post) int { return p.ID }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// equalToServer compares the replica with the server's rows, both as JSON.
func equalToServer(c *store.Collection[int, post], rows []map[string]any) bool {
	if c.Len() != len(rows) {
		return false
	}
	for _, r := range rows {
		b, _ := json.Marshal(r)
		var want post
		_ = json.Unmarshal(b, &want)
		got, ok := c.Get(want.ID)
		if !ok {
			return false
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if string(gb) != string(wb) {
			return false
		}
	}
	return true
}

// randomWrites makes n random writes; it may run on any goroutine.
func randomWrites(t *testing.T, s *directustest.Server, rng *rand.Rand, n int) {
	t.Helper()
	for range n {
		rows := s.Items("posts")
		switch op := rng.IntN(4); {
		case op == 0 || len(rows) == 0:
			batch := make([]map[string]any, 1+rng.IntN(3))
			for i := range batch {
				batch[i] = map[string]any{"title": fmt.Sprintf("t%d", rng.IntN(1000)), "views": rng.IntN(100)}
			}
			if _, err := s.Create("posts", batch...); err != nil {
				t.Error(err) // callable from any goroutine
				return
			}
		case op == 1 || op == 2:
			k := rows[rng.IntN(len(rows))]["id"]
			if _, err := s.Update("posts", []any{k}, map[string]any{"status": fmt.Sprintf("s%d", rng.IntN(10))}); err != nil {
				t.Error(err) // callable from any goroutine
				return
			}
		default:
			if err := s.Delete("posts", rows[rng.IntN(len(rows))]["id"]); err != nil {
				t.Error(err) // callable from any goroutine
				return
			}
		}
	}
}

func TestReplicaFollowsWritesAndRestart(t *testing.T) {
	s := newServer(t, nil)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	connect(t, m)
	c := newReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub, err := m.Replicate(ctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title", "status", "views"}, Persistent: true}, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	randomWrites(t, s, rng, 40)
	if err := c.WaitFor(ctx, func() bool { return equalToServer(c, s.Items("posts")) }); err != nil {
		t.Fatalf("replica differs after writes: %d rows, server %d", c.Len(), len(s.Items("posts")))
	}
	// Writes while the server is down are recovered by the resync init.
	s.Stop()
	randomWrites(t, s, rng, 10)
	s.Start()
	if err := c.WaitFor(ctx, func() bool { return equalToServer(c, s.Items("posts")) }); err != nil {
		t.Fatalf("replica differs after restart: %d rows, server %d", c.Len(), len(s.Items("posts")))
	}
	randomWrites(t, s, rng, 20)
	if err := c.WaitFor(ctx, func() bool { return equalToServer(c, s.Items("posts")) }); err != nil {
		t.Fatalf("replica differs after writes following the restart")
	}
	if err := sub.Resync(ctx); err != nil {
		t.Fatal(err)
	}
}

// A JWT with nothing to replace it: the live session keeps its events
// after the token's exp (the server keeps the socket, docs/PROTOCOL.md
// §13.2), but the reconnect after a drop and a snapshot read cannot
// authenticate. The Manager closes with ErrCredentialsExpired, reported
// once, without dialing again; a first Connect with such a token fails at
// once with the same cause.
func TestExpiredJWTWithoutRenewal(t *testing.T) {
	s := newServer(t, nil)
	tok, err := s.IssueToken(directustest.AdminEmail, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reported []error
	m, err := graphql.New(&graphql.Config{URL: s.URL(), Auth: conn.Auth{Token: tok}, Backoff: fastBackoff,
		OnError: func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	exp := time.Now().Add(2 * time.Second)
	connect(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	states := m.WatchState(ctx)
	rec := newRecorder()
	rs, err := m.Replicate(ctx, graphql.ReplicaOptions{Collection: "posts", Fields: []string{"id", "title"}}, rec)
	if err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 1) // the init

	// Wait for the token's exp, which the server enforces on new sockets
	// and on REST.
	select {
	case <-time.After(time.Until(exp) + 50*time.Millisecond):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if _, err := s.Create("posts", map[string]any{"title": "after exp"}); err != nil {
		t.Fatal(err)
	}
	if ev := rec.wait(t, 2)[1]; ev.Kind != handlers.KindCreate {
		t.Fatalf("after exp the live session delivered %v, want the create", ev.Kind)
	}
	if err := rs.Resync(ctx); !errors.Is(err, conn.ErrCredentialsExpired) {
		t.Fatalf("Resync after exp = %v, want ErrCredentialsExpired", err)
	}
	if !errors.Is(rs.Err(), conn.ErrCredentialsExpired) {
		t.Fatalf("replica ended with %v", rs.Err())
	}
	s.DropConnections()
	var closed conn.StateChange
	for ch := range states {
		if ch.To == conn.StateClosed {
			closed = ch
			break
		}
	}
	if !errors.Is(closed.Err, conn.ErrCredentialsExpired) {
		t.Fatalf("closed with %v, want ErrCredentialsExpired", closed.Err)
	}
	if n := s.ConnCount(); n != 0 {
		t.Errorf("%d sockets open after the close", n)
	}
	mu.Lock()
	n := 0
	for _, err := range reported {
		if errors.Is(err, conn.ErrCredentialsExpired) {
			n++
		}
	}
	mu.Unlock()
	if n != 1 {
		t.Errorf("ErrCredentialsExpired reported %d times, want once (%v)", n, reported)
	}

	m2 := newManager(t, s, conn.Auth{Token: tok})
	if err := m2.Connect(ctx); !errors.Is(err, conn.ErrCredentialsExpired) {
		t.Fatalf("Connect with an expired JWT = %v, want ErrCredentialsExpired", err)
	}
}

// A server certificate the client does not trust ends the first Connect at
// once with the crypto/x509 error: no retry mends the client's trust.
func TestUntrustedCertificateEndsFirstConnect(t *testing.T) {
	s := directustest.NewTLSServer(&directustest.Options{GraphQL: true})
	t.Cleanup(s.Close)
	m := newManager(t, s, conn.Auth{Token: directustest.AdminToken})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := m.Connect(ctx)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect = %v, want the x509.UnknownAuthorityError at once", err)
	}
	if st := m.State(); st != conn.StateClosed {
		t.Fatalf("state %v, want closed", st)
	}
}
