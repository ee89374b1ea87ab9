// Package faultproxy is a fault-injecting TCP proxy for tests. It listens on
// a loopback port, forwards every accepted connection to one target address,
// and lets a test break the path between a client and a server on demand:
//
//	p, err := faultproxy.New(strings.TrimPrefix(srv.URL(), "http://"))
//	if err != nil {
//		t.Fatal(err)
//	}
//	defer p.Close()
//	// Point the client at p.URL("http") instead of srv.URL(), then:
//	p.Cut()                           // reset every proxied connection, both sides
//	p.Stall(true)                     // blackhole: connections stay open, nothing passes
//	p.SetDelay(50 * time.Millisecond) // latency on every forwarded chunk
//	p.SetSplit(1)                     // forward one byte per write
//	p.Refuse(time.Second)             // dials get ECONNREFUSED, then the same port reopens
//
// # Forwarding
//
// Each proxied connection is a pair of TCP connections (client side and
// target side) and, per direction, a reader and a writer goroutine joined by
// a small bounded queue of chunks. A chunk is what one Read returned. The
// writer writes each chunk when it is due (its read time plus the delay
// configured at that moment), in order, in pieces of at most the configured
// split size, one Write per piece; TCP_NODELAY is on (Go's default), so each
// piece leaves as its own segment. Stats counts the bytes handed to the
// other side's socket.
//
// A clean end of stream (FIN) in one direction is passed on with CloseWrite
// once everything read before it is written; the proxied connection is
// closed when both directions have ended. A reset, or any other read or
// write error, closes both sides at once with SO_LINGER 0, so the other peer
// sees a reset too. When the target cannot be dialed, the accepted
// connection is reset.
//
// # Faults
//
// Cut resets every proxied connection. Stall(true) stops both directions of
// every connection, old and new: readers stop reading and writers stop
// writing, so apart from what was already read when the stall began (at
// most one chunk per direction, plus chunks a delay was holding back; all
// kept, not dropped, and forwarded in order after Stall(false)) nothing is
// buffered beyond what the kernel holds; the peers see silence and, once
// their socket buffers are full, a blocked writer. New connections are still
// accepted and dialed during a stall. SetDelay applies to chunks read after
// the call, SetSplit to every write after it. Refuse and SetRefusing close the listener, so that
// dials get ECONNREFUSED, and later listen again on the same port; existing
// connections are not touched.
//
// # Concurrency
//
// All methods are safe for concurrent use. Close stops the listener, closes
// every proxied connection and returns only when every goroutine of the
// proxy has exited; the proxy cannot be used afterwards.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	readBufferSize = 32 << 10
	queueChunks    = 16
	dialTimeout    = 5 * time.Second
	// rebind bounds the retries when listening again on the same port.
	rebindTries = 200
	rebindPause = 10 * time.Millisecond
)

// ErrClosed is returned by the methods of a closed Proxy that report errors.
var ErrClosed = errors.New("faultproxy: proxy closed")

// Proxy is a fault-injecting TCP proxy. Create it with New and stop it with
// Close.
type Proxy struct {
	target string
	addr   string // "127.0.0.1:PORT", fixed for the proxy's lifetime

	mu        sync.Mutex
	closed    bool
	ln        net.Listener  // nil while refusing
	gen       uint64        // incremented by every Refuse and SetRefusing
	refusal   chan struct{} // closed to cancel the pending timed reopen; nil when none
	links     map[*link]struct{}
	connsChg  chan struct{} // closed and replaced whenever links changes
	stallChg  chan struct{} // closed and replaced whenever stall changes
	closing   chan struct{} // closed by Close
	wg        sync.WaitGroup
	reopenErr error

	stalled atomic.Bool
	delay   atomic.Int64 // time.Duration
	split   atomic.Int64

	up, down atomic.Int64
	writes   atomic.Int64 // Write calls on proxied connections, for tests
}

// New listens on 127.0.0.1 on a free port and forwards every connection it
// accepts to targetAddr ("host:port").
func New(targetAddr string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(targetAddr); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", targetAddr, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		target:   targetAddr,
		addr:     ln.Addr().String(),
		links:    make(map[*link]struct{}),
		connsChg: make(chan struct{}),
		stallChg: make(chan struct{}),
		closing:  make(chan struct{}),
	}
	p.mu.Lock()
	p.serveLocked(ln)
	p.mu.Unlock()
	return p, nil
}

// Addr returns the proxy's address, "127.0.0.1:PORT". It never changes, not
// even across Refuse.
func (p *Proxy) Addr() string { return p.addr }

// URL returns scheme + "://" + Addr(), for example "http://127.0.0.1:PORT".
func (p *Proxy) URL(scheme string) string { return scheme + "://" + p.addr }

// Target returns the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Close stops the listener, closes every proxied connection (normally; Cut
// is the abrupt way) and waits until every goroutine of the proxy has exited.
// It is safe to call more than once; later calls return nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.closing)
	var err error
	if p.ln != nil {
		err = p.ln.Close()
		p.ln = nil
	}
	p.cancelRefusalLocked()
	links := p.linksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.kill(false)
	}
	p.wg.Wait()
	return err
}

