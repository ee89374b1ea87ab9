package conn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/e41af43e/directus-realtime/internal/goid"
	"github.com/e41af43e/directus-realtime/protocol"
	"golang.org/x/time/rate"
)

// Session is one physical WebSocket connection of a Conn. A Conn replaces its
// session after every reconnect; a Session handle stays valid (its methods
// fail with ErrConnectionLost) once it has ended. OnConnect receives the new
// session so that frames sent while restoring state go to that session and
// no other. All methods are safe for concurrent use.
type Session struct {
	c   *Conn
	id  uint64
	ws  *websocket.Conn
	raw *rawConn // the network connection under ws; nil if the transport was the user's own
	log *slog.Logger
	// dialReq is Conn.reconnectReqs when this session's dial started; set
	// before the session is shared, read-only afterwards.
	dialReq uint64

	ctx    context.Context
	cancel context.CancelCauseFunc

	out    chan []byte // frames for the writer
	urgent chan []byte // pongs answering server pings, written first
	// pace holds the writer to Config.SendRate; nil when not paced. One per
	// session: the server counts per socket.
	pace *rate.Limiter

	mu         sync.Mutex
	pending    map[protocol.UID]*pendingRequest
	handshake  *pendingRequest     // the handshake auth, whose failure reply has no uid
	holding    bool                // subscription frames are held back …
	held       []*protocol.Message // … here, until release
	expired    bool                // TOKEN_EXPIRED seen, re-authentication pending …
	expiredAt  int                 // … and held[expiredAt:] came after it
	heldBytes  int                 // size of held frames received outside the hook
	inHook     bool                // OnConnect runs: the frames held are its replies
	authedAt   time.Time
	expiredSig chan struct{} // TOKEN_EXPIRED seen (cap 1)

	lastRecv atomic.Int64 // unix nanos of the last frame received

	// readGoid is the id of the read loop's goroutine, which runs
	// OnSubscription: a Close from there must not wait for itself.
	readGoid atomic.Uint64

	// pauseUntil (unix nanos) holds the writer back after the server's
	// rate limiter answered REQUESTS_EXCEEDED: it said when to retry.
	pauseUntil atomic.Int64

	// closing is the cause given to close, set before the close handshake
	// so that the read loop's error does not take its place.
	closing atomic.Pointer[error]

	wg sync.WaitGroup
}

type pendingRequest struct {
	replyType string
	reply     chan *protocol.Message // cap 1
	// idempotent requests (ping, items read, auth by access token) are sent
	// again when the server's rate limiter may have dropped them; others
	// fail with the limiter's error instead, since a resend could apply
	// them twice.
	idempotent bool
	// limited receives the limiter's error when a REQUESTS_EXCEEDED arrived
	// while the request was waiting (cap 1).
	limited chan *protocol.ServerError
}

// ID numbers the sessions of a Conn from 1; each reconnect gets a new ID.
func (s *Session) ID() uint64 { return s.id }

// Context is canceled when the session ends; context.Cause tells why.
func (s *Session) Context() context.Context { return s.ctx }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err returns why the session ended, or nil while it is up.
func (s *Session) Err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	return context.Cause(s.ctx)
}

func newSession(c *Conn, id uint64, ws *websocket.Conn, raw *rawConn) *Session {
	// Not derived from the Conn's context: Close ends the session through
	// the supervisor, with a close frame, rather than by cancellation.
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &Session{
		c:          c,
		id:         id,
		ws:         ws,
		raw:        raw,
		log:        c.log.With("session", id),
		ctx:        ctx,
		cancel:     cancel,
		out:        make(chan []byte, c.cfg.SendQueue),
		urgent:     make(chan []byte, 4),
		pending:    make(map[protocol.UID]*pendingRequest),
		holding:    true,
		expiredSig: make(chan struct{}, 1),
	}
	if c.cfg.SendRate > 0 {
		s.pace = rate.NewLimiter(rate.Limit(c.cfg.SendRate), c.cfg.SendBurst)
	}
	s.lastRecv.Store(time.Now().UnixNano())
	if c.cfg.ReadLimit < 0 {
		ws.SetReadLimit(-1)
	} else {
		ws.SetReadLimit(c.cfg.ReadLimit)
	}
	// The read loop reads with a context that is never canceled
	// (coder/websocket arms and disarms a timer per Read for a context that
	// can be): a session that ends closes its socket instead, which ends the
	// read.
	context.AfterFunc(ctx, s.closeNow)
	s.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()
	return s
}

