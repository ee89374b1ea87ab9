package harness

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/e41af43e/directus-realtime/handlers"
)

// RecordUID is the uid of the recorder's subscription; every recorded frame
// ends with it, and the replay server swaps it for the client's own.
const RecordUID = "rec"

var recordSuffix = []byte(`,"uid":"` + RecordUID + `"}`)

// Recording is what one subscription to every row of posts received: its
// init and then every event frame, verbatim.
type Recording struct {
	Init   []byte
	Events [][]byte
}

// Recorder is a raw WebSocket client that records the frames of one
// subscription to every row of posts, answering the heartbeat meanwhile.
type Recorder struct {
	ws   *websocket.Conn
	done chan struct{}
	err  error

	mu   sync.Mutex
	rec  Recording
	n    int
	more chan struct{} // closed at the next recorded frame, if WaitCount waits
}

// StartRecorder connects to url (http://host:port) with a static token and
// returns once the init was recorded.
func StartRecorder(ctx context.Context, url, token string) (*Recorder, error) {
	wsURL := "ws" + strings.TrimPrefix(strings.TrimRight(url, "/"), "http") + "/websocket"
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	r := &Recorder{ws: ws, done: make(chan struct{})}
	for _, msg := range []string{
		`{"type":"auth","access_token":` + strconv.Quote(token) + `}`,
		`{"type":"subscribe","collection":"posts","query":{"limit":-1},"uid":"` + RecordUID + `"}`,
	} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			ws.CloseNow()
			return nil, err
		}
	}
	for r.rec.Init == nil {
		_, b, err := ws.Read(ctx)
		if err != nil {
			ws.CloseNow()
			return nil, err
		}
		if bytes.HasPrefix(b, []byte(`{"type":"subscription","event":"init"`)) && bytes.HasSuffix(b, recordSuffix) {
			r.rec.Init = b
		}
	}
	go r.loop()
	return r, nil
}

func (r *Recorder) loop() {
	defer close(r.done)
	for {
		_, b, err := r.ws.Read(context.Background())
		if err != nil {
			r.err = err
			return
		}
		switch {
		case bytes.HasPrefix(b, []byte(`{"type":"ping"`)):
			_ = r.ws.Write(context.Background(), websocket.MessageText, []byte(`{"type":"pong"}`))
		case bytes.HasPrefix(b, []byte(`{"type":"subscription"`)) && bytes.HasSuffix(b, recordSuffix):
			r.mu.Lock()
			r.rec.Events = append(r.rec.Events, b)
			r.n++
			if r.more != nil {
				close(r.more)
				r.more = nil
			}
			r.mu.Unlock()
		}
	}
}

// WaitCount waits until n event frames are recorded, the connection ends or
// ctx is done.
func (r *Recorder) WaitCount(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		if r.n >= n {
			r.mu.Unlock()
			return nil
		}
		if r.more == nil {
			r.more = make(chan struct{})
		}
		more := r.more
		r.mu.Unlock()
		select {
		case <-more:
		case <-r.done:
			r.mu.Lock()
			got := r.n
			r.mu.Unlock()
			if got >= n {
				return nil
			}
			return fmt.Errorf("recorder: connection ended after %d of %d frames: %v", got, n, r.err)
		case <-ctx.Done():
			return fmt.Errorf("recorder: %d of %d frames: %w", r.Count(), n, ctx.Err())
		}
	}
}

// Count is the number of event frames recorded.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Stop disconnects and returns the recording.
func (r *Recorder) Stop() Recording {
	r.ws.CloseNow()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec
}

// ReplayServer speaks just enough of the Directus realtime protocol to feed
// a recording to a client: the WebSocket upgrade on /websocket (no
// compression), "auth ok" to any auth frame, pong to ping, and for a
// subscribe the recorded init and then every recorded event frame, with the
// client's uid, written as fast as the socket takes them. The frames are
// framed once per subscribe, before the first byte is sent, so the server
// costs the client almost nothing: what is measured is the client.
type ReplayServer struct {
	// Pause, when set, is how long the first stream of a connection waits
	// between its init and its first event, so that a client can apply the
	// init (and measure itself) before the events come.
	Pause time.Duration

	rec Recording
	ln  net.Listener
	wg  sync.WaitGroup

	mu         sync.Mutex
	conns      map[net.Conn]struct{}
	subscribes int
	closed     bool
}

