// Package servertest is what the helpers that start a real server for tests
// (internal/testkit/redistest, internal/testkit/vaulttest) share: finding the server's
// binary, whether a missing one fails the run, a free port, and the TestMain that
// starts one server per test package.
package servertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// Required reports whether tests that need a real server must run rather
// than skip: true in CI (CI=true), where a missing binary is a broken
// pipeline, not a developer's machine without it.
func Required() bool {
	return os.Getenv("CI") == "true"
}

// Binary returns $env if set, else what find returns; ok is false when
// that is not an existing file.
func Binary(env string, find func() string) (path string, ok bool) {
	if path = os.Getenv(env); path == "" {
		path = find()
	}
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() {
		return path, false
	}
	return path, true
}

// Shared starts a package's one server with start, bin and ok being what
// the helper's Binary found. With no binary it returns the zero S (nil) and
// no error, so the package's tests can skip with hint; when [Required]
// (CI), a missing binary is an error instead, so CI never passes by
// skipping them.
func Shared[S any](bin string, ok bool, hint string, timeout time.Duration, start func(ctx context.Context, bin string) (S, error)) (S, error) {
	if !ok {
		var none S
		if Required() {
			return none, fmt.Errorf("CI=true but %s (looked for %s)", hint, bin)
		}
		return none, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return start(ctx, bin)
}

// FreePort is a loopback TCP port that was free a moment ago, for a server
// that is told its port on its command line.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartContext is ctx bounded by timeout when it has no deadline of its
// own, so that starting a server never waits forever.
func StartContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}

// Package is a test package's one server of a helper's kind
// (redistest.PackageServer, vaulttest.PackageServer): its TestMain calls
// [Package.Main], and each test that needs the server [Package.Need]. One
// server serves the whole package, since a per-test one would cost the
// start of a process (seconds for Vault) each time.
type Package[T any, S interface {
	*T
	Close() error
}] struct {
	// Shared starts the server: the helper's Shared, which returns no
	// server (nil) and no error without a binary outside CI.
	Shared func() (S, error)
	// Hint is what a test without the server says when it skips or fails.
	Hint string
	// Reset, if set, empties the server before each test that needs it, so
	// that one test's state does not reach the next.
	Reset func(S) error

	srv S
}

// Main is the test package's TestMain: it starts the package's one server
// with p.Shared, runs the tests, stops the server and exits with the
// tests' code. When Shared returns no server (no binary, outside CI),
// [Package.Need] skips the tests that need it.
func (p *Package[T, S]) Main(m *testing.M) {
	os.Exit(p.run(m))
}

func (p *Package[T, S]) run(m *testing.M) int {
	srv, err := p.Shared()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if srv != nil {
		defer srv.Close()
		p.srv = srv
	}
	return m.Run()
}

// Need returns the package's server, reset, for a test that uses it.
// Without one it skips the test with p.Hint, or fails it in CI, where
// [Package.Main] has already failed the run.
func (p *Package[T, S]) Need(t testing.TB) S {
	t.Helper()
	if p.srv == nil {
		if Required() {
			t.Fatal(p.Hint)
		}
		t.Skip(p.Hint)
	}
	if p.Reset != nil {
		if err := p.Reset(p.srv); err != nil {
			t.Fatal(err)
		}
	}
	return p.srv
}

// ErrExited is what [WaitUp] returns when the server's process ends
// before it is up.
var ErrExited = errors.New("the server exited before it was up")

// WaitUp polls up until it holds, the server's process ends (exited is
// closed: [ErrExited]) or ctx ends (ctx's error).
func WaitUp(ctx context.Context, exited <-chan struct{}, up func() bool) error {
	gone := false
	err := testwait.ForContext(ctx, func() bool {
		if up() {
			return true
		}
		select {
		case <-exited:
			gone = true
		default:
		}
		return gone
	})
	if gone {
		return ErrExited
	}
	return err
}
