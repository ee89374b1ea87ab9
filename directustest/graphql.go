package directustest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// The /graphql endpoint (docs/PROTOCOL.md §13): graphql-ws over the
// graphql-transport-ws subprotocol, enabled by Options.GraphQL. It shares
// the data, the accounts and the event fan-out with /websocket: every
// write's dispatch (events.go) also reaches the GraphQL subscriptions, in
// the same order, under the same lock.

const (
	gqlSubprotocol = "graphql-transport-ws"
	// gqlInitTimeout is graphql-ws's connectionInitWaitTimeout, which
	// Directus leaves at its default.
	gqlInitTimeout = 3 * time.Second
	gqlOutbound    = 4096 // frames queued for one socket before it is cut
)

// gqlConn is one /graphql socket. Its fields after mu are guarded by
// Server.mu.
type gqlConn struct {
	s      *Server
	id     int64
	ws     *websocket.Conn
	raw    net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	out    chan gqlOut
	gone   chan struct{}

	ident     identity
	authed    bool // an identity was set (upgrade token or connection_init)
	initSeen  bool
	acked     bool
	closing   bool
	subs      map[string]*gqlSub
	initTimer *stimer
}

type gqlSub struct {
	id  string
	sel *gqlSelection
}

// gqlState is the Server's part for /graphql, guarded by Server.mu.
type gqlState struct {
	conns map[*gqlConn]struct{}
}