// Cut closes every proxied connection abruptly, on both sides, with
// SO_LINGER 0 so that both peers get a reset (ECONNRESET) rather than an end
// of stream. It returns when those connections are gone; connections
// accepted meanwhile are not affected. Data held by Stall or SetDelay is
// dropped.
func (p *Proxy) Cut() {
	p.mu.Lock()
	links := p.linksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.kill(true)
	}
	for _, l := range links {
		<-l.gone
	}
}

// Stall turns the blackhole on or off. While on, nothing is forwarded in
// either direction of any connection, but every connection stays open and
// new ones are accepted. Bytes already read when the stall began are held
// and forwarded, in order, after Stall(false).
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled.Load() == on {
		return
	}
	p.stalled.Store(on)
	close(p.stallChg)
	p.stallChg = make(chan struct{})
}

// SetDelay delays every chunk read from now on by d before it is written
// (its due time is its read time plus d); the order is kept. Zero or a
// negative d turns the delay off.
func (p *Proxy) SetDelay(d time.Duration) {
	if d < 0 {
		d = 0
	}
	p.delay.Store(int64(d))
}

// SetSplit makes the proxy write every chunk in pieces of at most n bytes,
// one Write per piece, so that the receiver sees messages split across TCP
// reads. Zero or a negative n writes every chunk whole.
func (p *Proxy) SetSplit(n int) {
	if n < 0 {
		n = 0
	}
	p.split.Store(int64(n))
}

// Refuse closes the listener, so new dials get ECONNREFUSED, and listens
// again on the same port after d. It returns at once; existing connections
// are not touched. A d of zero or less refuses until SetRefusing(false).
// The last call of Refuse or SetRefusing wins: it replaces a pending reopen.
func (p *Proxy) Refuse(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.gen++
	p.cancelRefusalLocked()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	if d <= 0 {
		return
	}
	cancel, gen := make(chan struct{}), p.gen
	p.refusal = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-cancel:
			return
		case <-p.closing:
			return
		}
		if err := p.reopen(gen); err != nil && !errors.Is(err, ErrClosed) {
			p.mu.Lock()
			if p.gen == gen {
				p.reopenErr = err
			}
			p.mu.Unlock()
		}
	}()
}

// SetRefusing closes the listener (on) or listens again on the same port
// (off), replacing any pending reopen of Refuse. Existing connections are
// not touched. Turning it off returns when the proxy accepts again; it fails
// only if the port stays taken by someone else for about two seconds, or
// the proxy is closed.
func (p *Proxy) SetRefusing(on bool) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.gen++
	p.cancelRefusalLocked()
	gen := p.gen
	if on {
		if p.ln != nil {
			_ = p.ln.Close()
			p.ln = nil
		}
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return p.reopen(gen)
}

// Refusing reports whether the listener is closed by Refuse or SetRefusing
// (or because listening again on the port failed; see ReopenErr).
func (p *Proxy) Refusing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && p.ln == nil
}

// ReopenErr returns the error of the last failed attempt to listen again on
// the proxy's port after a timed Refuse, or nil.
func (p *Proxy) ReopenErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reopenErr
}

// Conns returns the number of open proxied connections, including those
// whose target is still being dialed.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// WaitConns blocks until exactly n proxied connections are open, or ctx
// ends (it then returns ctx.Err()), or the proxy is closed (ErrClosed). It
// is woken by every change and does not poll.
func (p *Proxy) WaitConns(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		count, ch, closed := len(p.links), p.connsChg, p.closed
		p.mu.Unlock()
		if count == n {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns the bytes forwarded so far from clients to the target (up)
// and from the target to clients (down), counting bytes written.
func (p *Proxy) Stats() (bytesUp, bytesDown int64) { return p.up.Load(), p.down.Load() }

func (p *Proxy) cancelRefusalLocked() {
	if p.refusal != nil {
		close(p.refusal)
		p.refusal = nil
	}
}

// reopen listens again on p.addr, retrying while the port is taken. It
// gives up without an error when a later Refuse or SetRefusing (a newer
// gen) took over meanwhile.
func (p *Proxy) reopen(gen uint64) error {
	var err error
	for i := 0; i < rebindTries; i++ {
		if i > 0 {
			t := time.NewTimer(rebindPause)
			select {
			case <-t.C:
			case <-p.closing:
				t.Stop()
				return ErrClosed
			}
		}
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			return ErrClosed
		case p.gen != gen || p.ln != nil:
			p.mu.Unlock()
			return nil
		}
		var ln net.Listener
		ln, err = net.Listen("tcp", p.addr)
		if err == nil {
			p.refusal = nil
			p.reopenErr = nil
			p.serveLocked(ln)
			p.mu.Unlock()
			return nil
		}
		p.mu.Unlock()
	}
	return fmt.Errorf("faultproxy: listen again on %s: %w", p.addr, err)
}

// serveLocked makes ln the listener and starts its accept loop.
func (p *Proxy) serveLocked(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (EMFILE, ECONNABORTED, …): pause briefly.
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-t.C:
				continue
			case <-p.closing:
				t.Stop()
				return
			}
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		l := newLink(p, c)
		p.links[l] = struct{}{}
		p.connsChangedLocked()
		p.wg.Add(1)
		p.mu.Unlock()
		go l.run()
	}
}

