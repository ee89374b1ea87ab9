package conn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/internal/goid"
	"github.com/e41af43e/directus-realtime/protocol"
)

// retryState is the backoff of the supervisor: every retry of the Conn
// (reconnects, and re-authentications after a TOKEN_EXPIRED that came too
// soon) takes the next step, and only a session that stayed up for
// Backoff.ResetAfter resets it.
type retryState struct {
	step     int       // backoff step of the next wait
	failures int       // consecutive failed connect attempts, for MaxAttempts
	reported string    // class of the failure last reported to OnError
	healthy  time.Time // when the current run of health began (zero: none)
}

// next returns the wait before the next attempt and takes a step.
func (r *retryState) next(b Backoff) time.Duration {
	d := b.Delay(r.step)
	r.step++
	return d
}

// up records a session that was up since then: long enough, it resets the
// backoff.
func (r *retryState) up(b Backoff, since time.Time) {
	if time.Since(since) >= b.ResetAfter {
		r.step = 0
	}
}

// run is the supervisor: the one goroutine that opens sessions, runs the
// OnConnect hook, re-authenticates and reconnects. Everything that changes
// which session is current happens here, in order.
func (c *Conn) run() {
	defer close(c.done)
	c.supervisorGoid.Store(goid.Current())
	var (
		retry  retryState
		wait   time.Duration
		reason = ReasonConnected
		everUp bool
	)
	for {
		if wait > 0 {
			c.retryAt.Store(time.Now().Add(wait).UnixNano())
			if !c.pause(wait) {
				c.firstResult(ErrClosed)
				return
			}
		}
		c.retryAt.Store(0)
		s, jwtExp, err := c.open()
		if err != nil {
			if c.ctx.Err() != nil {
				c.firstResult(ErrClosed)
				return
			}
			c.setLastError(err)
			if (!everUp && isFatalOnFirstConnect(err)) || isFatal(err) {
				c.giveUp(err)
				return
			}
			retry.failures++
			c.stats.connectFailures.Add(1)
			c.log.Warn("connect attempt failed", "attempt", retry.failures, "err", err)
			c.reportFailure(&retry, fmt.Errorf("directus: connect attempt %d failed: %w", retry.failures, err))
			if limit := c.cfg.Backoff.MaxAttempts; limit > 0 && retry.failures >= limit {
				c.giveUp(err)
				return
			}
			wait = retry.next(c.cfg.Backoff)
			var ue *UpgradeError
			if errors.As(err, &ue) && ue.RetryAfter > wait {
				wait = ue.RetryAfter // the server said when; never sooner
			}
			continue
		}
		retry.failures = 0
		retry.reported = "" // the run of failures ended: the next one is reported
		c.install(s)
		c.stats.sessions.Add(1)
		if reason == ReasonReconnected {
			c.stats.reconnects.Add(1)
		}
		c.runHook(s, reason)
		if c.ctx.Err() != nil {
			// Closed while the hook ran (Close may have given up waiting
			// for it): deliver nothing more.
			s.closeNow()
			c.uninstall(s)
			c.firstResult(ErrClosed)
			return
		}
		// Connected before the held frames go out, so that whoever handles
		// them already sees the connection up.
		c.setState(StateConnected, nil)
		s.release(false)
		c.firstResult(nil)
		everUp = true
		up := time.Now()

		requested, fatal := c.serve(s, jwtExp, &retry)
		s.wait()
		// A session ended by a read error (an oversize frame, a protocol
		// error), the heartbeat or a write error still holds its socket:
		// close it, or the server keeps writing into it.
		s.closeNow()
		c.uninstall(s)
		cause := s.Err()
		if c.ctx.Err() != nil {
			return
		}
		if fatal != nil {
			c.giveUp(fatal)
			return
		}
		c.log.Info("session lost", "session", s.id, "err", cause)
		c.setState(StateReconnecting, cause)
		reason = ReasonReconnected
		retry.up(c.cfg.Backoff, up)
		if requested {
			wait = 0
			continue
		}
		wait = retry.next(c.cfg.Backoff)
	}
}

