package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Wire records the WebSocket frames a client sends and receives, by
// wrapping the TCP connections of its HTTP client: the library runs
// unchanged (its conn.Config.HTTPClient is the only hook), and the test can
// check what went over the wire, for example that the manager never sends
// an unsubscribe without uid, or that the server sent no frame for a
// subscription. Only data frames are recorded, whole messages, in the order
// each direction carried them.
type Wire struct {
	tr *http.Transport

	mu      sync.Mutex
	frames  []WireFrame
	changed chan struct{} // closed and replaced on every new frame
	dials   int
}

// WireFrame is one recorded message.
type WireFrame struct {
	Conn int  // which TCP connection of the client, from 1
	Out  bool // sent by the client
	Data []byte
	At   time.Time

	// Decoded head of the JSON object, when it is one.
	Type   string
	Event  string
	UID    string // the uid's text, for a JSON string or number
	HasUID bool
	Item   json.RawMessage
	Coll   string
}

func newWire() *Wire {
	w := &Wire{changed: make(chan struct{})}
	d := &net.Dialer{Timeout: 10 * time.Second}
	w.tr = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			w.mu.Lock()
			w.dials++
			id := w.dials
			w.mu.Unlock()
			return &tapConn{Conn: c, in: &frameParser{w: w, conn: id}, out: &frameParser{w: w, conn: id, out: true}}, nil
		},
	}
	return w
}

// HTTPClient is the client to give conn.Config.HTTPClient.
func (w *Wire) HTTPClient() *http.Client { return &http.Client{Transport: w.tr} }

// Close releases the transport.
func (w *Wire) Close() { w.tr.CloseIdleConnections() }

// Len returns the number of frames recorded so far.
func (w *Wire) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.frames)
}

// Frames returns the frames recorded from index from on.
func (w *Wire) Frames(from int) []WireFrame {
	w.mu.Lock()
	defer w.mu.Unlock()
	if from > len(w.frames) {
		from = len(w.frames)
	}
	return append([]WireFrame(nil), w.frames[from:]...)
}

// Wait waits for a frame at index from or later for which match holds and
// returns its index.
func (w *Wire) Wait(ctx context.Context, from int, match func(WireFrame) bool) (int, error) {
	for {
		w.mu.Lock()
		for i := from; i < len(w.frames); i++ {
			if match(w.frames[i]) {
				w.mu.Unlock()
				return i, nil
			}
		}
		from = max(from, len(w.frames))
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	}
}

// dump appends the frames to a file under $CONFORMANCE_WIRE_DIR, named
// after the test, to compare what two targets sent in the same scenario.
func (w *Wire) dump(t testing.TB) {
	dir := os.Getenv("CONFORMANCE_WIRE_DIR")
	if dir == "" {
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	f, err := os.OpenFile(filepath.Join(dir, name+".txt"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Logf("CONFORMANCE_WIRE_DIR: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "### client\n")
	for _, fr := range w.Frames(0) {
		dir := "<<<"
		if fr.Out {
			dir = ">>>"
		}
		fmt.Fprintf(f, "%d %s %s\n", fr.Conn, dir, fr.Data)
	}
}

func (w *Wire) add(f WireFrame) {
	var head struct {
		Type       string          `json:"type"`
		Event      string          `json:"event"`
		UID        json.RawMessage `json:"uid"`
		Item       json.RawMessage `json:"item"`
		Collection string          `json:"collection"`
	}
	if json.Unmarshal(f.Data, &head) == nil {
		f.Type, f.Event, f.Item, f.Coll = head.Type, head.Event, head.Item, head.Collection
		if len(head.UID) > 0 && string(head.UID) != "null" {
			f.HasUID = true
			var s string
			if json.Unmarshal(head.UID, &s) == nil {
				f.UID = s
			} else {
				f.UID = string(head.UID)
			}
		}
	}
	w.mu.Lock()
	w.frames = append(w.frames, f)
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// tapConn feeds the bytes a connection carries to one parser per direction.
// Reads happen on one goroutine and writes are serialised by the WebSocket
// library, so each parser is used by one goroutine at a time.
type tapConn struct {
	net.Conn
	in, out *frameParser
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.in.feed(p[:n])
	}
	return n, err
}

// Write records before writing: a reply must not be recorded before the
// frame that caused it.
func (c *tapConn) Write(p []byte) (int, error) {
	c.out.feed(p)
	return c.Conn.Write(p)
}

// frameParser decodes one direction of a WebSocket connection: the HTTP
// head first, then RFC 6455 frames (masked from the client).
type frameParser struct {
	w    *Wire
	conn int
	out  bool

	buf    []byte
	head   bool // the HTTP head has been skipped
	dead   bool // not a WebSocket stream (an upgrade refused)
	msg    []byte
	inMsg  bool
	opcode byte
}

func (p *frameParser) feed(b []byte) {
	if p.dead {
		return
	}
	p.buf = append(p.buf, b...)
	if !p.head {
		i := bytes.Index(p.buf, []byte("\r\n\r\n"))
		if i < 0 {
			return
		}
		if !p.out && !bytes.HasPrefix(p.buf, []byte("HTTP/1.1 101")) {
			p.dead = true
			return
		}
		p.head = true
		p.buf = p.buf[i+4:]
	}
	for {
		n := p.frame()
		if n == 0 {
			break
		}
		p.buf = p.buf[n:]
	}
	p.buf = append([]byte(nil), p.buf...)
}

// frame decodes one complete frame at the start of buf and returns its
// length, or 0 when buf holds no complete frame.
func (p *frameParser) frame() int {
	b := p.buf
	if len(b) < 2 {
		return 0
	}
	fin, op := b[0]&0x80 != 0, b[0]&0x0f
	masked := b[1]&0x80 != 0
	n := uint64(b[1] & 0x7f)
	off := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return 0
		}
		n, off = uint64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return 0
		}
		n, off = binary.BigEndian.Uint64(b[2:10]), 10
	}
	var key []byte
	if masked {
		if len(b) < off+4 {
			return 0
		}
		key = b[off : off+4]
		off += 4
	}
	if uint64(len(b)-off) < n {
		return 0
	}
	payload := append([]byte(nil), b[off:off+int(n)]...)
	for i := range payload {
		if key != nil {
			payload[i] ^= key[i%4]
		}
	}
	switch {
	case op >= 8: // control frames: close, ping, pong
	case op == 0 && p.inMsg:
		p.msg = append(p.msg, payload...)
	case op == 1 || op == 2:
		p.msg, p.opcode, p.inMsg = payload, op, true
	}
	if op < 8 && fin && p.inMsg {
		p.w.add(WireFrame{Conn: p.conn, Out: p.out, Data: p.msg, At: time.Now()})
		p.msg, p.inMsg = nil, false
	}
	return off + int(n)
}
