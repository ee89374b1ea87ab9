package directustest

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"
)

type connState int

const (
	stateHandshake connState = iota // handshake mode, waiting for the first auth frame
	stateOpen                       // authenticated, or public
	stateClosing                    // a graceful close is queued; nothing more is sent
	stateClosed                     // the socket is gone
)

// wsConn is one WebSocket connection. Fields marked "s.mu" are guarded by
// Server.mu; the outbound queue has its own lock so the writer goroutine
// never needs Server.mu.
type wsConn struct {
	s      *Server
	id     int64
	ws     *websocket.Conn
	raw    net.Conn
	ctx    context.Context
	cancel context.CancelFunc

	// s.mu
	state       connState
	limitWindow time.Time // when the rate limiter's window opened
	limitUsed   int       // frames counted in it
	ident       identity
	authTimer   *stimer // handshake timeout, or re-auth timeout after TOKEN_EXPIRED
	expiryTimer *stimer
	hbPinged    bool // pinged by the heartbeat and no answer yet
	subs        []*subscription
	subsByUID   map[string]*subscription
	deadSubs    int

	qmu        sync.Mutex
	queue      []outItem
	qsignal    chan struct{}
	writerDone chan struct{}
	gone       chan struct{} // closed when teardown is complete
}

// outItem is one queued outbound operation.
type outItem struct {
	data  []byte
	close bool // a graceful close: empty close frame (the client sees 1005)
	at    time.Time
}

func newWSConn(s *Server, ws *websocket.Conn, raw net.Conn) *wsConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &wsConn{
		s:          s,
		ws:         ws,
		raw:        raw,
		ctx:        ctx,
		cancel:     cancel,
		subsByUID:  map[string]*subscription{},
		qsignal:    make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		gone:       make(chan struct{}),
	}
}

// sendLocked queues a data frame. Nothing is queued once a close is
// pending, or while the server is stalled (the frame is lost).
func (c *wsConn) sendLocked(data []byte) {
	if c.state >= stateClosing || c.s.faults.stalled.Load() {
		return
	}
	c.push(outItem{data: data, at: time.Now()})
}

func (c *wsConn) push(it outItem) {
	c.qmu.Lock()
	c.queue = append(c.queue, it)
	c.qmu.Unlock()
	select {
	case c.qsignal <- struct{}{}:
	default:
	}
}

// closeLocked closes the connection the way Directus does (ws.close()
// without a code): frames already queued are sent, then an empty close
// frame. The connection stops receiving events at once.
func (c *wsConn) closeLocked() {
	if c.state >= stateClosing {
		return
	}
	c.state = stateClosing
	c.detachLocked()
	c.push(outItem{close: true, at: time.Now()})
	c.s.logf("closing connection", "conn", c.id)
}

// detachLocked stops the timers and removes the subscriptions.
func (c *wsConn) detachLocked() {
	c.authTimer.stop()
	c.authTimer = nil
	c.expiryTimer.stop()
	c.expiryTimer = nil
	c.removeAllSubsLocked()
}

// abort cuts the socket without a close frame (the peer sees 1006).
func (c *wsConn) abort() {
	c.cancel()
	closeRaw(c.raw)
}

func (c *wsConn) readLoop() {
	c.ws.SetReadLimit(maxInboundMessage)
	for {
		_, data, err := c.ws.Read(c.ctx)
		if err != nil {
			break
		}
		c.s.hookFrame(c.id, true, data)
		c.s.handleFrame(c, data)
	}
	c.teardown()
}

// teardown runs when the socket is gone: unregister, stop the writer.
func (c *wsConn) teardown() {
	s := c.s
	s.mu.Lock()
	c.state = stateClosed
	c.detachLocked()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
		s.connsChangedLocked()
		s.hbEnsureLocked()
	}
	s.mu.Unlock()
	c.abort()
	_ = c.ws.CloseNow()
	<-c.writerDone
	close(c.gone)
	s.logf("connection closed", "conn", c.id)
}

func (c *wsConn) writeLoop() {
	defer c.s.handlers.Done()
	defer close(c.writerDone)
	for {
		items, ok := c.take()
		if !ok {
			return
		}
		for _, it := range items {
			if !c.waitWritable(it) {
				return
			}
			if it.close {
				_ = c.ws.Close(websocket.StatusNoStatusRcvd, "")
				c.abort()
				return
			}
			if err := c.ws.Write(c.ctx, websocket.MessageText, it.data); err != nil {
				c.abort()
				return
			}
			c.s.hookFrame(c.id, false, it.data)
		}
	}
}

// take waits for queued items and returns the next batch: one item, or with
// SetReorder a shuffled window of data frames (a close is never reordered).
func (c *wsConn) take() ([]outItem, bool) {
	var graceUntil time.Time
	for {
		c.qmu.Lock()
		if n := len(c.queue); n > 0 {
			window := int(c.s.faults.reorder.Load())
			if window <= 1 || c.queue[0].close {
				it := c.queue[0]
				c.queue[0] = outItem{}
				c.queue = c.queue[1:]
				c.qmu.Unlock()
				return []outItem{it}, true
			}
			k := 0
			for k < n && k < window && !c.queue[k].close {
				k++
			}
			if k < window && k == n {
				// Wait briefly for the window to fill up.
				if graceUntil.IsZero() {
					graceUntil = time.Now().Add(reorderGrace)
				}
				if d := time.Until(graceUntil); d > 0 {
					c.qmu.Unlock()
					t := time.NewTimer(d)
					select {
					case <-c.qsignal:
					case <-t.C:
					case <-c.ctx.Done():
						t.Stop()
						return nil, false
					}
					t.Stop()
					continue
				}
			}
			batch := make([]outItem, k)
			copy(batch, c.queue[:k])
			clear(c.queue[:k])
			c.queue = c.queue[k:]
			c.qmu.Unlock()
			rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			return batch, true
		}
		c.qmu.Unlock()
		select {
		case <-c.qsignal:
		case <-c.ctx.Done():
			return nil, false
		}
	}
}

// waitWritable blocks while the server is stalled and until the frame delay
// has passed. It returns false when the connection is gone.
func (c *wsConn) waitWritable(it outItem) bool {
	for {
		stalled, change, delay := c.s.faults.snapshot()
		if stalled {
			select {
			case <-change:
				continue
			case <-c.ctx.Done():
				return false
			}
		}
		if delay > 0 {
			if d := time.Until(it.at.Add(delay)); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-change:
					t.Stop()
					continue
				case <-c.ctx.Done():
					t.Stop()
					return false
				}
			}
		}
		return true
	}
}

func (s *Server) hookFrame(conn int64, inbound bool, data []byte) {
	if s.opts.OnFrame != nil {
		s.opts.OnFrame(Frame{Conn: conn, Inbound: inbound, Data: data, Time: time.Now()})
	}
}

// connsChangedLocked wakes up WaitConns callers.
func (s *Server) connsChangedLocked() {
	close(s.connChanged)
	s.connChanged = make(chan struct{})
}
