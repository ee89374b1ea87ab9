package faultproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer writes back everything it reads. When a connection's read side
// ends it reports the read error (nil for a clean EOF) on errs and closes
// the connection.
type echoServer struct {
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	received atomic.Int64
	errs     chan error
}

func newEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, conns: make(map[net.Conn]struct{}), errs: make(chan error, 128)}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns[c] = struct{}{}
			e.mu.Unlock()
			e.wg.Add(1)
			go e.serve(c)
		}
	}()
	t.Cleanup(e.Close)
	return e
}

func (e *echoServer) serve(c net.Conn) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		_ = c.Close()
	}()
	buf := make([]byte, 8<<10)
	for {
		n, err := c.Read(buf)
		e.received.Add(int64(n))
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				e.report(werr)
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			e.report(err)
			return
		}
	}
}

func (e *echoServer) report(err error) {
	select {
	case e.errs <- err:
	default:
	}
}

func (e *echoServer) Addr() string { return e.ln.Addr().String() }

func (e *echoServer) Close() {
	_ = e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		_ = c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := readN(t, c, len(msg))
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return got
}

// pattern returns n bytes that differ between offsets, so that reordering,
// loss or duplication shows.
func pattern(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// exchange writes msg from one goroutine while reading it back on another,
// so that neither side's socket buffers limit the size. It may run on any
// goroutine: it reports instead of failing the test.
func exchange(c net.Conn, msg []byte, chunk int) error {
	werr := make(chan error, 1)
	go func() {
		for b := msg; len(b) > 0; {
			n := min(chunk, len(b))
			if _, err := c.Write(b[:n]); err != nil {
				werr <- err
				return
			}
			b = b[n:]
		}
		werr <- nil
	}()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(msg))
	_, rerr := io.ReadFull(c, got)
	_ = c.SetReadDeadline(time.Time{})
	if rerr != nil {
		_ = c.Close() // unblocks the writer
		<-werr
		return fmt.Errorf("reading the echo: %w", rerr)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echoed %d bytes differ from the %d sent", len(got), len(msg))
	}
	return nil
}

// TestForward: bytes pass unchanged in both directions, for several
// connections at once; Addr, URL, Conns, WaitConns and Stats report them.
func TestForward(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	if ok, _ := regexp.MatchString(`^127\.0\.0\.1:[0-9]+$`, p.Addr()); !ok {
		t.Fatalf("Addr = %q", p.Addr())
	}
	if got, want := p.URL("http"), "http://"+p.Addr(); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
	if p.Target() != e.Addr() {
		t.Fatalf("Target = %q", p.Target())
	}
	var wg sync.WaitGroup
	const clients, size = 4, 1 << 20
	conns := make([]*net.TCPConn, clients)
	for i := range conns {
		conns[i] = dial(t, p.Addr())
	}
	if err := p.WaitConns(ctxT(t), clients); err != nil {
		t.Fatalf("WaitConns(%d): %v (Conns = %d)", clients, err, p.Conns())
	}
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := exchange(c, pattern(uint64(i), size), 7000); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	up, down := p.Stats()
	if up != clients*size || down != clients*size {
		t.Fatalf("Stats = %d up, %d down, want %d each", up, down, clients*size)
	}
	for _, c := range conns {
		_ = c.Close()
	}
	if err := p.WaitConns(ctxT(t), 0); err != nil {
		t.Fatalf("WaitConns(0): %v (Conns = %d)", err, p.Conns())
	}
}

// TestHalfClose: a client's FIN reaches the server after its data, and the
// server's close comes back as a clean EOF, not a reset.
func TestHalfClose(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	c := dial(t, p.Addr())
	if _, err := c.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last words" {
		t.Fatalf("ReadAll = %q, %v; want the echo and a clean EOF", got, err)
	}
	if err := <-e.errs; err != nil {
		t.Fatalf("server side ended with %v, want a clean EOF", err)
	}
	if err := p.WaitConns(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
}

// TestCut: Cut resets both sides of every proxied connection (ECONNRESET
// on the client and on the server), removes them before it returns, and
// leaves the proxy accepting new connections.
func TestCut(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("before"))
	p.Cut()
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns after Cut = %d", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after Cut: %v, want ECONNRESET", err)
	}
	if err := <-e.errs; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read after Cut: %v, want ECONNRESET", err)
	}
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, []byte("after"))
}

