package faultproxy

// End-to-end checks: a conn.Conn talks to a directustest.Server through the
// proxy, and the faults the proxy injects at the TCP level are survived the
// way the conn package promises.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/protocol"
)

// stack is a server, a proxy in front of it and a client config aimed at
// the proxy.
type stack struct {
	srv  *directustest.Server
	p    *Proxy
	cfg  conn.Config
	errs chan error              // everything OnError receives
	subs chan *protocol.Message  // everything OnSubscription receives
	c    *conn.Conn              // set by connect
	st   <-chan conn.StateChange // set by connect
}

func newStack(t *testing.T) *stack {
	t.Helper()
	srv := directustest.NewServer(nil)
	t.Cleanup(srv.Close)
	p := newProxy(t, strings.TrimPrefix(srv.URL(), "http://"))
	s := &stack{srv: srv, p: p, errs: make(chan error, 256), subs: make(chan *protocol.Message, 256)}
	s.cfg = conn.Config{
		URL:            p.URL("http"),
		Auth:           conn.Auth{Token: directustest.AdminToken},
		Backoff:        conn.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		PingInterval:   -1,
		RequestTimeout: 5 * time.Second,
		OnError: func(err error) {
			select {
			case s.errs <- err:
			default:
			}
		},
		OnSubscription: func(m *protocol.Message) {
			select {
			case s.subs <- m:
			default:
			}
		},
	}
	return s
}

// start creates the Conn and watches its state; connect also connects it.
func (s *stack) start(t *testing.T) {
	t.Helper()
	c, err := conn.New(&s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s.c = c
	s.st = c.WatchState(ctxT(t))
}

func (s *stack) connect(t *testing.T) {
	t.Helper()
	s.start(t)
	if err := s.c.Connect(ctxT(t)); err != nil {
		t.Fatalf("Connect through the proxy: %v", err)
	}
}

// waitState waits for the next change to want; the timeout only guards
// against a hang.
func (s *stack) waitState(t *testing.T, want conn.State) conn.StateChange {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case sc, ok := <-s.st:
			if !ok {
				t.Fatalf("state channel closed before %v", want)
			}
			if sc.To == want {
				return sc
			}
		case <-timeout:
			t.Fatalf("state %v not reached (now %v)", want, s.c.State())
		}
	}
}

// waitError waits for an OnError error matching target.
func (s *stack) waitError(t *testing.T, target error) error {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case err := <-s.errs:
			if errors.Is(err, target) {
				return err
			}
			t.Logf("OnError: %v", err)
		case <-timeout:
			t.Fatalf("no error matching %v reported", target)
		}
	}
}

// waitSub waits for a subscription frame with the given event.
func (s *stack) waitSub(t *testing.T, event string) *protocol.Message {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m := <-s.subs:
			if m.Err != nil {
				t.Fatalf("subscription error: %v", m.Err)
			}
			if m.Event == event {
				return m
			}
		case <-timeout:
			t.Fatalf("no %s frame", event)
		}
	}
}

// works proves the current session end to end with a ping and the
// connection counts on both sides.
func (s *stack) works(t *testing.T) {
	t.Helper()
	if _, err := s.c.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping through the proxy: %v", err)
	}
	if err := s.srv.WaitConns(ctxT(t), 1); err != nil {
		t.Fatalf("server connections: %v (have %d)", err, s.srv.ConnCount())
	}
	if err := s.p.WaitConns(ctxT(t), 1); err != nil {
		t.Fatalf("proxied connections: %v (have %d)", err, s.p.Conns())
	}
}

// TestConnReconnectsAfterCut: a Cut resets the client's socket; the Conn
// notices (leaves the connected state with a cause), reconnects through the
// proxy with a new session, and that session works.
func TestConnReconnectsAfterCut(t *testing.T) {
	s := newStack(t)
	s.connect(t)
	s.works(t)
	first := s.c.Session().ID()

	s.p.Cut()
	sc := s.waitState(t, conn.StateReconnecting)
	if sc.Err == nil {
		t.Fatal("no cause for the lost session")
	}
	t.Logf("session lost: %v", sc.Err)
	s.waitState(t, conn.StateConnected)
	if s.c.Session().ID() == first {
		t.Fatal("same session after the cut")
	}
	s.works(t)
}