func (s *Server) handleGraphQLUpgrade(w http.ResponseWriter, r *http.Request, epoch uint64) {
	raw, _ := r.Context().Value(netConnKey).(net.Conn)
	if raw == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !s.originAllowed(origin, r) {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	tok := r.URL.Query().Get("access_token")
	var ident identity
	authed := false
	if tok != "" {
		id, err := s.accounts.identityFromAccessToken(tok, time.Now())
		if err != nil {
			s.logf("graphql upgrade refused: bad access_token")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ident, authed = id, true
	} else if s.opts.GraphQLAuthMode == AuthStrict {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true,
		Subprotocols:       []string{gqlSubprotocol},
		CompressionMode:    websocket.CompressionDisabled,
		OnPingReceived:     func(context.Context, []byte) bool { return false },
	})
	if err != nil {
		return
	}
	if ws.Subprotocol() != gqlSubprotocol {
		_ = ws.Close(4406, "Subprotocol not acceptable")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &gqlConn{s: s, ws: ws, raw: raw, ctx: ctx, cancel: cancel, out: make(chan gqlOut, gqlOutbound),
		gone: make(chan struct{}), ident: ident, authed: authed, subs: map[string]*gqlSub{}}
	s.mu.Lock()
	if s.closed || s.epoch != epoch {
		s.mu.Unlock()
		cancel()
		closeRaw(raw)
		_ = ws.CloseNow()
		return
	}
	if s.gql.conns == nil {
		s.gql.conns = map[*gqlConn]struct{}{}
	}
	s.nextConnID++
	c.id = s.nextConnID
	s.gql.conns[c] = struct{}{}
	c.initTimer = s.afterFuncLocked(gqlInitTimeout, func(t *stimer) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c.initTimer != t || c.acked {
			return
		}
		c.closeLocked(4408, "Connection initialisation timeout")
	})
	s.handlers.Add(1)
	go c.writeLoop()
	s.mu.Unlock()
	s.logf("graphql connection open", "conn", c.id, "authenticated", authed)
	c.readLoop()
}

func (c *gqlConn) readLoop() {
	c.ws.SetReadLimit(maxInboundMessage)
	for {
		_, data, err := c.ws.Read(c.ctx)
		if err != nil {
			break
		}
		c.s.hookFrame(c.id, true, data)
		c.handle(data)
	}
	s := c.s
	s.mu.Lock()
	delete(s.gql.conns, c)
	c.closing = true
	c.subs = map[string]*gqlSub{}
	c.initTimer.stop()
	c.initTimer = nil
	s.mu.Unlock()
	c.cancel()
	<-c.gone
}

// sendLocked queues a frame; a socket that fell gqlOutbound frames behind
// is cut, as a slow consumer.
func (c *gqlConn) sendLocked(b []byte) {
	if c.closing {
		return
	}
	select {
	case c.out <- gqlOut{data: b}:
	default:
		c.s.logError("graphql socket too slow; cut", "conn", c.id)
		c.closing = true
		c.cancel()
		closeRaw(c.raw)
	}
}

// gqlOut is one queued frame, or the close frame when code is set.
type gqlOut struct {
	data   []byte
	code   websocket.StatusCode
	reason string
}

// closeLocked sends the queued frames, then a close frame with code.
func (c *gqlConn) closeLocked(code websocket.StatusCode, reason string) {
	if c.closing {
		return
	}
	c.closing = true
	c.subs = map[string]*gqlSub{}
	select {
	case c.out <- gqlOut{code: code, reason: reason}:
	default:
		c.cancel()
	}
}

func (c *gqlConn) writeLoop() {
	defer c.s.handlers.Done()
	defer close(c.gone)
	for {
		select {
		case <-c.ctx.Done():
			_ = c.ws.CloseNow()
			return
		case it := <-c.out:
			if it.code != 0 {
				// Close waits for the peer's close frame at most 5 s.
				_ = c.ws.Close(it.code, it.reason)
				c.cancel()
				return
			}
			if err := c.ws.Write(c.ctx, websocket.MessageText, it.data); err != nil {
				c.cancel()
				_ = c.ws.CloseNow()
				return
			}
			c.s.hookFrame(c.id, false, it.data)
		}
	}
}

func (c *gqlConn) abort() {
	c.cancel()
	closeRaw(c.raw)
}

type gqlIn struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

func (c *gqlConn) handle(data []byte) {
	var m gqlIn
	if err := json.Unmarshal(data, &m); err != nil || m.Type == "" {
		// Directus's own parser answers an unparsable message.
		c.s.mu.Lock()
		c.sendLocked(frameError("server", "INVALID_PAYLOAD", "Unable to parse the incoming message.", uidVal{}))
		c.s.mu.Unlock()
		return
	}
	if m.Type == "connection_init" {
		c.handleInit(m.Payload)
		return
	}
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	mode := s.opts.GraphQLAuthMode
	if mode == AuthHandshake && !c.authed {
		// Directus checks the identity before graphql-ws sees the
		// frame: anything before a successful connection_init is
		// Forbidden, a ping included.
		c.closeLocked(4403, "Forbidden")
		return
	}
	switch m.Type {
	case "ping":
		c.sendLocked([]byte(`{"type":"pong"}`))
	case "pong":
	case "subscribe":
		if !c.acked {
			c.closeLocked(4401, "Unauthorized")
			return
		}
		c.subscribeLocked(m.ID, m.Payload)
	case "complete":
		delete(c.subs, m.ID)
	default:
		c.closeLocked(4400, "Invalid message received")
	}
}

func (c *gqlConn) handleInit(payload json.RawMessage) {
	var p struct {
		AccessToken *string `json:"access_token"`
	}
	_ = json.Unmarshal(payload, &p)
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.initSeen {
		c.closeLocked(4429, "Too many initialisation requests")
		return
	}
	if s.opts.GraphQLAuthMode == AuthHandshake {
		if p.AccessToken == nil {
			c.closeLocked(4403, "Forbidden")
			return
		}
		id, err := s.accounts.identityFromAccessToken(*p.AccessToken, time.Now())
		if err != nil || id.user == nil {
			// Directus answers with its own auth error frame and lets
			// graphql-ws time the socket out (4408) for want of an init.
			c.sendLocked(frameError("auth", "AUTH_FAILED", "Authentication failed.", uidVal{}))
			return
		}
		c.ident, c.authed = id, true
	}
	c.initSeen, c.acked = true, true
	c.initTimer.stop()
	c.initTimer = nil
	c.sendLocked([]byte(`{"type":"connection_ack"}`))
}

func (c *gqlConn) subscribeLocked(id string, payload json.RawMessage) {
	if _, dup := c.subs[id]; dup {
		c.closeLocked(4409, "Subscriber for "+id+" already exists")
		return
	}
	var p struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(payload, &p) != nil {
		c.closeLocked(4400, "Invalid message received")
		return
	}
	sel, msg := parseGQLSubscription(p.Query)
	if msg == "" {
		msg = c.s.validateGQLLocked(c.ident.user, sel)
	}
	if msg != "" {
		b, _ := json.Marshal(map[string]any{"id": id, "type": "error", "payload": []map[string]string{{"message": msg}}})
		c.sendLocked(b)
		return
	}
	c.subs[id] = &gqlSub{id: id, sel: sel}
}

// validateGQLLocked is the schema side of validation: the subscription
// field exists only for collections the identity may read, and data's
// fields only for the collection's fields.
func (s *Server) validateGQLLocked(u *user, sel *gqlSelection) string {
	coll, ok := s.colls[sel.collection]
	if !ok || !s.allowedLocked(u, sel.collection, permRead) {
		return `Cannot query field "` + sel.collection + `_mutated" on type "Subscription".`
	}
	for _, f := range sel.fields {
		if _, ok := coll.fieldIdx[f]; !ok {
			return `Cannot query field "` + f + `" on type "` + sel.collection + `".`
		}
	}
	return ""
}

// dispatchGraphQLLocked sends one next per key to every GraphQL
// subscription of c's collection (§13.4): deletes with data null, creates
// and updates re-read with the subscriber's identity, and nothing at all
// for a row the subscriber cannot read.
func (s *Server) dispatchGraphQLLocked(c *collection, action string, events [][]any) {
	if len(s.gql.conns) == 0 {
		return
	}
	conns := make([]*gqlConn, 0, len(s.gql.conns))
	for gc := range s.gql.conns {
		conns = append(conns, gc)
	}
	sortGQLConns(conns)
	for _, gc := range conns {
		if gc.closing || !gc.acked {
			continue
		}
		ids := make([]string, 0, len(gc.subs))
		for id := range gc.subs {
			ids = append(ids, id)
		}
		sortStrings(ids)
		for _, keys := range events {
			for _, k := range keys {
				for _, id := range ids {
					sub := gc.subs[id]
					if sub.sel.collection != c.name || (sub.sel.event != "" && sub.sel.event != action) {
						continue
					}
					var data []byte
					if action != "delete" {
						if !s.allowedLocked(gc.ident.user, c.name, permRead) {
							continue
						}
						r, ok := c.lookup(k)
						if !ok {
							continue
						}
						data = gqlRow(c, r, sub.sel.fields)
					}
					gc.sendLocked(gqlNext(id, sub.sel, c.name, gqlKey(k), action, data))
				}
			}
		}
	}
}

func gqlKey(k any) string {
	switch v := k.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return jsNumber(v)
	}
	b := appendValue(nil, k)
	return string(b)
}