// TestStall: while stalled nothing passes in either direction, new
// connections are accepted but silent, a sender is blocked by backpressure
// instead of being buffered without bound, and Stall(false) delivers every
// held byte in order.
func TestStall(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm-up"))
	received := e.received.Load()

	p.Stall(true)
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	// Silence can only be observed over a window of time.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while stalled = %d bytes, %v; want a timeout", n, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if got := e.received.Load(); got != received {
		t.Fatalf("server received %d bytes while stalled", got-received)
	}
	c2 := dial(t, p.Addr())
	if err := p.WaitConns(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}

	// Backpressure: far more than the kernel buffers can hold cannot be
	// written while stalled.
	big := pattern(1, 32<<20)
	_ = c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := c.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing 32 MiB while stalled: %d bytes, %v; want a timeout", n, err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	t.Logf("%d bytes written before the stalled path pushed back", n)
	if got := e.received.Load(); got != received {
		t.Fatalf("server received %d bytes while stalled", got-received)
	}

	p.Stall(false)
	want := append([]byte("held"), big[:n]...)
	if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
		t.Fatal("bytes held by the stall came back altered")
	}
	if got := readN(t, c2, 3); string(got) != "new" {
		t.Fatalf("second connection got %q", got)
	}
}

// TestSplit: with SetSplit(n) every forwarded chunk is written in pieces of
// at most n bytes, one Write per piece; the data is unchanged.
func TestSplit(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))

	p.SetSplit(1)
	before := p.writes.Load()
	msg := pattern(2, 1000)
	roundTrip(t, c, msg)
	if got := p.writes.Load() - before; got != 2*int64(len(msg)) {
		t.Fatalf("%d writes for %d bytes each way with SetSplit(1), want one per byte", got, len(msg))
	}

	p.SetSplit(100)
	before = p.writes.Load()
	roundTrip(t, c, msg)
	if got := p.writes.Load() - before; got < 20 {
		t.Fatalf("%d writes for 2×1000 bytes with SetSplit(100), want at least 20", got)
	}

	p.SetSplit(0)
	if err := exchange(c, pattern(3, 1<<20), 64<<10); err != nil {
		t.Fatal(err)
	}
}

// TestDelay: every chunk is delayed (a round trip takes at least twice the
// delay) and the order of bytes is kept; SetDelay(0) turns it off.
func TestDelay(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))

	const d = 100 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	roundTrip(t, c, []byte("slow"))
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip took %v with a delay of %v each way", rtt, d)
	}

	// Many separate writes, each its own chunk, come back in order.
	var want []byte
	for i := range 50 {
		msg := []byte{byte('a' + i%26), byte('0' + i%10)}
		want = append(want, msg...)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("delayed chunks came back as %q, want %q", got, want)
	}

	p.SetDelay(0)
	roundTrip(t, c, []byte("fast"))
}

// TestRefuse: SetRefusing and Refuse close the listener (dials get
// ECONNREFUSED) without touching existing connections, and the proxy
// listens again on the same port, after the given time or at once.
func TestRefuse(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))
	addr := p.Addr()

	if err := p.SetRefusing(true); err != nil {
		t.Fatal(err)
	}
	if !p.Refusing() {
		t.Fatal("Refusing() = false after SetRefusing(true)")
	}
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing: %v, want ECONNREFUSED", err)
	}
	roundTrip(t, c, []byte("existing connection still works"))
	if err := p.SetRefusing(false); err != nil {
		t.Fatal(err)
	}
	if p.Refusing() || p.Addr() != addr {
		t.Fatalf("after SetRefusing(false): Refusing = %v, Addr = %s (was %s)", p.Refusing(), p.Addr(), addr)
	}
	roundTrip(t, dial(t, addr), []byte("accepted again"))

	// Timed: refused at once, accepted again on the same port after d.
	const d = 150 * time.Millisecond
	start := time.Now()
	p.Refuse(d)
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial right after Refuse: %v, want ECONNREFUSED", err)
	}
	var c3 net.Conn
	for {
		// Retrying a refused dial is what a client does; the pause only
		// paces the attempts.
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			c3 = conn
			break
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial during Refuse: %v", err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the proxy did not listen again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer c3.Close()
	if waited := time.Since(start); waited < d {
		t.Fatalf("accepted again after %v, before the %v refusal ended", waited, d)
	}
	roundTrip(t, c3, []byte("after the timed refusal"))
	roundTrip(t, c, []byte("first connection survived both refusals"))
	if err := p.ReopenErr(); err != nil {
		t.Fatal(err)
	}

	// SetRefusing(false) ends a long timed refusal early; Refuse(0) refuses
	// until SetRefusing(false).
	p.Refuse(time.Hour)
	if err := p.SetRefusing(false); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, dial(t, addr), []byte("early"))
	p.Refuse(0)
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Refuse(0): %v, want ECONNREFUSED", err)
	}
	if err := p.SetRefusing(false); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, dial(t, addr), []byte("again"))
	p.Refuse(time.Hour) // left pending: Close must end its goroutine
}