// NewReplayServer listens on a free loopback port.
func NewReplayServer(rec Recording) (*ReplayServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &ReplayServer{rec: rec, ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// URL is the server's base URL (http://host:port).
func (s *ReplayServer) URL() string { return "http://" + s.ln.Addr().String() }

// Subscribes is the number of subscribe frames served so far. More than one
// per client means the client resubscribed, which a replay cannot serve
// faithfully (it has no state to read a fresh init from).
func (s *ReplayServer) Subscribes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribes
}

// Close stops the server and cuts every connection.
func (s *ReplayServer) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	s.wg.Wait()
}

func (s *ReplayServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// rconn is one client connection: frames are written under mu, whole.
type rconn struct {
	c  net.Conn
	mu sync.Mutex
	wg sync.WaitGroup

	// The stream being written; only the connection's reader goroutine
	// touches these.
	uid  string
	stop chan struct{}
	done chan struct{}
	sent *atomic.Int64 // event frames fully handed to the socket
	pos  int           // where the next stream starts (events already sent)
}

func (rc *rconn) write(b []byte) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	_, err := rc.c.Write(b)
	return err
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func (s *ReplayServer) serve(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if req.URL.Path != "/websocket" || key == "" || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		_, _ = io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	_, err = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n")
	if err != nil {
		return
	}
	rc := &rconn{c: c}
	defer rc.wg.Wait()
	var msg []byte
	for {
		op, payload, fin, err := readClientFrame(br)
		if err != nil {
			_ = c.Close() // ends a stream still being written
			return
		}
		switch op {
		case 0x8: // close
			_ = rc.write(serverFrame(0x8, payload))
			return
		case 0x9: // ping
			_ = rc.write(serverFrame(0xA, payload))
			continue
		case 0xA: // pong
			continue
		case 0x1, 0x2:
			msg = append(msg[:0], payload...)
		case 0x0:
			msg = append(msg, payload...)
		}
		if fin {
			s.handle(rc, msg)
		}
	}
}

func (s *ReplayServer) handle(rc *rconn, msg []byte) {
	var m struct {
		Type string          `json:"type"`
		UID  json.RawMessage `json:"uid"`
	}
	if json.Unmarshal(msg, &m) != nil {
		return
	}
	withUID := func(prefix string) []byte {
		if m.UID == nil {
			return []byte(prefix + "}")
		}
		return []byte(prefix + `,"uid":` + string(m.UID) + "}")
	}
	switch m.Type {
	case "auth":
		_ = rc.write(serverFrame(0x1, withUID(`{"type":"auth","status":"ok"`)))
	case "ping":
		_ = rc.write(serverFrame(0x1, withUID(`{"type":"pong"`)))
	case "unsubscribe":
		if rc.stop != nil && (m.UID == nil || stringUID(m.UID) == rc.uid) {
			rc.stopStream()
		}
		_ = rc.write(serverFrame(0x1, withUID(`{"type":"subscription","event":"unsubscribe"`)))
	case "subscribe":
		uid := stringUID(m.UID)
		if rc.stop != nil {
			rc.stopStream() // a resubscribe replaces the stream
		}
		s.mu.Lock()
		s.subscribes++
		s.mu.Unlock()
		s.startStream(rc, uid)
	}
}

// stringUID is String(uid), as Directus stores a subscription's uid.
func stringUID(raw json.RawMessage) string {
	uid := string(raw)
	if len(uid) > 0 && uid[0] == '"' {
		_ = json.Unmarshal(raw, &uid)
	}
	return uid
}

// stopStream stops the current stream at a frame boundary and remembers how
// many event frames went out: a later subscribe continues from there.
func (rc *rconn) stopStream() {
	close(rc.stop)
	<-rc.done
	rc.pos += int(rc.sent.Load())
	rc.stop, rc.done, rc.sent, rc.uid = nil, nil, nil, ""
}

// startStream writes, for uid, an init of the rows as they stand after the
// events already sent (the recorded init on the first subscribe) and every
// later event frame. A resubscribe thus gets what a real server would send:
// the current state, then the events that follow.
func (s *ReplayServer) startStream(rc *rconn, uid string) {
	init, pause := s.rec.Init, s.Pause
	if rc.pos > 0 {
		init, pause = stateAt(s.rec, rc.pos), 0
	}
	stream, bounds := frameStream(init, s.rec.Events[rc.pos:], uid)
	stop, done, sent := make(chan struct{}), make(chan struct{}), new(atomic.Int64)
	rc.uid, rc.stop, rc.done, rc.sent = uid, stop, done, sent
	rc.wg.Add(1)
	go func() {
		defer rc.wg.Done()
		defer close(done)
		// Written in chunks of whole frames, so that replies to other
		// requests can go out between them and a stop cuts at a frame
		// boundary.
		start := 0
		for i, end := range bounds {
			if end-start < 64<<10 && i != 0 && i != len(bounds)-1 {
				continue
			}
			select {
			case <-stop:
				return
			default:
			}
			if rc.write(stream[start:end]) != nil {
				return
			}
			// bounds[0] ends the init; event frames follow.
			sent.Store(int64(i))
			start = end
			if i == 0 && pause > 0 {
				select {
				case <-stop:
					return
				case <-time.After(pause):
				}
			}
		}
	}()
}

// frameStream builds the WebSocket frames of init and events for uid, and
// the offsets where each frame ends.
func frameStream(init []byte, events [][]byte, uid string) ([]byte, []int) {
	suffix := []byte(`,"uid":` + strconv.Quote(uid) + `}`)
	size := len(init) + 16
	for _, e := range events {
		size += len(e) + 16
	}
	out := make([]byte, 0, size)
	bounds := make([]int, 0, len(events)+1)
	for i := -1; i < len(events); i++ {
		f := init
		if i >= 0 {
			f = events[i]
		}
		body := f[:len(f)-len(recordSuffix)]
		out = appendHeader(out, 0x1, len(body)+len(suffix))
		out = append(out, body...)
		out = append(out, suffix...)
		bounds = append(bounds, len(out))
	}
	return out, bounds
}

// stateAt returns an init frame (with the recording's uid) holding the rows
// of the recorded init after the first n recorded events, sorted by key.
func stateAt(rec Recording, n int) []byte {
	var f struct {
		Event string            `json:"event"`
		Data  []json.RawMessage `json:"data"`
	}
	rows := map[handlers.Key]json.RawMessage{}
	var idOf struct {
		ID json.RawMessage `json:"id"`
	}
	put := func(raw json.RawMessage) {
		idOf.ID = nil
		if json.Unmarshal(raw, &idOf) == nil {
			if k, err := handlers.NormalizeKey(idOf.ID); err == nil {
				rows[k] = raw
			}
		}
	}
	for i := -1; i < n; i++ {
		b := rec.Init
		if i >= 0 {
			b = rec.Events[i]
		}
		f.Event, f.Data = "", nil
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		for _, d := range f.Data {
			if f.Event == "delete" {
				if k, err := handlers.NormalizeKey(d); err == nil {
					delete(rows, k)
				}
				continue
			}
			put(d)
		}
	}
	keys := make([]handlers.Key, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b handlers.Key) int {
		x, errx := strconv.ParseInt(string(a), 10, 64)
		y, erry := strconv.ParseInt(string(b), 10, 64)
		if errx == nil && erry == nil {
			return cmp.Compare(x, y)
		}
		return strings.Compare(string(a), string(b))
	})
	out := []byte(`{"type":"subscription","event":"init","data":[`)
	for i, k := range keys {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, rows[k]...)
	}
	out = append(out, ']')
	return append(out, recordSuffix...)
}

func appendHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		return append(b, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

func serverFrame(op byte, payload []byte) []byte {
	return append(appendHeader(make([]byte, 0, len(payload)+10), op, len(payload)), payload...)
}

var errFrameTooLarge = errors.New("client frame too large")

// readClientFrame reads one (masked) client frame.
func readClientFrame(br *bufio.Reader) (op byte, payload []byte, fin bool, err error) {
	var h [2]byte
	if _, err = io.ReadFull(br, h[:]); err != nil {
		return
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0F
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(br, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(br, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 16<<20 {
		return 0, nil, false, errFrameTooLarge
	}
	var mask [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err = io.ReadFull(br, mask[:]); err != nil {
			return
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(br, payload); err != nil {
		return
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
	}
	return op, payload, fin, nil
}

// String describes the recording.
func (r Recording) String() string {
	size := len(r.Init)
	for _, e := range r.Events {
		size += len(e)
	}
	return fmt.Sprintf("init %d bytes + %d event frames, %.1f MiB in all", len(r.Init), len(r.Events),
		float64(size)/(1<<20))
}