// giveUp ends the Conn after a failure no retry can mend: it is reported
// once, and the Conn closes with it as the cause.
func (c *Conn) giveUp(err error) {
	c.firstResult(err)
	c.log.Error("giving up", "err", err)
	c.reportError(err)
	c.setState(StateClosed, err)
	c.cancel()
}

// reportFailure passes a failed attempt to OnError once per run of failures
// of the same kind: a server that refuses every attempt the same way is
// reported once, not once per backoff step (the log has a line per step).
func (c *Conn) reportFailure(r *retryState, err error) {
	class := failureClass(err)
	if class == r.reported {
		return
	}
	r.reported = class
	c.reportError(err)
}

// failureClass groups failures that are the same condition.
func failureClass(err error) string {
	var ue *UpgradeError
	var se *protocol.ServerError
	var ce *CloseError
	var re *RedirectError
	var de *DialError
	switch {
	case errors.As(err, &ue):
		return fmt.Sprintf("upgrade %d", ue.StatusCode)
	case errors.As(err, &re):
		return "redirect"
	case errors.As(err, &se):
		return "server " + se.Type + " " + string(se.Code)
	case errors.As(err, &ce):
		return fmt.Sprintf("close %d", ce.Code)
	case errors.As(err, &de):
		return "dial"
	}
	return fmt.Sprintf("%T", errors.Unwrap(err))
}

// isFatal reports a failure no later attempt can mend, whether or not the
// Conn was up before.
func isFatal(err error) bool {
	return errors.Is(err, ErrCredentialsExpired)
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
	if c.creds.expiredForGood(time.Now()) {
		return nil, time.Time{}, ErrCredentialsExpired
	}
	// Reconnect requests made before the dial are answered by this session;
	// later ones end it (see serve).
	dialReq := c.reconnectReqs.Load()
	ws, raw, upgradeExp, err := c.dial()
	if err != nil {
		return nil, time.Time{}, err
	}
	s := newSession(c, c.sessionSeq.Add(1), ws, raw)
	s.dialReq = dialReq
	jwtExp := upgradeExp
	s.mu.Lock()
	s.authedAt = time.Now()
	s.mu.Unlock()
	mode := c.cfg.Auth.mode()
	switch {
	case mode == AuthHandshake || (mode == AuthPublic && c.cfg.Auth.hasCredentials()):
		jwtExp, err = c.authenticate(s, true)
	case mode == AuthPublic:
		err = c.probePublic(s)
	}
	if err != nil {
		s.closeNow()
		s.wait()
		return nil, time.Time{}, err
	}
	s.startHeartbeat()
	return s, jwtExp, nil
}

// probePublic checks, in public mode without credentials, that the server
// really is public: a server in handshake mode answers the first frame that
// is not auth (here a ping) with AUTH_FAILED and closes, which would
// otherwise turn into reconnects for ever.
func (c *Conn) probePublic(s *Session) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.AuthTimeout)
	defer cancel()
	_, err := s.handshakeRequest(ctx, protocol.TypePong, func(uid protocol.UID) any { return protocol.PingMessage{UID: uid} })
	if errors.Is(err, protocol.ErrAuthFailed) {
		return fmt.Errorf("%w: %w", ErrAuthRequired, err)
	}
	return err
}

// dial performs the upgrade. In strict mode the access token goes in the URL,
// so every error is built without it.
func (c *Conn) dial() (*websocket.Conn, *rawConn, time.Time, error) {
	u := *c.wsURL
	var secret string
	var exp time.Time
	if c.cfg.Auth.mode() == AuthStrict {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.AuthTimeout)
		tok, e, err := c.upgradeToken(ctx)
		cancel()
		if err != nil {
			return nil, nil, exp, err
		}
		secret, exp = tok, e
		q := u.Query()
		q.Set("access_token", tok)
		u.RawQuery = q.Encode()
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	defer cancel()
	client, raw, done := c.upgrader.client()
	defer done()
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: client,
		HTTPHeader: c.cfg.Header,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, nil, exp, &UpgradeError{StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp, time.Now())}
		}
		return nil, nil, exp, newDialError(c.wsURL.String(), err, secret)
	}
	return ws, raw, exp, nil
}

// upgradeToken returns the token for the upgrade URL in strict mode.
func (c *Conn) upgradeToken(ctx context.Context) (string, time.Time, error) {
	tok, exp, err := c.creds.upgradeToken(ctx)
	if err != nil {
		return "", exp, fmt.Errorf("directus: token source: %w", err)
	}
	return tok, exp, nil
}