// TestTargetDown: a connection whose target cannot be dialed is reset and
// does not linger.
func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	_ = ln.Close()
	p := newProxy(t, target)
	// The reset may come before the client's connect returns.
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read from a proxied connection to a dead target: %v, want ECONNRESET", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial: %v, want success or ECONNRESET", err)
	}
	if err := p.WaitConns(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
}

func TestNewBadTarget(t *testing.T) {
	if _, err := New("no-port"); err == nil {
		t.Fatal("New accepted a target without a port")
	}
}

// TestClose: Close ends every goroutine of the proxy, whatever state it is
// in (stalled connections, delayed chunks, a pending Refuse, a dial in
// progress), closes the proxied connections, stops listening, and every
// method is harmless afterwards.
func TestClose(t *testing.T) {
	snapshot := goleak.IgnoreCurrent()
	e := newEcho(t)
	p, err := New(e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for i := range 3 {
		c := dial(t, p.Addr())
		clients = append(clients, c)
		roundTrip(t, c, []byte{byte(i)})
	}
	p.SetDelay(time.Hour)
	if _, err := clients[0].Write([]byte("delayed")); err != nil {
		t.Fatal(err)
	}
	p.SetDelay(0)
	p.Stall(true)
	if _, err := clients[1].Write([]byte("stalled")); err != nil {
		t.Fatal(err)
	}
	p.Refuse(time.Hour)

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("a proxied connection stayed open after Close")
		}
		_ = c.Close()
	}
	if _, err := net.Dial("tcp", p.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Close: %v, want ECONNREFUSED", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	p.Cut()
	p.Stall(false)
	p.Refuse(time.Millisecond)
	if err := p.SetRefusing(false); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetRefusing after Close: %v, want ErrClosed", err)
	}
	if err := p.WaitConns(ctxT(t), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitConns(1) after Close: %v, want ErrClosed", err)
	}
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns after Close = %d", n)
	}
	e.Close()
	goleak.VerifyNone(t, snapshot)
}

// TestConcurrentControls: under the race detector, every control may be
// changed at any time while data flows, and as long as nothing is cut each
// stream arrives complete and in order.
func TestConcurrentControls(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.Addr())
	stop := make(chan struct{})
	var chaos sync.WaitGroup
	chaos.Add(1)
	go func() {
		defer chaos.Done()
		splits := []int{0, 16, 512, 4096}
		for i := 0; ; i++ {
			select {
			case <-stop:
				p.Stall(false)
				p.SetDelay(0)
				p.SetSplit(0)
				return
			default:
			}
			p.Stall(i%3 == 0)
			p.SetDelay(time.Duration(i%4) * 200 * time.Microsecond)
			p.SetSplit(splits[i%len(splits)])
			_ = p.Conns()
			_, _ = p.Stats()
			time.Sleep(time.Millisecond) // pacing, not synchronisation
		}
	}()
	var wg sync.WaitGroup
	for i := range 4 {
		c := dial(t, p.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := exchange(c, pattern(uint64(10+i), 64<<10), 1500); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	chaos.Wait()
	p.Cut()
}
