package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server is an [Emulator] listening on a TCP address, started by [Start]
// or [StartAt]. Close or Shutdown it when done: both wait for the serving
// goroutine, so a test that closes its server leaks nothing.
type Server struct {
	// URL is the API base, http://HOST:PORT/v1, ready for astro.Config.BaseURL.
	URL string
	// Addr is the address actually listened on (useful with port 0).
	Addr string

	srv      *http.Server
	done     chan error
	stopOnce sync.Once
	stopErr  error

	connMu sync.Mutex
	fresh  map[net.Conn]bool // connections accepted that never sent a request
}

// trackConn remembers connections in StateNew. Shutdown waits for those
// up to 5 seconds (a client's transport often dials a spare connection it
// never uses), so they are closed when shutdown starts, as httptest does.
func (s *Server) trackConn(c net.Conn, st http.ConnState) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if st == http.StateNew {
		s.fresh[c] = true
	} else {
		delete(s.fresh, c)
	}
}

func (s *Server) closeFresh() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	for c := range s.fresh {
		c.Close()
		delete(s.fresh, c)
	}
}

// Start serves a new emulator on 127.0.0.1 at a free port.
func Start(cfg Config) (*Server, *Emulator, error) {
	return StartAt("127.0.0.1:0", cfg)
}

// StartAt serves a new emulator on addr. It does not refuse non-loopback
// addresses; the emulator subcommand does, because the emulator hands out
// an owner token to anyone who can reach it.
func StartAt(addr string, cfg Config) (*Server, *Emulator, error) {
	e, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("emulator: listen: %w", err)
	}
	s := &Server{
		URL:  "http://" + ln.Addr().String() + "/v1",
		Addr: ln.Addr().String(),
		srv: &http.Server{
			Handler:           e.Handler(),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30*time.Second + cfg.Latency + cfg.CreateDelay,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    64 << 10,
		},
		done:  make(chan error, 1),
		fresh: map[net.Conn]bool{},
	}
	s.srv.ConnState = s.trackConn
	// Shutdown closes the listener first, then runs this.
	s.srv.RegisterOnShutdown(s.closeFresh)
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, e, nil
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done, then closes what is left. It returns the serving
// goroutine's error, if any. Later calls return the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		err := s.srv.Shutdown(ctx)
		if err != nil {
			err = errors.Join(err, s.srv.Close())
		}
		s.stopErr = errors.Join(err, <-s.done)
	})
	return s.stopErr
}

// Close shuts the server down, giving in-flight requests 5 seconds.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}
