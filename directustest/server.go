package directustest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Server is an in-process Directus realtime server. Create it with NewServer
// or NewTLSServer and stop it with Close. All methods are safe for
// concurrent use.
//
// The server is made of parts, each in its own files, so that a fidelity
// fix touches one of them:
//
//   - accounts (accounts.go, auth.go, jwt.go): users, tokens, permissions
//     and the WebSocket auth flow. Its state has its own leaf lock.
//   - REST (rest*.go): the HTTP routes, a stateless front end over the
//     data, the accounts and the events.
//   - subscriptions and events (subscribe.go, subregistry.go, events.go,
//     items.go, store.go, query.go, filter.go): the collections, the
//     subscriptions and the event frames a write produces.
//   - connections (upgrade.go, conn.go, messages.go, heartbeat.go): the
//     sockets, their frames and the heartbeat.
//   - faults (faults.go): the listener's lifecycle and the fault controls;
//     the outbound controls have their own lock, read by the writers.
//
// Lock order: Server.mu, then accounts.mu or faults.mu; neither of those
// ever calls back into the server.
type Server struct {
	opts     Options
	log      *slog.Logger
	useTLS   bool
	tlsCfg   *tls.Config
	cert     *x509.Certificate
	client   *http.Client
	addr     string // 127.0.0.1:PORT, fixed for the server's life
	loud     *Writer
	rest     http.Handler
	faults   faults    // outbound fault controls, own lock
	accounts *accounts // identities and permissions, own lock
	closeCh  chan struct{}

	rateLimitDrops atomic.Int64 // frames the rate limiter dropped

	// mu guards the fields below. One lock serves the data, the
	// subscriptions and the connections on purpose: a write, the events it
	// produces and the sockets they are queued on must be seen in one
	// order, as on Directus, where an event is emitted once its write is
	// done and goes to the subscriptions that exist at that moment.
	mu sync.Mutex

	// Lifecycle (faults.go, server.go).
	closed    bool
	ln        net.Listener
	httpSrv   *http.Server
	listening bool
	epoch     uint64        // incremented whenever all sockets are dropped (Stop, Restart, DropConnections, Close)
	hangCh    chan struct{} // closed when upgrades on a wrong path must be released
	reopen    *stimer       // pending reopen of RefuseConnections

	// Data (store.go, model.go).
	colls map[string]*collection

	// Connections (upgrade.go, conn.go, heartbeat.go).
	conns       map[int64]*wsConn
	nextConnID  int64
	pending     int // upgrades accepted but not yet registered (ConnLimit)
	connChanged chan struct{}
	hbPeriod    time.Duration
	hbTimer     *stimer

	// Subscriptions (subregistry.go, subscribe.go, events.go).
	subs subRegistry

	// The /graphql endpoint's sockets and subscriptions (graphql.go).
	gql gqlState

	handlers sync.WaitGroup // HTTP handlers, WebSocket readers and writers
	serves   sync.WaitGroup // http.Server.Serve loops
	timers   sync.WaitGroup // pending and running timer callbacks
}

type ctxKey int

const netConnKey ctxKey = 0

// NewServer starts a server on 127.0.0.1 with a random port. It panics only
// if it cannot listen, like httptest.NewServer.
func NewServer(opts *Options) *Server { return newServer(opts, false) }

// NewTLSServer is NewServer over TLS with a self-signed certificate for
// 127.0.0.1; Client returns an http.Client that trusts it, and Certificate
// the certificate for a WebSocket dialer's tls.Config.
func NewTLSServer(opts *Options) *Server { return newServer(opts, true) }

func newServer(opts *Options, useTLS bool) *Server {
	o := opts.withDefaults()
	s := &Server{
		opts:        o,
		log:         o.Logger,
		useTLS:      useTLS,
		closeCh:     make(chan struct{}),
		hangCh:      make(chan struct{}),
		colls:       map[string]*collection{},
		accounts:    newAccounts(o.AccessTokenTTL),
		conns:       map[int64]*wsConn{},
		connChanged: make(chan struct{}),
		subs:        newSubRegistry(),
		hbPeriod:    o.HeartbeatPeriod,
	}
	s.faults.init()
	s.loud = &Writer{s: s, emit: true}
	s.rest = newRESTHandler(s)
	s.seed(o.Empty)
	s.client = &http.Client{Transport: &http.Transport{}}
	if useTLS {
		cert, leaf, err := selfSignedCert()
		if err != nil {
			panic(fmt.Sprintf("directustest: failed to create a certificate: %v", err))
		}
		s.cert = leaf
		s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		s.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("directustest: failed to listen on a port: %v", err))
	}
	s.addr = ln.Addr().String()
	s.mu.Lock()
	s.serveLocked(ln)
	s.mu.Unlock()
	return s
}

