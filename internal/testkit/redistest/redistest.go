// Package redistest runs a real redis-server for tests: the binary from
// Debian's redis-server package (or $ASTRO_STS_REDIS_BIN), started on a
// free loopback port with persistence off (`--save "" --appendonly no`) and
// stopped by [Server.Close].
//
// A server starts in milliseconds, but a test package still starts one in
// TestMain with [Shared] and shares it, as with internal/testkit/vaulttest. Tests
// that must see Redis go away and come back use [Server.Stop] and
// [Server.Restart], which keep the address.
//
// The package imports no testing code: each test package decides what a
// missing binary means, with [Binary] and [Required]: skip locally, fail in
// CI.
package redistest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/astro-sts/astro-sts/internal/testkit/pdeathsig"
	"github.com/astro-sts/astro-sts/internal/testkit/servertest"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

// EnvBinary names the variable holding the redis-server binary's path;
// without it, redis-server is looked up on PATH.
const EnvBinary = "ASTRO_STS_REDIS_BIN"

// InstallHint is what to tell a developer whose machine has no redis-server.
const InstallHint = "no redis-server: apt-get install -y redis-server (or set " + EnvBinary + ")"

// startTimeout bounds Start when ctx has no deadline.
const startTimeout = 30 * time.Second

// Binary returns the redis-server to use: $ASTRO_STS_REDIS_BIN, else
// redis-server on PATH, else Debian's /usr/bin/redis-server. ok is false
// when that file does not exist.
func Binary() (path string, ok bool) {
	return servertest.Binary(EnvBinary, func() string {
		if p, err := exec.LookPath("redis-server"); err == nil {
			return p
		}
		return "/usr/bin/redis-server"
	})
}

// Required reports whether Redis-backed tests must run rather than skip:
// true in CI (CI=true), where a missing server is a broken pipeline, not a
// developer's laptop without the package.
func Required() bool { return servertest.Required() }

// Options change how the server is started.
type Options struct {
	// Password, if set, is required of every client: as the default user's
	// password (requirepass), or as User's when User is set.
	Password string
	// User, if set, is an ACL user with Password and the rights of
	// UserRules, and the default user is disabled: a client must name the
	// user.
	User string
	// UserRules are User's ACL rules (as ACL SETUSER takes them); nil
	// means every key and command ("~*", "&*", "+@all").
	UserRules []string
	// TLS serves TLS only (no plain port), with a certificate for
	// 127.0.0.1 from a CA made for this server: see [Server.CAPool].
	TLS bool
}

// Server is a running (or stopped, see [Server.Stop]) redis-server.
type Server struct {
	// Addr is "127.0.0.1:PORT"; it stays the same across Stop and Restart.
	Addr string

	bin   string
	opts  Options
	dir   string
	ca    *x509.CertPool // TLS only
	caPEM []byte

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	exited chan struct{}
	closed bool
}

// Shared starts the one server a test package shares (from its TestMain).
// With no redis-server it returns nil and no error, so the package's Redis
// tests can skip with [InstallHint]; when [Required] (CI), a missing binary
// is an error instead, so CI never passes by skipping them.
func Shared() (*Server, error) {
	bin, ok := Binary()
	return servertest.Shared(bin, ok, InstallHint, startTimeout, func(ctx context.Context, bin string) (*Server, error) {
		return Start(ctx, bin, Options{})
	})
}

// PackageServer is a test package's one redis-server, started by its
// TestMain ([servertest.Package.Main]); [servertest.Package.Need] returns
// it emptied ([Server.Flush]), or skips (locally) or fails (in CI) the test
// with [InstallHint] when there is none.
func PackageServer() *servertest.Package[Server, *Server] {
	return &servertest.Package[Server, *Server]{
		Shared: Shared,
		Hint:   InstallHint,
		Reset:  func(s *Server) error { return s.Flush(context.Background()) },
	}
}

