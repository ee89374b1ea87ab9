package conn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/e41af43e/directus-realtime/protocol"
)

// run is the supervisor: the one goroutine that opens sessions, runs the
// OnConnect hook, re-authenticates and reconnects. Everything that changes
// which session is current happens here, in order.
func (c *Conn) run() {
	defer close(c.done)
	var (
		step     int // backoff step; reset after a healthy session
		failures int // consecutive failed attempts, for MaxAttempts
		wait     time.Duration
		reason   = ReasonConnected
		everUp   bool
	)
	for {
		if wait > 0 && !c.pause(wait) {
			c.firstResult(ErrClosed)
			return
		}
		s, jwtExp, err := c.open()
		if err != nil {
			if c.ctx.Err() != nil {
				c.firstResult(ErrClosed)
				return
			}
			c.setLastError(err)
			if !everUp && isFatalOnFirstConnect(err) {
				c.firstResult(err)
				return
			}
			failures++
			c.log.Warn("connect attempt failed", "attempt", failures, "err", err)
			c.reportError(fmt.Errorf("directus: connect attempt %d failed: %w", failures, err))
			if limit := c.cfg.Backoff.MaxAttempts; limit > 0 && failures >= limit {
				c.firstResult(err)
				c.setState(StateClosed, err)
				c.cancel()
				return
			}
			wait = c.cfg.Backoff.Delay(step)
			step++
			continue
		}
		failures = 0
		c.install(s)
		c.runHook(s, reason)
		// Connected before the held frames go out, so that whoever handles
		// them already sees the connection up.
		c.setState(StateConnected, nil)
		s.release(false)
		c.firstResult(nil)
		everUp = true
		up := time.Now()

		requested := c.serve(s, jwtExp)
		s.wait()
		// A session ended by a read error (an oversize frame, a protocol
		// error), the heartbeat or a write error still holds its socket:
		// close it, or the server keeps writing into it.
		_ = s.ws.CloseNow()
		c.uninstall(s)
		cause := s.Err()
		if c.ctx.Err() != nil {
			return
		}
		c.log.Info("session lost", "session", s.id, "err", cause)
		c.setState(StateReconnecting, cause)
		reason = ReasonReconnected
		if time.Since(up) >= c.cfg.Backoff.ResetAfter {
			step = 0
		}
		if requested {
			wait = 0
			continue
		}
		wait = c.cfg.Backoff.Delay(step)
		step++
	}
}

// pause waits d; Reconnect cuts it short. It reports false when the Conn
// was closed meanwhile.
func (c *Conn) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.reconnectCh:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// open dials and authenticates one session.
func (c *Conn) open() (*Session, time.Time, error) {
	// Reconnect requests made before the dial are answered by this session;
	// later ones end it (see serve).
	dialReq := c.reconnectReqs.Load()
	ws, upgradeExp, err := c.dial()
	if err != nil {
		return nil, time.Time{}, err
	}
	s := newSession(c, c.sessionSeq.Add(1), ws)
	s.dialReq = dialReq
	jwtExp := upgradeExp
	s.mu.Lock()
	s.authedAt = time.Now()
	s.mu.Unlock()
	mode := c.cfg.Auth.mode()
	if mode == AuthHandshake || (mode == AuthPublic && c.cfg.Auth.hasCredentials()) {
		jwtExp, err = c.authenticate(s, true)
		if err != nil {
			s.close(err)
			s.wait()
			return nil, time.Time{}, err
		}
	}
	s.startHeartbeat()
	return s, jwtExp, nil
}