// URL returns the base URL of the REST API: "http://127.0.0.1:PORT", or
// https for a TLS server.
func (s *Server) URL() string {
	if s.useTLS {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// WebSocketURL returns the URL of the WebSocket endpoint, for example
// "ws://127.0.0.1:PORT/websocket" (wss for a TLS server).
func (s *Server) WebSocketURL() string {
	if s.useTLS {
		return "wss://" + s.addr + s.opts.Path
	}
	return "ws://" + s.addr + s.opts.Path
}

// Certificate returns the self-signed certificate of a TLS server, nil for a
// plain one.
func (s *Server) Certificate() *x509.Certificate { return s.cert }

// Client returns an http.Client for the server. For a TLS server it trusts
// the server's certificate. Close closes its idle connections.
func (s *Server) Client() *http.Client { return s.client }

// Close stops the listener, cuts every connection abruptly and waits until
// every goroutine of the server has exited. It is safe to call more than
// once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.closeCh)
	s.epoch++
	close(s.hangCh)
	s.reopen.stop()
	s.reopen = nil
	s.hbTimer.stop()
	s.hbTimer = nil
	srv := s.httpSrv
	s.httpSrv, s.ln, s.listening = nil, nil, false
	conns := s.connsInOrderLocked()
	for _, c := range conns {
		c.authTimer.stop()
		c.authTimer = nil
		c.expiryTimer.stop()
		c.expiryTimer = nil
	}
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	for _, c := range conns {
		c.abort()
	}
	s.dropGraphQL()
	s.handlers.Wait()
	s.serves.Wait()
	s.timers.Wait()
	if t, ok := s.client.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// serveLocked starts serving on ln (a plain TCP listener on s.addr).
func (s *Server) serveLocked(ln net.Listener) {
	if s.tlsCfg != nil {
		ln = tls.NewListener(ln, s.tlsCfg)
	}
	if s.httpSrv == nil {
		errLog := log.New(io.Discard, "", 0)
		if s.log != nil {
			errLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
		}
		s.httpSrv = &http.Server{
			Handler:  s,
			ErrorLog: errLog,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, netConnKey, c)
			},
			ReadHeaderTimeout: 30 * time.Second,
		}
	}
	s.ln = ln
	s.listening = true
	srv := s.httpSrv
	s.serves.Add(1)
	go func() {
		defer s.serves.Done()
		_ = srv.Serve(ln)
	}()
}

// listenLocked reopens the listener on the server's port. The port was
// ours a moment ago; if another process grabbed it the server stays down
// and the error is logged.
func (s *Server) listenLocked() bool {
	if s.closed || s.listening {
		return s.listening
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		ln, err = net.Listen("tcp", s.addr)
		if err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		s.logError("cannot listen again on the same port", "addr", s.addr, "err", err)
		return false
	}
	s.serveLocked(ln)
	return true
}

// ServeHTTP implements http.Handler: WebSocket upgrades on Options.Path,
// the REST subset everywhere else, and no answer at all for upgrades on any
// other path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.handlers.Add(1)
	epoch, hang := s.epoch, s.hangCh
	s.mu.Unlock()
	defer s.handlers.Done()

	if headerHasToken(r.Header, "Upgrade", "websocket") {
		if s.opts.GraphQL && r.URL.Path == s.opts.GraphQLPath {
			s.handleGraphQLUpgrade(w, r, epoch)
			return
		}
		if r.URL.Path != s.opts.Path {
			s.hang(w, r, hang)
			return
		}
		s.handleUpgrade(w, r, epoch)
		return
	}
	s.rest.ServeHTTP(w, r)
}

// hang never answers: Directus ignores upgrades on other paths (H13). The
// request is released when the client gives up, or on Stop/Close, and then
// the connection is closed without any response.
func (s *Server) hang(w http.ResponseWriter, r *http.Request, hang chan struct{}) {
	select {
	case <-r.Context().Done():
	case <-hang:
	}
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		_ = conn.Close()
	}
}

// stimer is a time.AfterFunc whose callback is accounted for in s.timers, so
// Close can wait for it.
type stimer struct {
	t *time.Timer
	s *Server
}

// afterFuncLocked schedules f after d. f receives its own timer so it can
// check that it is still the current one.
func (s *Server) afterFuncLocked(d time.Duration, f func(*stimer)) *stimer {
	st := &stimer{s: s}
	s.timers.Add(1)
	st.t = time.AfterFunc(d, func() {
		defer s.timers.Done()
		f(st)
	})
	return st
}

// stop cancels the timer if it has not fired. It is nil-safe.
func (st *stimer) stop() {
	if st != nil && st.t.Stop() {
		st.s.timers.Done()
	}
}

func (s *Server) connsInOrderLocked() []*wsConn {
	out := make([]*wsConn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (s *Server) logf(msg string, args ...any) {
	if s.log != nil {
		s.log.Debug("directustest: "+msg, args...)
	}
}

func (s *Server) logError(msg string, args ...any) {
	if s.log != nil {
		s.log.Error("directustest: "+msg, args...)
	}
}

// headerHasToken reports whether a comma-separated header contains token
// (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range splitComma(v) {
			if equalFold(part, token) {
				return true
			}
		}
	}
	return false
}
