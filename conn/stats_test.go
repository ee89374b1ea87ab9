package conn_test

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Stats count what happened: sessions, reconnects and their causes,
// re-authentications, frames and bytes both ways.
func TestStatsCount(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthTimeout: 2 * time.Second})
	f := newFrames()
	errs := newErrorSink()
	hooks := make(chan conn.ConnectReason, 10)
	before := time.Now()
	c := connect(t, fast(conn.Config{URL: srv.URL(),
		Auth:           conn.Auth{Email: directustest.AdminEmail, Password: directustest.AdminPassword},
		OnSubscription: f.on, OnError: errs.on,
		OnConnect: func(s *conn.Session, r conn.ConnectReason) { hooks <- r },
	}))
	<-hooks
	st := c.Stats()
	if st.State != conn.StateConnected || st.StateSince.Before(before) || st.Sessions != 1 || st.Reconnects != 0 {
		t.Fatalf("after Connect: %+v", st)
	}
	if st.FramesIn < 1 || st.FramesOut < 1 || st.BytesIn == 0 || st.BytesOut == 0 || st.LastFrame.Before(before) {
		t.Fatalf("the handshake is not counted: %+v", st)
	}
	subscribe(t, c, f, "s", nil)
	after := c.Stats()
	if after.FramesOut != st.FramesOut+1 || after.FramesIn != st.FramesIn+1 || after.BytesIn <= st.BytesIn {
		t.Fatalf("a subscribe and its init: before %+v, after %+v", st, after)
	}

	states := c.WatchState(ctxT(t))
	srv.DropConnections()
	waitState(t, states, conn.StateConnected)
	<-hooks
	srv.ExpireTokens()
	errs.waitFor(t, func(err error) bool { return errors.Is(err, protocol.ErrTokenExpired) })
	if r := <-hooks; r != conn.ReasonReauthenticated {
		t.Fatalf("hook reason %v", r)
	}
	if err := c.Reconnect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st = c.Stats()
	if st.Sessions != 3 || st.Reconnects != 2 || st.Reauths != 1 || st.ConnectFailures != 0 {
		t.Fatalf("after a drop, a TOKEN_EXPIRED and a Reconnect: %+v", st)
	}
	got := map[conn.TransitionCount]bool{}
	for _, tc := range st.Transitions {
		got[tc] = true
	}
	for _, want := range []conn.TransitionCount{
		{From: conn.StateIdle, To: conn.StateConnecting, Cause: conn.CauseNone, Count: 1},
		{From: conn.StateConnecting, To: conn.StateConnected, Cause: conn.CauseNone, Count: 1},
		{From: conn.StateConnected, To: conn.StateReconnecting, Cause: conn.CauseAbnormalClose, Count: 1},
		{From: conn.StateConnected, To: conn.StateReconnecting, Cause: conn.CauseReconnectRequested, Count: 1},
		{From: conn.StateReconnecting, To: conn.StateConnected, Cause: conn.CauseNone, Count: 2},
	} {
		if !got[want] {
			t.Errorf("transition %+v not counted; got %+v", want, st.Transitions)
		}
	}

	// A refused connect attempt is counted, and the backoff's due time shown.
	srv.Stop()
	waitState(t, states, conn.StateReconnecting)
	for deadline := time.Now().Add(10 * time.Second); c.Stats().ConnectFailures == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no failed connect attempt counted")
		}
		time.Sleep(5 * time.Millisecond) // polling a counter; there is no signal for a failed attempt
	}
	srv.Start()
	waitState(t, states, conn.StateConnected)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.State != conn.StateClosed {
		t.Fatalf("after Close: %v", st.State)
	}
}

func TestCauseOfStateChange(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, conn.CauseNone},
		{conn.ErrClosed, conn.CauseClosed},
		{conn.ErrHeartbeatTimeout, conn.CauseHeartbeatTimeout},
		{conn.ErrFrameTooLarge, conn.CauseFrameTooLarge},
		{&conn.CloseError{Code: 1006}, conn.CauseAbnormalClose},
		{&conn.CloseError{Code: 1005}, conn.CauseServerClose},
		{&conn.UpgradeError{StatusCode: 503}, conn.CauseUpgradeRejected},
		{&conn.DialError{URL: "ws://127.0.0.1:1/websocket"}, conn.CauseDial},
		{fmt.Errorf("directus: read: %w", io.ErrUnexpectedEOF), conn.CauseAbnormalClose},
		{&protocol.ServerError{Type: protocol.TypeAuth, Code: protocol.CodeAuthFailed}, conn.CauseAuth},
		{conn.ErrCredentialsExpired, conn.CauseAuth},
		{&protocol.ProtocolError{Reason: "x"}, conn.CauseProtocol},
		{errors.New("something else"), conn.CauseOther},
	} {
		if got := (conn.StateChange{Err: tc.err}).Cause(); got != tc.want {
			t.Errorf("Cause of %v = %q, want %q", tc.err, got, tc.want)
		}
	}
}