// authenticate sends an auth frame on s and records the outcome. handshake
// selects the handshake matching (its failure reply has no uid).
func (c *Conn) authenticate(s *Session, handshake bool) (jwtExp time.Time, err error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.AuthTimeout)
	defer cancel()
	msg, jwtExp, ok, err := c.creds.next(ctx)
	if err != nil {
		return jwtExp, fmt.Errorf("directus: token source: %w", err)
	}
	if !ok {
		return jwtExp, &protocol.ConfigError{Field: "Auth", Reason: "no credential to authenticate with"}
	}
	var reply *protocol.Message
	if handshake {
		reply, err = s.handshakeRequest(ctx, protocol.TypeAuth, func(uid protocol.UID) any {
			msg.UID = uid
			return msg
		})
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
		return jwtExp, err
	}
	s.mu.Lock()
	s.authedAt = time.Now()
	s.mu.Unlock()
	if rotated := c.creds.accepted(msg, reply); rotated != "" {
		if f := c.cfg.OnRefreshToken; f != nil {
			c.notify.tokens.post(func() { f(rotated) })
		}
	}
	c.log.Debug("authenticated", "session", s.id, "form", msg.Form())
	return jwtExp, nil
}

// serve watches a live session until it ends: it re-authenticates on
// TOKEN_EXPIRED and before a known expiry, and ends the session on Close
// and Reconnect. It reports whether Reconnect asked for the end, and a
// failure no retry can mend.
//
// A TOKEN_EXPIRED that comes sooner than minLearnedTTL after the last
// authentication is a failure: the re-authentication waits for the next
// backoff step, so that a server expiring every token at once is not
// answered by a loop of auth frames and resubscriptions.
func (c *Conn) serve(s *Session, jwtExp time.Time, retry *retryState) (reconnectRequested bool, fatal error) {
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
			return false, nil
		case <-c.ctx.Done():
			s.close(ErrClosed)
			return false, nil
		case <-c.reconnectCh:
			if c.reconnectReqs.Load() <= s.dialReq {
				continue // asked for before this session was dialed: answered by it
			}
			s.close(errReconnectRequested)
			return true, nil
		case <-s.expiredSig:
			s.mu.Lock()
			lived := time.Since(s.authedAt)
			s.mu.Unlock()
			if jwtExp.IsZero() {
				c.creds.learnTTL(lived)
			}
			if c.creds.expiredForGood(time.Now()) {
				s.close(ErrCredentialsExpired)
				return false, ErrCredentialsExpired
			}
			if lived < minLearnedTTL {
				wait := retry.next(c.cfg.Backoff)
				c.log.Warn("token expired right after authentication; re-authenticating after a backoff", "lived", lived.Round(time.Millisecond), "wait", wait.Round(time.Millisecond))
				if !c.waitOrEnd(s, wait) {
					return false, nil
				}
			}
			exp, err := c.authenticate(s, false)
			if err != nil {
				c.reportError(fmt.Errorf("directus: re-authentication after TOKEN_EXPIRED failed: %w", err))
				s.close(err)
				return false, nil
			}
			jwtExp = exp
			c.stats.reauths.Add(1)
			c.runHook(s, ReasonReauthenticated)
			s.release(true)
			schedule(exp)
		case <-refresh.C:
			exp, err := c.authenticate(s, false)
			if err != nil {
				c.reportError(fmt.Errorf("directus: token refresh failed: %w", err))
				s.close(err)
				return false, nil
			}
			c.stats.refreshes.Add(1)
			jwtExp = exp
			schedule(exp)
		}
	}
}

// waitOrEnd waits d while s lives; it reports false when s ended or the Conn
// closed meanwhile (then s is closed).
func (c *Conn) waitOrEnd(s *Session, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	case <-c.ctx.Done():
		s.close(ErrClosed)
		return false
	}
}

func (c *Conn) runHook(s *Session, reason ConnectReason) {
	s.enterHook()
	if f := c.cfg.OnConnect; f != nil {
		c.guard("OnConnect", func() { f(s, reason) })
	}
}