// end stops the session with cause; it is idempotent and does not wait.
func (s *Session) end(cause error) {
	s.cancel(cause)
}

// wait waits until every goroutine of the session has returned.
func (s *Session) wait() {
	s.wg.Wait()
}

// Send marshals v (one of the *Message types of this package, or any value
// that marshals to a JSON object with a "type") and queues it for writing on
// this session. It returns once the frame is queued, not written.
//
// A value that does not marshal to a JSON object with a string "type" is
// refused with a *protocol.ConfigError: Directus would answer it with an
// error no caller could match.
func (s *Session) Send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return &protocol.ConfigError{Field: "message", Reason: "does not marshal to JSON: " + err.Error()}
	}
	if err := protocol.CheckClientFrame(b); err != nil {
		return err
	}
	return s.sendRaw(ctx, b)
}

func (s *Session) sendRaw(ctx context.Context, b []byte) error {
	if s.ctx.Err() != nil {
		return s.lostErr()
	}
	select {
	case s.out <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return s.lostErr()
	}
}

func (s *Session) lostErr() error {
	cause := context.Cause(s.ctx)
	if errors.Is(cause, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, cause)
}

// request sends a frame with a fresh uid and waits for the reply of
// replyType with that uid ("" takes a reply of any type). A server error reply is returned as
// *protocol.ServerError together with the message.
func (s *Session) request(ctx context.Context, replyType string, build func(protocol.UID) any) (*protocol.Message, error) {
	return s.requestOpts(ctx, replyType, replyType == protocol.TypePong, false, build)
}

// handshakeRequest is request for the first frame of a session: Directus
// answers a failed handshake with an auth error without uid, matched to it
// by position.
func (s *Session) handshakeRequest(ctx context.Context, replyType string, build func(protocol.UID) any) (*protocol.Message, error) {
	return s.requestOpts(ctx, replyType, false, true, build)
}

func (s *Session) requestOpts(ctx context.Context, replyType string, idempotent, handshake bool, build func(protocol.UID) any) (*protocol.Message, error) {
	ctx, cancel := s.c.requestContext(ctx)
	defer cancel()
	if err := s.c.pendingSlots.Acquire(ctx, 1); err != nil {
		return nil, s.c.timeoutErr(ctx, err)
	}
	defer s.c.pendingSlots.Release(1)

	uid := s.c.nextUID()
	p := &pendingRequest{replyType: replyType, reply: make(chan *protocol.Message, 1), idempotent: idempotent,
		limited: make(chan *protocol.ServerError, 1)}
	s.mu.Lock()
	s.pending[uid] = p
	if handshake {
		s.handshake = p
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, uid)
		if s.handshake == p {
			s.handshake = nil
		}
		s.mu.Unlock()
	}()
	return s.await(ctx, p, build(uid))
}

// maxLimitedResends bounds how often an idempotent request is sent again
// after the server's rate limiter may have dropped it.
const maxLimitedResends = 5

func (s *Session) await(ctx context.Context, p *pendingRequest, frame any) (*protocol.Message, error) {
	b, err := marshalFrame(frame)
	if err != nil {
		return nil, err
	}
	if err := s.sendRaw(ctx, b); err != nil {
		return nil, s.c.timeoutErr(ctx, err)
	}
	var grace <-chan time.Time
	var limitedBy *protocol.ServerError
	resends := 0
	for {
		select {
		case m := <-p.reply:
			if m.Err != nil {
				return m, m.Err
			}
			return m, nil
		case e := <-p.limited:
			// The request may have been dropped. Replies of accepted
			// requests come within milliseconds; give it the server's
			// retry delay (and at least a second) before deciding.
			limitedBy = e
			if grace == nil {
				t := time.NewTimer(max(limiterRetry(e), time.Second) << min(resends, 4))
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			grace = nil
			if !p.idempotent || resends >= maxLimitedResends {
				return nil, &RateLimitedError{Err: limitedBy, Resent: resends}
			}
			resends++
			s.log.Debug("request possibly dropped by the server's rate limiter; sending it again", "resend", resends)
			if err := s.sendRaw(ctx, b); err != nil {
				return nil, s.c.timeoutErr(ctx, err)
			}
		case <-ctx.Done():
			if limitedBy != nil {
				return nil, &RateLimitedError{Err: limitedBy, Resent: resends}
			}
			return nil, s.c.timeoutErr(ctx, ctx.Err())
		case <-s.ctx.Done():
			return nil, s.lostErr()
		}
	}
}

// marshalFrame marshals an outgoing frame and checks that it is a JSON
// object, as Directus requires.
func marshalFrame(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, &protocol.ConfigError{Field: "frame", Reason: "must marshal to a JSON object"}
	}
	return b, nil
}