// dial performs the upgrade. In strict mode the access token goes in the URL,
// so every error is built without it.
func (c *Conn) dial() (*websocket.Conn, time.Time, error) {
	u := *c.wsURL
	var secret string
	var exp time.Time
	if c.cfg.Auth.mode() == AuthStrict {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.AuthTimeout)
		tok, e, err := c.creds.upgradeToken(ctx)
		cancel()
		if err != nil {
			return nil, exp, fmt.Errorf("directus: token source: %w", err)
		}
		secret, exp = tok, e
		q := u.Query()
		q.Set("access_token", tok)
		u.RawQuery = q.Encode()
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: c.cfg.HTTPClient,
		HTTPHeader: c.cfg.Header,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, exp, &UpgradeError{StatusCode: resp.StatusCode}
		}
		return nil, exp, newDialError(c.wsURL.String(), err, secret)
	}
	return ws, exp, nil
}

// authenticate sends an auth frame on s and records the outcome. handshake
// selects the handshake matching (its failure reply has no uid).
func (c *Conn) authenticate(s *Session, handshake bool) (jwtExp time.Time, err error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.AuthTimeout)
	defer cancel()
	msg, exp, ok, err := c.creds.next(ctx)
	if err != nil {
		return exp, fmt.Errorf("directus: token source: %w", err)
	}
	if !ok {
		return exp, &protocol.ConfigError{Field: "Auth", Reason: "no credential to authenticate with"}
	}
	var reply *protocol.Message
	if handshake {
		reply, err = s.handshakeAuth(ctx, msg)
	} else {
		reply, err = s.request(ctx, protocol.TypeAuth, func(uid protocol.UID) any {
			msg.UID = uid
			return msg
		})
	}
	if err != nil {
		if errors.Is(err, protocol.ErrAuthFailed) {
			c.creds.rejected(msg)
		}
		return exp, err
	}
	s.mu.Lock()
	s.authedAt = time.Now()
	s.mu.Unlock()
	if rotated := c.creds.accepted(msg, reply); rotated != "" {
		if f := c.cfg.OnRefreshToken; f != nil {
			c.notify.post(func() { f(rotated) })
		}
	}
	c.log.Debug("authenticated", "session", s.id, "form", msg.Form())
	return exp, nil
}

// serve watches a live session until it ends: it re-authenticates on
// TOKEN_EXPIRED and before a known expiry, and ends the session on Close
// and Reconnect. It reports whether Reconnect asked for the end.
func (c *Conn) serve(s *Session, jwtExp time.Time) (reconnectRequested bool) {
	refresh := time.NewTimer(time.Hour)
	refresh.Stop()
	defer refresh.Stop()
	schedule := func(exp time.Time) {
		s.mu.Lock()
		authedAt := s.authedAt
		s.mu.Unlock()
		if at := c.creds.refreshAt(authedAt, exp); !at.IsZero() {
			refresh.Reset(time.Until(at))
		}
	}
	schedule(jwtExp)
	for {
		select {
		case <-s.ctx.Done():
			return false
		case <-c.ctx.Done():
			s.close(ErrClosed)
			return false
		case <-c.reconnectCh:
			if c.reconnectReqs.Load() <= s.dialReq {
				continue // asked for before this session was dialed: answered by it
			}
			s.close(errReconnectRequested)
			return true
		case <-s.expiredSig:
			s.mu.Lock()
			lived := time.Since(s.authedAt)
			s.mu.Unlock()
			if jwtExp.IsZero() {
				c.creds.learnTTL(lived)
			}
			exp, err := c.authenticate(s, false)
			if err != nil {
				c.reportError(fmt.Errorf("directus: re-authentication after TOKEN_EXPIRED failed: %w", err))
				s.close(err)
				return false
			}
			jwtExp = exp
			c.runHook(s, ReasonReauthenticated)
			s.release(true)
			schedule(exp)
		case <-refresh.C:
			exp, err := c.authenticate(s, false)
			if err != nil {
				c.reportError(fmt.Errorf("directus: token refresh failed: %w", err))
				s.close(err)
				return false
			}
			jwtExp = exp
			schedule(exp)
		}
	}
}

func (c *Conn) runHook(s *Session, reason ConnectReason) {
	s.enterHook()
	if f := c.cfg.OnConnect; f != nil {
		f(s, reason)
	}
}