// TestConnDetectsStall: a stalled path keeps the TCP connection open but
// silent, which only the heartbeat can detect. The Conn drops the session
// with ErrHeartbeatTimeout, its reconnect attempts through the stalled proxy
// time out, and once the stall ends it reconnects.
func TestConnDetectsStall(t *testing.T) {
	s := newStack(t)
	s.cfg.PingInterval = 50 * time.Millisecond
	s.cfg.PingTimeout = 150 * time.Millisecond
	s.cfg.DialTimeout = 300 * time.Millisecond
	s.connect(t)
	s.works(t)

	s.p.Stall(true)
	sc := s.waitState(t, conn.StateReconnecting)
	if !errors.Is(sc.Err, conn.ErrHeartbeatTimeout) {
		t.Fatalf("session lost with %v, want ErrHeartbeatTimeout", sc.Err)
	}
	// New connections are accepted but silent: the upgrade times out.
	s.waitError(t, context.DeadlineExceeded)
	if s.c.State() != conn.StateReconnecting {
		t.Fatalf("state %v while stalled", s.c.State())
	}

	s.p.Stall(false)
	s.waitState(t, conn.StateConnected)
	s.works(t)
}

// TestConnSplitAndDelay: with every byte forwarded by its own write (so
// every WebSocket frame arrives split across TCP reads) and a delay on every
// chunk, the Conn still authenticates, subscribes, receives events, large
// frames included, and gets items replies; the ping's round trip shows the
// delay in both directions.
func TestConnSplitAndDelay(t *testing.T) {
	const delay = 20 * time.Millisecond
	s := newStack(t)
	s.p.SetSplit(1)
	s.p.SetDelay(delay)
	s.connect(t)

	if err := s.c.Send(ctxT(t), protocol.SubscribeMessage{Collection: "posts", UID: "all"}); err != nil {
		t.Fatal(err)
	}
	s.waitSub(t, protocol.EventInit)
	title := strings.Repeat("split across reads ", 500) // a frame of about 10 KB
	if _, err := s.srv.Create("posts", map[string]any{"title": title, "status": "published"}); err != nil {
		t.Fatal(err)
	}
	ev := s.waitSub(t, protocol.EventCreate)
	var created []struct {
		Title string `json:"title"`
	}
	if err := json.Unmarshal(ev.Data, &created); err != nil || len(created) != 1 || created[0].Title != title {
		t.Fatalf("create event data (%d bytes) did not survive: %v", len(ev.Data), err)
	}

	reply, err := s.c.Items(ctxT(t), protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionRead, Query: &protocol.Query{Limit: -1}})
	if err != nil {
		t.Fatal(err)
	}
	var items []map[string]any
	if err := json.Unmarshal(reply.Data, &items); err != nil {
		t.Fatal(err)
	}
	if want := len(s.srv.Items("posts")); len(items) != want {
		t.Fatalf("items read returned %d items, want %d", len(items), want)
	}

	rtt, err := s.c.Ping(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if rtt < 2*delay {
		t.Fatalf("ping round trip %v through a %v delay each way", rtt, delay)
	}
	// With everything closed, no write is in flight and the counters are
	// final.
	_ = s.c.Close()
	_ = s.p.Close()
	up, down := s.p.Stats()
	if writes := s.p.writes.Load(); writes != up+down {
		t.Fatalf("%d writes for %d bytes forwarded: not one write per byte", writes, up+down)
	}
	t.Logf("%d bytes up, %d down, one write each; ping %v", up, down, rtt)
}

// TestConnRetriesThroughRefuse: dials refused by the proxy are retried, both
// for the first connect and after a lost session, and the Conn connects as
// soon as the proxy listens again on the same port.
func TestConnRetriesThroughRefuse(t *testing.T) {
	s := newStack(t)
	if err := s.p.SetRefusing(true); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	connected := make(chan error, 1)
	ctx := ctxT(t)
	go func() { connected <- s.c.Connect(ctx) }()
	s.waitError(t, syscall.ECONNREFUSED)
	if err := s.p.SetRefusing(false); err != nil {
		t.Fatal(err)
	}
	if err := <-connected; err != nil {
		t.Fatalf("Connect after the refusal ended: %v", err)
	}
	s.works(t)

	const refusal = 300 * time.Millisecond
	start := time.Now()
	s.p.Refuse(refusal)
	s.p.Cut()
	s.waitState(t, conn.StateReconnecting)
	s.waitError(t, syscall.ECONNREFUSED)
	s.waitState(t, conn.StateConnected)
	if took := time.Since(start); took < refusal {
		t.Fatalf("reconnected after %v, during the %v refusal", took, refusal)
	}
	s.works(t)
}
