package graphql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/protocol"
)

// session is one WebSocket connection after connection_ack. Its reader
// goroutine calls route for every next, error and complete; the heartbeat
// goroutine pings after PingInterval of silence and ends the session when
// PingTimeout more passes without a frame.
type session struct {
	s        *settings
	ws       *websocket.Conn
	token    string
	lastRead atomic.Int64 // unix nanoseconds of the last frame read
	done     chan struct{}
	errOnce  sync.Once
	err      error

	// pingMu orders the pings and their waiters: Directus answers pings
	// in order, so the n-th pong answers the n-th ping. A waiter is
	// closed by the pong of the ping sent with it, or when the session
	// ends; heartbeat pings have a nil waiter.
	pingMu  sync.Mutex
	waiters []chan struct{}
}

// errAuthRejected wraps the refusal of the credentials at connection time.
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// dialSession dials, sends connection_init and waits for connection_ack
// (docs/PROTOCOL.md §13.2). Nothing else may be sent before the ack:
// Directus closes with 4403 a frame that arrives while it authenticates.
func dialSession(ctx context.Context, s *settings, creds *credentials) (*session, error) {
	token, err := creds.accessToken(ctx)
	if err != nil {
		var se *protocol.ServerError
		if errors.As(err, &se) {
			return nil, &authError{err}
		}
		return nil, err
	}
	mode := authMode(s.Auth)
	u := *s.wsURL
	if token != "" && mode != "handshake" {
		q := u.Query()
		q.Set("access_token", token)
		u.RawQuery = q.Encode()
	}
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:      s.http,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			creds.invalidate(token)
			return nil, &authError{&protocol.ServerError{Type: "upgrade", Code: protocol.CodeAuthFailed, Message: fmt.Sprintf("HTTP %d", resp.StatusCode)}}
		}
		if resp != nil {
			return nil, fmt.Errorf("directus graphql: upgrade: HTTP %d", resp.StatusCode)
		}
		// The dial error may quote the URL, which holds the token in
		// strict mode: rebuild it without.
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, fmt.Errorf("directus graphql: dial %s: %w", s.wsURL.Redacted(), ue.Err)
		}
		return nil, fmt.Errorf("directus graphql: dial %s failed", s.wsURL.Redacted())
	}
	if ws.Subprotocol() != Subprotocol {
		_ = ws.CloseNow()
		return nil, &protocol.ProtocolError{Reason: "the server did not accept the " + Subprotocol + " subprotocol (is WEBSOCKETS_GRAPHQL_ENABLED on?)"}
	}
	ws.SetReadLimit(s.ReadLimit)
	ss := &session{s: s, ws: ws, token: token, done: make(chan struct{})}
	if err := ss.handshake(ctx, token, mode == "handshake"); err != nil {
		_ = ws.CloseNow()
		if ae := (*authError)(nil); errors.As(err, &ae) {
			creds.invalidate(token)
		}
		return nil, err
	}
	ss.lastRead.Store(time.Now().UnixNano())
	return ss, nil
}

func (ss *session) handshake(ctx context.Context, token string, inPayload bool) error {
	ctx, cancel := context.WithTimeout(ctx, ss.s.AckTimeout)
	defer cancel()
	init := frame{Type: "connection_init"}
	if inPayload {
		init.Payload, _ = json.Marshal(map[string]string{"access_token": token})
	}
	if err := ss.write(ctx, init); err != nil {
		return err
	}
	for {
		f, err := ss.read(ctx)
		if err != nil {
			var ce *CloseError
			if errors.As(err, &ce) && ce.Code == 4403 {
				return &authError{err}
			}
			return err
		}
		switch f.Type {
		case "connection_ack":
			return nil
		case "ping":
			if err := ss.write(ctx, frame{Type: "pong"}); err != nil {
				return err
			}
		case "auth", "error":
			if f.Status == "error" && f.Error != nil {
				// Directus's own frame for a refused connection_init
				// token; it then lets graphql-ws time the socket out.
				return &authError{&protocol.ServerError{Type: f.Type, Code: protocol.Code(f.Error.Code), Message: protocol.Truncate(f.Error.Message, 300)}}
			}
		}
	}
}