// Start runs bin on a free loopback port and returns once it answers PING.
// The process environment is not passed on, and the server's working
// directory is a temporary one removed by Close.
func Start(ctx context.Context, bin string, opts Options) (*Server, error) {
	ctx, cancel := servertest.StartContext(ctx, startTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, opts: opts, dir: dir}
	if opts.TLS {
		if err := s.writeCerts(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	// Picking a port and handing it over leaves a small window in which
	// another process may take it: try a few times.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := servertest.FreePort()
		if err != nil {
			lastErr = err
			break
		}
		s.Addr = "127.0.0.1:" + strconv.Itoa(port)
		if lastErr = s.start(ctx); lastErr == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// start runs the server on s.Addr and waits for it to answer.
func (s *Server) start(ctx context.Context) error {
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{
		"--port", port,
	}
	if s.opts.TLS {
		args = []string{
			"--port", "0",
			"--tls-port", port,
			"--tls-cert-file", filepath.Join(s.dir, "server.crt"),
			"--tls-key-file", filepath.Join(s.dir, "server.key"),
			"--tls-ca-cert-file", filepath.Join(s.dir, "ca.crt"),
			"--tls-auth-clients", "no",
		}
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--maxmemory-policy", "noeviction",
	)
	switch {
	case s.opts.User != "":
		rules := s.opts.UserRules
		if rules == nil {
			rules = []string{"~*", "&*", "+@all"}
		}
		args = append(args, "--user", "default", "off", "--user", s.opts.User, "on", ">"+s.opts.Password)
		args = append(args, rules...)
	case s.opts.Password != "":
		args = append(args, "--requirepass", s.opts.Password)
	}
	out := &syncbuf.Buffer{Limit: 64 << 10}
	exited := make(chan struct{})
	// Not exec.CommandContext: ctx bounds the start, not the server's life.
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"HOME=" + s.dir, "PATH=" + os.Getenv("PATH")}
	cmd.Stdout = out
	cmd.Stderr = out
	pdeathsig.Set(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start %s: %w", s.bin, err)
	}
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.out, s.exited = cmd, out, exited
	s.mu.Unlock()

	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return err
	}
	return nil
}

// waitReady pings the server until it answers, or it exits, or ctx ends.
func (s *Server) waitReady(ctx context.Context) error {
	c := s.Client()
	defer c.Close()
	var d net.Dialer
	var err error
	done := servertest.WaitUp(ctx, s.exited, func() bool {
		// A bare connect first: go-redis logs every refused dial, and a
		// server that is still starting refuses a few.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		conn, derr := d.DialContext(pctx, "tcp", s.Addr)
		if err = derr; err == nil {
			conn.Close()
			err = c.Ping(pctx).Err()
		}
		return err == nil
	})
	switch {
	case errors.Is(done, servertest.ErrExited):
		return fmt.Errorf("redistest: redis-server exited before it answered (%v); output:\n%s", s.cmd.ProcessState, s.Output())
	case done != nil:
		return fmt.Errorf("redistest: redis-server not answering at %s: %w (last: %v); output:\n%s", s.Addr, done, err, s.Output())
	}
	return nil
}

// URL is the redis:// (rediss:// with TLS) URL of the server, with the
// user and password of its [Options] when it has them.
func (s *Server) URL() string {
	scheme := "redis://"
	if s.opts.TLS {
		scheme = "rediss://"
	}
	switch {
	case s.opts.User != "":
		return scheme + s.opts.User + ":" + s.opts.Password + "@" + s.Addr
	case s.opts.Password != "":
		return scheme + ":" + s.opts.Password + "@" + s.Addr
	}
	return scheme + s.Addr
}

// CAPool holds the CA that signed a TLS server's certificate; nil without
// TLS.
func (s *Server) CAPool() *x509.CertPool { return s.ca }

// CAPEM is [Server.CAPool]'s certificate in PEM, for a CA file setting.
func (s *Server) CAPEM() []byte { return s.caPEM }

// Client returns a new client for the server, logged in as its [Options]
// say. The caller closes it.
func (s *Server) Client() *redis.Client {
	o := &redis.Options{
		Addr:        s.Addr,
		Username:    s.opts.User,
		Password:    s.opts.Password,
		DialTimeout: time.Second,
		MaxRetries:  -1,
	}
	if s.opts.TLS {
		o.TLSConfig = &tls.Config{RootCAs: s.ca, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	}
	return redis.NewClient(o)
}

// Flush empties the server, so that one test's keys do not reach the next.
func (s *Server) Flush(ctx context.Context) error {
	c := s.Client()
	defer c.Close()
	return c.FlushAll(ctx).Err()
}

// PID is the running server's process id (0 when stopped).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Output is what the current server process printed (capped at 64 KiB),
// with the password redacted.
func (s *Server) Output() string {
	s.mu.Lock()
	out := s.out
	s.mu.Unlock()
	if out == nil {
		return ""
	}
	text := out.String()
	if s.opts.Password != "" {
		text = strings.ReplaceAll(text, s.opts.Password, "<password>")
	}
	return text
}

// Stop kills the server (SIGKILL: an outage, not a shutdown) and waits for
// it to exit; its data is gone. [Server.Restart] starts it again on the
// same address.
func (s *Server) Stop() {
	s.stop()
}

func (s *Server) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart starts a stopped server again on the same address, empty.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	running, closed := s.cmd != nil, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return errors.New("redistest: restart after Close")
	case running:
		return errors.New("redistest: restart of a running server")
	}
	ctx, cancel := servertest.StartContext(ctx, startTimeout)
	defer cancel()
	// The port was ours a moment ago; the kernel may hold it briefly.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.start(ctx); err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Close stops the server and removes its directory. It is safe to call
// twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	return os.RemoveAll(s.dir)
}

// RandomPassword returns a password for [Options], random per call.
func RandomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