func (p *Proxy) linksLocked() []*link {
	out := make([]*link, 0, len(p.links))
	for l := range p.links {
		out = append(out, l)
	}
	return out
}

func (p *Proxy) connsChangedLocked() {
	close(p.connsChg)
	p.connsChg = make(chan struct{})
}

func (p *Proxy) remove(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.links[l]; ok {
		delete(p.links, l)
		p.connsChangedLocked()
	}
}

// waitUnstalled returns true at once when no stall is on, otherwise when it
// ends; it returns false when ctx ends first.
func (p *Proxy) waitUnstalled(ctx context.Context) bool {
	for p.stalled.Load() {
		p.mu.Lock()
		on, ch := p.stalled.Load(), p.stallChg
		p.mu.Unlock()
		if !on {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// link is one proxied connection: the accepted client side and the dialed
// target side.
type link struct {
	p      *Proxy
	client net.Conn
	ctx    context.Context // done once the link is killed
	cancel context.CancelFunc
	gone   chan struct{} // closed when every goroutine of the link has exited

	mu     sync.Mutex
	killed bool
	server net.Conn
}

func newLink(p *Proxy, c net.Conn) *link {
	ctx, cancel := context.WithCancel(context.Background())
	return &link{p: p, client: c, ctx: ctx, cancel: cancel, gone: make(chan struct{})}
}

// kill closes both sides; abrupt sets SO_LINGER 0 first so that the peers
// get a reset. Only the first call has an effect.
func (l *link) kill(abrupt bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		return
	}
	l.killed = true
	l.cancel()
	for _, c := range []net.Conn{l.client, l.server} {
		if c == nil {
			continue
		}
		if abrupt {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		}
		_ = c.Close()
	}
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer close(l.gone)
	defer l.p.remove(l)

	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.DialContext(l.ctx, "tcp", l.p.target)
	if err != nil {
		l.kill(true)
		return
	}
	l.mu.Lock()
	if l.killed {
		l.mu.Unlock()
		_ = server.Close()
		return
	}
	l.server = server
	l.mu.Unlock()

	var pumps sync.WaitGroup
	ended := make(chan struct{}, 2) // one per direction that ended cleanly
	pumps.Add(4)
	l.pipe(&pumps, ended, l.client, server, &l.p.up)
	l.pipe(&pumps, ended, server, l.client, &l.p.down)
	for range 2 {
		select {
		case <-ended:
		case <-l.ctx.Done():
		}
	}
	l.kill(false)
	pumps.Wait()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe forwards src to dst with one reader and one writer goroutine. When
// src ends cleanly and everything is written, dst is half-closed and ended
// receives a value; any error kills the link abruptly.
func (l *link) pipe(wg *sync.WaitGroup, ended chan<- struct{}, src, dst net.Conn, count *atomic.Int64) {
	p := l.p
	q := make(chan chunk, queueChunks)
	go func() { // reader
		defer wg.Done()
		buf := make([]byte, readBufferSize)
		for {
			if !p.waitUnstalled(l.ctx) {
				return
			}
			n, err := src.Read(buf)
			if n > 0 {
				c := chunk{b: append([]byte(nil), buf[:n]...)}
				if d := time.Duration(p.delay.Load()); d > 0 {
					c.due = time.Now().Add(d)
				}
				select {
				case q <- c:
				case <-l.ctx.Done():
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					close(q)
				} else {
					l.kill(true)
				}
				return
			}
		}
	}()
	go func() { // writer
		defer wg.Done()
		for {
			var c chunk
			var ok bool
			select {
			case c, ok = <-q:
			case <-l.ctx.Done():
				return
			}
			if !ok {
				if tc, isTCP := dst.(*net.TCPConn); isTCP {
					if err := tc.CloseWrite(); err != nil {
						l.kill(true)
						return
					}
				}
				ended <- struct{}{}
				return
			}
			if !c.due.IsZero() {
				if wait := time.Until(c.due); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-t.C:
					case <-l.ctx.Done():
						t.Stop()
						return
					}
				}
			}
			for b := c.b; len(b) > 0; {
				if !p.waitUnstalled(l.ctx) {
					return
				}
				n := len(b)
				if s := int(p.split.Load()); s > 0 && n > s {
					n = s
				}
				// Count before writing, so that a peer that has received
				// the bytes never sees Stats lag behind; an error takes
				// back what was not written.
				p.writes.Add(1)
				count.Add(int64(n))
				w, err := dst.Write(b[:n])
				if err != nil {
					count.Add(int64(w - n))
					l.kill(true)
					return
				}
				b = b[n:]
			}
		}
	}()
}
