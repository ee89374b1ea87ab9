package directustest_test

import (
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/directustest"
)

// TestHeartbeat reproduces step HB of the transcript with a 200 ms period:
// HB answers two pings with pong and ignores the third, HB2 answers with an
// auth frame only. Both are closed with 1005 (no error frame) one period
// after the unanswered ping. A connection in the handshake is not pinged.
func TestHeartbeat(t *testing.T) {
	hbFrames := findFrames(t, "HB", "HB", "<<<")
	hb2Frames := findFrames(t, "HB", "HB2", "<<<")
	if len(hbFrames) != 4 || len(hb2Frames) != 3 {
		t.Fatalf("HB changed in the transcript: %q %q", hbFrames, hb2Frames)
	}
	const period = 200 * time.Millisecond
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: -1, AuthTimeout: time.Minute})

	idle := mustDial(t, srv.WebSocketURL()) // stays in the handshake
	idle.keepPing.Store(true)

	hb := authClient(t, srv)
	hb.keepPing.Store(true)
	hb.autoPong.Store(false)
	hb2 := authClient(t, srv)
	hb2.keepPing.Store(true)
	hb2.autoPong.Store(false)
	// Start the heartbeat once all three are connected, so they share ticks.
	srv.SetHeartbeatPeriod(period)

	// First tick: both are pinged.
	hb2.expect(hb2Frames[1])
	hb2.send(`{"type":"auth","access_token":"` + directustest.AdminToken + `","uid":"as-pong"}`)
	hb2.expect(hb2Frames[2])
	hb.expect(hbFrames[1])
	hb.send(`{"type":"pong"}`)

	// Second tick: HB is pinged again; HB2, whose only answer was an auth
	// frame, is closed without an error frame.
	hb.expect(hbFrames[2])
	hb.send(`{"type":"pong"}`)
	code, ok := hb2.waitClosed(frameTimeout)
	if !ok || code != websocket.StatusNoStatusRcvd {
		t.Fatalf("HB2 closed=%v code=%v, want 1005", ok, code)
	}
	if f, ok := hb2.nextFrame(0); ok {
		t.Fatalf("HB2 got a frame before the close: %s", f)
	}

	// Third tick: not answered; closed one period later.
	hb.expect(hbFrames[3])
	pinged := time.Now()
	code, ok = hb.waitClosed(frameTimeout)
	if !ok || code != websocket.StatusNoStatusRcvd {
		t.Fatalf("HB closed=%v code=%v, want 1005", ok, code)
	}
	if el := time.Since(pinged); el < period/2 {
		t.Fatalf("HB closed %v after the unanswered ping, want about one period (%v)", el, period)
	}
	if f, ok := hb.nextFrame(0); ok {
		t.Fatalf("HB got a frame before the close: %s", f)
	}

	// Three ticks later the connection in the handshake got no ping.
	if f, ok := idle.nextFrame(0); ok {
		t.Fatalf("connection in the handshake got %s", f)
	}
}

// Invalid JSON is answered with an error but does not count as a heartbeat
// answer; any other valid frame (here an unknown type) does.
func TestHeartbeatAnswers(t *testing.T) {
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: 150 * time.Millisecond})
	bad := authClient(t, srv)
	bad.keepPing.Store(true)
	bad.autoPong.Store(false)
	odd := authClient(t, srv)
	odd.keepPing.Store(true)
	odd.autoPong.Store(false)

	bad.expect(`{"type":"ping"}`)
	bad.send(`{not json`)
	bad.expect(`{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Unable to parse the incoming message."}}`)
	odd.expect(`{"type":"ping"}`)
	odd.send(`{"type":"whatever"}`)

	if code, ok := bad.waitClosed(frameTimeout); !ok || code != websocket.StatusNoStatusRcvd {
		t.Fatalf("closed=%v code=%v, want 1005", ok, code)
	}
	odd.expect(`{"type":"ping"}`) // still alive at the tick that closed the other
}

// In public mode every connection is pinged, authenticated or not.
func TestHeartbeatPublicMode(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthPublic, HeartbeatPeriod: 100 * time.Millisecond})
	c := mustDial(t, srv.WebSocketURL())
	c.keepPing.Store(true)
	c.expect(`{"type":"ping"}`)
}

// SetHeartbeatPeriod switches the heartbeat on and off at run time.
func TestSetHeartbeatPeriod(t *testing.T) {
	srv := newServer(t, &directustest.Options{HeartbeatPeriod: -1})
	c := authClient(t, srv)
	c.keepPing.Store(true)
	c.expectNothing()
	srv.SetHeartbeatPeriod(50 * time.Millisecond)
	c.expect(`{"type":"ping"}`)
	c.send(`{"type":"pong"}`)
	srv.SetHeartbeatPeriod(0)
	c.expectNothing()
	status, body := rest(t, srv, "GET", "/server/info", directustest.AdminToken, "")
	if status != 200 || !contains(body, `"heartbeat":false`) {
		t.Fatalf("/server/info: %d %s", status, body)
	}
}