// resolve hands a reply to its pending request; it reports false when no
// request waits for it. A reply without uid is matched only to the
// handshake, and only when it is the handshake's failure: a TOKEN_EXPIRED
// (which has no uid either) that comes right after the handshake's reply is
// the server expiring the token, not a second answer to the handshake.
func (s *Session) resolve(m *protocol.Message) bool {
	s.mu.Lock()
	var p *pendingRequest
	switch {
	case m.UID != "":
		p = s.pending[m.UID]
		if p != nil && p.replyType != "" && p.replyType != m.Type && !(p == s.handshake && m.Type == protocol.TypeAuth && m.Err != nil) {
			p = nil
		}
	case m.Type == protocol.TypeAuth && m.Err != nil && m.Err.Code != protocol.CodeTokenExpired:
		p = s.handshake
	}
	if p != nil && p == s.handshake {
		s.handshake = nil // answered: later uid-less frames are not its reply
	}
	s.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case p.reply <- m:
	default: // a duplicate reply; the first one counts
	}
	return true
}

// rateLimited handles the server's REQUESTS_EXCEEDED: the frame that caused
// it was dropped, the server said when to retry. The writer pauses until
// then, and every request waiting for a reply learns that it may have been
// the one dropped. It is reported to OnError once per episode.
func (s *Session) rateLimited(e *protocol.ServerError) {
	d := limiterRetry(e)
	now := time.Now()
	until := now.Add(d).UnixNano()
	prev := s.pauseUntil.Load()
	for prev < until && !s.pauseUntil.CompareAndSwap(prev, until) {
		prev = s.pauseUntil.Load()
	}
	s.c.rateLimits.Add(1)
	s.mu.Lock()
	for _, p := range s.pending {
		select {
		case p.limited <- e:
		default:
		}
	}
	s.mu.Unlock()
	if prev < now.UnixNano() {
		s.log.Warn("the server's rate limiter dropped a frame; pausing the writer", "retry_after", d)
		s.c.reportError(e)
	}
	if f := s.c.cfg.OnRateLimited; f != nil {
		s.c.notify.errs.post(func() { f(d) })
	}
}

// limiterRetry reads the delay of a REQUESTS_EXCEEDED message ("Too many
// messages, retry after 250ms."); 1 s when it says none; at most a minute.
func limiterRetry(e *protocol.ServerError) time.Duration {
	if e == nil {
		return time.Second
	}
	msg := e.Message
	i := strings.Index(msg, "retry after ")
	if i < 0 {
		return time.Second
	}
	msg = msg[i+len("retry after "):]
	j := 0
	for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' && j < 10 {
		j++
	}
	if j == 0 || !strings.HasPrefix(msg[j:], "ms") {
		return time.Second
	}
	ms, _ := strconv.Atoi(msg[:j])
	return min(time.Duration(ms)*time.Millisecond, time.Minute)
}

// release delivers the held frames in order and lets later ones through.
// Holding the lock while delivering keeps them ahead of frames the read loop
// receives meanwhile.
//
// After TOKEN_EXPIRED and before the re-authentication, frames stay held: a
// release after OnConnect delivers only those that came before the expiry;
// reauthenticated releases the rest.
func (s *Session) release(reauthenticated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reauthenticated {
		s.expired = false
	}
	n := len(s.held)
	if s.expired {
		n = s.expiredAt
	}
	for _, m := range s.held[:n] {
		s.c.deliver(m)
	}
	s.inHook = false
	if s.expired {
		s.held = append(s.held[:0:0], s.held[n:]...)
		s.expiredAt = 0
		return
	}
	s.held = nil
	s.holding = false
	s.heldBytes = 0
}

