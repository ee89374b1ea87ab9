// Package natstest runs an embedded NATS server with JetStream for tests,
// examples and benchmarks, so that nothing has to be installed. Only they
// import it: a program that imports package relay does not link
// nats-server.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an embedded NATS server with JetStream on a file store in its
// own temporary directory, so that a Restart keeps the streams.
type Server struct {
	dir  string
	port int
	srv  *server.Server
}

// Start runs a server on a free local port.
func Start() (*Server, error) {
	dir, err := os.MkdirTemp("", "natstest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, port: server.RANDOM_PORT}
	if err := s.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Restarts listen where the first run did, so clients reconnect.
	s.port = s.srv.Addr().(*net.TCPAddr).Port
	return s, nil
}

func (s *Server) start() error {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      s.port,
		JetStream: true,
		StoreDir:  s.dir,
		NoLog:     true,
		NoSigs:    true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errors.New("natstest: the server did not start within 10 s")
	}
	s.srv = srv
	return nil
}

// URL is the server's client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Restart shuts the server down (clients see a disconnect) and starts it
// again on the same port and store.
func (s *Server) Restart() error {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	return s.start()
}

// Close shuts the server down and removes its store.
func (s *Server) Close() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	os.RemoveAll(s.dir)
}