func (ss *session) write(ctx context.Context, f frame) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return ss.ws.Write(ctx, websocket.MessageText, b)
}

// read returns the next frame; a close becomes a *CloseError.
func (ss *session) read(ctx context.Context) (frame, error) {
	for {
		typ, b, err := ss.ws.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return frame{}, &CloseError{Code: int(ce.Code), Reason: protocol.Truncate(ce.Reason, 120)}
			}
			return frame{}, err
		}
		ss.lastRead.Store(time.Now().UnixNano())
		if typ != websocket.MessageText {
			continue
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil || f.Type == "" {
			ss.s.log.Warn("graphql: frame skipped", "reason", "not a graphql-ws message", "size", len(b))
			continue
		}
		return f, nil
	}
}

// run reads until the session ends, answering pings and passing the other
// frames to route. It returns why the session ended.
func (ss *session) run(route func(frame)) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hb := make(chan struct{})
	go func() {
		defer close(hb)
		ss.heartbeat(ctx)
	}()
	var err error
	for {
		var f frame
		f, err = ss.read(ctx)
		if err != nil {
			break
		}
		switch f.Type {
		case "ping":
			_ = ss.write(ctx, frame{Type: "pong"})
		case "pong":
			ss.pong()
		default:
			route(f)
		}
	}
	ss.fail(err)
	cancel()
	<-hb
	ss.pingMu.Lock()
	for _, w := range ss.waiters {
		if w != nil {
			close(w)
		}
	}
	ss.waiters = nil
	ss.pingMu.Unlock()
	_ = ss.ws.CloseNow()
	return ss.err
}

func (ss *session) fail(err error) {
	ss.errOnce.Do(func() {
		ss.err = err
		close(ss.done)
	})
}

var errPingTimeout = errors.New("directus graphql: no frame within PingTimeout after a ping")

func (ss *session) heartbeat(ctx context.Context) {
	t := time.NewTicker(min(ss.s.PingInterval, ss.s.PingTimeout) / 2)
	defer t.Stop()
	var pinged time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		last := time.Unix(0, ss.lastRead.Load())
		switch {
		case time.Since(last) < ss.s.PingInterval:
			pinged = time.Time{}
		case pinged.IsZero() || pinged.Before(last):
			pinged = time.Now()
			_ = ss.ping(ctx, nil)
		case time.Since(pinged) > ss.s.PingTimeout:
			ss.fail(errPingTimeout)
			_ = ss.ws.CloseNow()
			return
		}
	}
}

// close ends the session politely (1000), bounded by the close handshake
// timeout of coder/websocket.
func (ss *session) close() {
	ss.fail(errSessionClosed)
	_ = ss.ws.Close(websocket.StatusNormalClosure, "")
}

var errSessionClosed = errors.New("directus graphql: session closed")

// ping sends a ping whose pong closes w (when not nil). Because the server
// reads a socket's frames in order, the pong says that every frame written
// before the ping has been read (docs/PROTOCOL.md §13.5).
func (ss *session) ping(ctx context.Context, w chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, ss.s.PingTimeout)
	defer cancel()
	ss.pingMu.Lock()
	defer ss.pingMu.Unlock()
	select {
	case <-ss.done:
		if w != nil {
			close(w)
		}
		return ss.err
	default:
	}
	if err := ss.write(ctx, frame{Type: "ping"}); err != nil {
		if w != nil {
			close(w)
		}
		return err
	}
	ss.waiters = append(ss.waiters, w)
	return nil
}

func (ss *session) pong() {
	ss.pingMu.Lock()
	defer ss.pingMu.Unlock()
	if len(ss.waiters) == 0 {
		return // unsolicited: a heartbeat of the server
	}
	if w := ss.waiters[0]; w != nil {
		close(w)
	}
	ss.waiters = ss.waiters[1:]
}