// expire holds the frames from now on, until the re-authentication that
// TOKEN_EXPIRED calls for has run OnConnect.
func (s *Session) expire() {
	s.mu.Lock()
	if !s.expired {
		s.expired = true
		s.expiredAt = len(s.held)
	}
	s.holding = true
	s.mu.Unlock()
}

// enterHook marks the start of the OnConnect hook: frames that arrive from
// now until release answer what the hook sends.
func (s *Session) enterHook() {
	s.mu.Lock()
	s.inHook = true
	s.mu.Unlock()
}

// heldOverhead is counted per held frame besides its data.
const heldOverhead = 256

func (s *Session) readLoop() {
	defer s.wg.Done()
	s.readGoid.Store(goid.Current())
	var seq uint64
	for {
		_, b, err := s.ws.Read(context.Background())
		if err != nil {
			s.end(s.readError(err))
			return
		}
		now := time.Now()
		s.lastRecv.Store(now.UnixNano())
		s.c.stats.lastFrame.Store(now.UnixNano())
		s.c.stats.framesIn.Add(1)
		s.c.stats.bytesIn.Add(uint64(len(b)))
		m, err := protocol.DecodeMessage(b)
		if err != nil {
			s.log.Warn("unusable frame", "err", err)
			s.c.reportError(err)
			continue
		}
		seq++
		m.Received = now
		m.Session = s.id
		m.Seq = seq
		s.dispatch(m)
	}
}

func (s *Session) readError(err error) error {
	if cause := context.Cause(s.ctx); cause != nil {
		return cause
	}
	if p := s.closing.Load(); p != nil {
		return *p
	}
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return fmt.Errorf("%w (limit %d bytes)", ErrFrameTooLarge, s.c.cfg.ReadLimit)
	}
	if status := websocket.CloseStatus(err); status != -1 {
		return &CloseError{Code: int(status), Reason: closeReason(err)}
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return &CloseError{Code: int(websocket.StatusAbnormalClosure)}
	}
	return fmt.Errorf("directus: read: %w", err)
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

// dispatch routes one decoded frame. Routing is by type first: the server's
// request replies and subscription frames have separate types, so a
// subscription uid may equal a request uid without confusion.
func (s *Session) dispatch(m *protocol.Message) {
	switch m.Type {
	case protocol.TypePing:
		s.answerPing()
	case protocol.TypePong:
		s.resolve(m) // unmatched pongs (heartbeat) only count as activity
	case protocol.TypeAuth:
		if s.resolve(m) {
			return
		}
		if m.Err != nil {
			if m.Err.Code == protocol.CodeTokenExpired {
				// Frames after expiry are held until re-auth and the
				// OnConnect hook, like those of a new session.
				s.expire()
				select {
				case s.expiredSig <- struct{}{}:
				default:
				}
			}
			s.c.reportError(m.Err)
		}
	case protocol.TypeItems:
		if !s.resolve(m) && m.Err != nil {
			s.c.reportError(m.Err)
		}
	case protocol.TypeSubscription:
		s.deliverSubscription(m)
	case protocol.TypeSubscribe, protocol.TypeUnsubscribe:
		if m.Err != nil && m.UID == "" {
			s.c.reportError(m.Err)
			return
		}
		s.deliverSubscription(m)
	case protocol.TypeServer:
		switch {
		case m.Err != nil && m.Err.Code == protocol.CodeRequestsExceeded:
			s.rateLimited(m.Err)
		case m.Err != nil:
			s.c.reportError(m.Err)
		}
	default:
		s.log.Debug("ignoring frame of unknown type", "type", m.Type)
	}
}