// gqlRow encodes the selected fields of r, the primary key as a GraphQL ID
// (a string).
func gqlRow(c *collection, r *row, fields []string) []byte {
	b := []byte{'{'}
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f)
		b = append(b, ':')
		v := r.vals[c.fieldIdx[f]]
		if f == c.pk {
			b = appendJSONString(b, gqlKey(r.key))
			continue
		}
		b = appendValue(b, v)
	}
	return append(b, '}')
}

func gqlNext(id string, sel *gqlSelection, collection, key, action string, data []byte) []byte {
	b := []byte(`{"id":`)
	b = appendJSONString(b, id)
	b = append(b, `,"type":"next","payload":{"data":{`...)
	b = appendJSONString(b, collection+"_mutated")
	b = append(b, ":{"...)
	for i, f := range sel.outer {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f)
		b = append(b, ':')
		switch f {
		case "key":
			b = appendJSONString(b, key)
		case "event":
			b = appendJSONString(b, action)
		case "data":
			if data == nil {
				b = append(b, "null"...)
			} else {
				b = append(b, data...)
			}
		}
	}
	return append(b, "}}}}"...)
}

// dropGraphQL cuts every /graphql socket (Stop, Restart, DropConnections,
// Close) and waits until they are gone.
func (s *Server) dropGraphQL() {
	s.mu.Lock()
	conns := make([]*gqlConn, 0, len(s.gql.conns))
	for gc := range s.gql.conns {
		conns = append(conns, gc)
	}
	s.mu.Unlock()
	for _, gc := range conns {
		gc.abort()
	}
	for _, gc := range conns {
		<-gc.gone
	}
}

func sortGQLConns(cs []*gqlConn) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].id < cs[j-1].id; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

func sortStrings(ss []string) {
	for i := 1; i < len(ss); i++ {
		for j := i; j > 0 && (len(ss[j]) < len(ss[j-1]) || len(ss[j]) == len(ss[j-1]) && ss[j] < ss[j-1]); j-- {
			ss[j], ss[j-1] = ss[j-1], ss[j]
		}
	}
}