// deliverSubscription passes a subscription frame on, or holds it while the
// session gets ready. Held frames are bounded (Config.MaxHeldBytes), during
// the OnConnect hook too: a flood that outgrows them ends the session,
// which is replaced after a backoff, rather than grow memory for as long as
// a hook or an auth reply takes.
func (s *Session) deliverSubscription(m *protocol.Message) {
	s.mu.Lock()
	if s.holding {
		s.heldBytes += len(m.Data) + len(m.Meta) + heldOverhead
		if limit := s.c.cfg.MaxHeldBytes; int64(s.heldBytes) > limit {
			s.held = nil
			inHook := s.inHook
			s.mu.Unlock()
			s.log.Warn("too many frames before the session was ready; dropping the session", "limit_bytes", limit, "in_hook", inHook)
			s.end(&protocol.ProtocolError{Reason: fmt.Sprintf("more than %d MiB of subscription frames before the session was ready", limit>>20), Type: m.Type, Size: len(m.Data)})
			// At once: the supervisor, which closes ended sessions, may be
			// inside a long hook, and nobody reads the socket any more.
			s.closeNow()
			return
		}
		s.held = append(s.held, m)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.c.deliver(m)
}

var pongFrame = []byte(`{"type":"pong"}`)

// answerPing queues a pong ahead of other frames. Directus closes a
// connection that sends nothing within a heartbeat period after its ping.
func (s *Session) answerPing() {
	select {
	case s.urgent <- pongFrame:
	default: // a pong is already waiting; one answers the ping
	}
}

func (s *Session) writeLoop() {
	defer s.wg.Done()
	for {
		var b []byte
		select {
		case b = <-s.urgent:
		default:
			select {
			case b = <-s.urgent:
			case b = <-s.out:
			case <-s.ctx.Done():
				return
			}
		}
		if !s.waitPause() {
			return
		}
		if s.pace != nil && s.pace.Wait(s.ctx) != nil {
			return // the session ended
		}
		// Counted before the write returns: the server's answer can be
		// read (and counted) before this goroutine resumes.
		s.c.stats.framesOut.Add(1)
		s.c.stats.bytesOut.Add(uint64(len(b)))
		ctx, cancel := context.WithTimeout(s.ctx, s.c.cfg.WriteTimeout)
		err := s.ws.Write(ctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			if s.ctx.Err() == nil {
				s.end(fmt.Errorf("directus: write: %w", err))
			}
			return
		}
	}
}

// waitPause holds the writer while the server's rate limiter asked for a
// pause; it reports false when the session ended meanwhile.
func (s *Session) waitPause() bool {
	for {
		until := s.pauseUntil.Load()
		d := time.Until(time.Unix(0, until))
		if until == 0 || d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return false
		}
	}
}

// heartbeat sends a JSON ping after PingInterval of silence and ends the
// session if nothing at all arrives within PingTimeout after it. It starts
// after authentication: in handshake mode a ping as first frame would fail
// the handshake.
func (s *Session) heartbeat() {
	defer s.wg.Done()
	interval, timeout := s.c.cfg.PingInterval, s.c.cfg.PingTimeout
	tick := max(min(interval, timeout)/4, 5*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var pingSent time.Time
	var seq uint64
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			last := time.Unix(0, s.lastRecv.Load())
			switch {
			case !pingSent.IsZero() && last.After(pingSent):
				pingSent = time.Time{}
			case !pingSent.IsZero():
				if now.Sub(pingSent) >= timeout {
					s.log.Warn("server silent; dropping the session", "silent_for", now.Sub(last).Round(time.Millisecond))
					s.end(ErrHeartbeatTimeout)
					return
				}
			case now.Sub(last) >= interval:
				seq++
				if err := s.Send(s.ctx, protocol.PingMessage{UID: protocol.UID(fmt.Sprintf("hb-%d", seq))}); err != nil {
					return
				}
				pingSent = now
			}
		}
	}
}

func (s *Session) startHeartbeat() {
	if s.c.cfg.PingInterval < 0 {
		return
	}
	s.wg.Add(1)
	go s.heartbeat()
}

// close ends the session politely (close frame 1000) when it is still up,
// waiting at most closeWait for the server's answer, then closes the socket.
func (s *Session) close(cause error) {
	s.closing.CompareAndSwap(nil, &cause)
	if s.ctx.Err() == nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s.ws.Close(websocket.StatusNormalClosure, "")
		}()
		t := time.NewTimer(closeWait)
		select {
		case <-done:
		case <-t.C:
			// coder/websocket's CloseNow does nothing while a Close is in
			// progress (which waits up to 5 s per step on a dead link):
			// closing the network connection ends it at once.
			s.raw.close()
			<-done
		}
		t.Stop()
	}
	s.end(cause)
	s.closeNow()
}

// closeNow closes the socket without a close handshake.
func (s *Session) closeNow() {
	s.raw.close()
	_ = s.ws.CloseNow()
}

// closeWait bounds the close handshake in Close.
const closeWait = time.Second
