// Package vaulttest runs a real Vault dev server for tests: the binary built
// from Vault's own Go module by tools/vault/build.sh, started as
// `vault server -dev` on a free loopback port and stopped by [Server.Close].
//
// A dev server keeps everything in memory, is unsealed, and mounts a KV v2
// engine at secret/. Starting one takes a few seconds, so a test package
// starts one in TestMain and shares it.
//
// The package imports no testing code: each test package decides what a
// missing binary means, with [Binary] and [Required]: skip locally, fail in
// CI.
package vaulttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/astro-sts/astro-sts/internal/testkit/pdeathsig"
	"github.com/astro-sts/astro-sts/internal/testkit/servertest"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

// Version is the Vault release tools/vault builds; it names the cached
// binary.
const Version = "v1.21.0"

// EnvBinary names the variable holding the Vault binary's path; .ci/run sets
// it to what tools/vault/build.sh printed.
const EnvBinary = "ASTRO_STS_VAULT_BIN"

// BuildHint is what to tell a developer whose machine has no Vault binary.
const BuildHint = "no Vault binary: run tools/vault/build.sh (about 10 minutes, once) or set " + EnvBinary

// startTimeout bounds Start when ctx has no deadline.
const startTimeout = 60 * time.Second

// Binary returns the Vault binary to use: $ASTRO_STS_VAULT_BIN, else the
// cache path tools/vault/build.sh writes
// (${ASTRO_STS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/astro-sts}/vault-v1.21.0).
// ok is false when that file does not exist.
func Binary() (path string, ok bool) {
	return servertest.Binary(EnvBinary, func() string {
		dir := os.Getenv("ASTRO_STS_CACHE")
		if dir == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return ""
				}
				base = filepath.Join(home, ".cache")
			}
			dir = filepath.Join(base, "astro-sts")
		}
		return filepath.Join(dir, "vault-"+Version)
	})
}

// Required reports whether Vault-backed tests must run rather than skip:
// true in CI (CI=true), where a missing binary is a broken pipeline, not a
// developer's laptop without a 10-minute build.
func Required() bool { return servertest.Required() }

// Server is a running Vault dev server.
type Server struct {
	// Addr is the server's address, "http://127.0.0.1:PORT".
	Addr string
	// RootToken is the dev server's root token, random per server.
	RootToken string

	cmd    *exec.Cmd
	dir    string
	out    *syncbuf.Buffer
	exited chan struct{}
	client *vaultapi.Client
	once   sync.Once
}

// Shared starts the one Vault dev server a test package shares (from its
// TestMain: starting one per test would cost seconds each). With no Vault
// binary it returns nil and no error, so the package's Vault tests can skip
// with [BuildHint]; when [Required] (CI), a missing binary is an error
// instead, so CI never passes by skipping them.
func Shared() (*Server, error) {
	bin, ok := Binary()
	return servertest.Shared(bin, ok, BuildHint, time.Minute, Start)
}

// PackageServer is a test package's one Vault dev server, started by its
// TestMain ([servertest.Package.Main]) since one per test would cost
// seconds each; [servertest.Package.Need] returns it, or skips (locally)
// or fails (in CI) the test with [BuildHint] when there is none.
func PackageServer() *servertest.Package[Server, *Server] {
	return &servertest.Package[Server, *Server]{Shared: Shared, Hint: BuildHint}
}

// Start runs `bin server -dev` on a free loopback port and returns once
// /v1/sys/health answers. HOME points into a temporary directory and
// -dev-no-store-token is given, so the server never writes ~/.vault-token.
// The process environment is not passed on: a developer's VAULT_* variables
// cannot leak into the server.
func Start(ctx context.Context, bin string) (*Server, error) {
	ctx, cancel := servertest.StartContext(ctx, startTimeout)
	defer cancel()
	// Picking a port and handing it over leaves a small window in which
	// another process may take it: try a few times.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start(ctx, bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, bin string) (*Server, error) {
	port, err := servertest.FreePort()
	if err != nil {
		return nil, err
	}
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vaulttest-")
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	s := &Server{
		Addr:      "http://" + listen,
		RootToken: token,
		dir:       dir,
		out:       &syncbuf.Buffer{Limit: 64 << 10},
		exited:    make(chan struct{}),
	}
	// Not exec.CommandContext: ctx bounds the start, not the server's life.
	cmd := exec.Command(bin, "server", "-dev",
		"-dev-listen-address="+listen,
		"-dev-root-token-id="+token,
		"-dev-no-store-token",
	)
	cmd.Dir = dir
	cmd.Env = []string{
		"HOME=" + dir,
		"PATH=" + os.Getenv("PATH"),
		"VAULT_DEV_ROOT_TOKEN_ID=" + token,
		"VAULT_DISABLE_MLOCK=true",
	}
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	pdeathsig.Set(cmd)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("vaulttest: start %s: %w", bin, err)
	}
	s.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitHealthy(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	client, err := s.NewClient(token)
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	s.client = client
	return s, nil
}

// waitHealthy polls /v1/sys/health until the server is initialised, unsealed
// and active (HTTP 200).
func (s *Server) waitHealthy(ctx context.Context) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
	if err != nil {
		return err
	}
	done := servertest.WaitUp(ctx, s.exited, func() bool {
		resp, err := hc.Do(req.Clone(ctx))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	switch {
	case errors.Is(done, servertest.ErrExited):
		return fmt.Errorf("vaulttest: vault exited before it was healthy (%v); output:\n%s", s.cmd.ProcessState, s.Output())
	case done != nil:
		return fmt.Errorf("vaulttest: vault not healthy at %s: %w; output:\n%s", s.Addr, done, s.Output())
	}
	return nil
}

// Client returns a client for the server holding the root token. It is
// shared: do not change its token or namespace; use [Server.NewClient] for
// another identity.
func (s *Server) Client() *vaultapi.Client { return s.client }

// NewClient returns a new client for the server holding token ("" for
// none). It reads nothing from the process environment.
func (s *Server) NewClient(token string) (*vaultapi.Client, error) {
	c, err := vaultapi.NewClient(&vaultapi.Config{
		Address:    s.Addr,
		HttpClient: &http.Client{Timeout: 10 * time.Second},
		MaxRetries: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("vaulttest: client: %w", err)
	}
	c.ClearNamespace()
	c.SetHeaders(http.Header{vaultapi.RequestHeaderName: []string{"true"}})
	if token == "" {
		c.ClearToken()
	} else {
		c.SetToken(token)
	}
	return c, nil
}

// TokenWithPolicy writes hcl as the policy name (unless hcl is empty, for a
// policy that already exists, such as "default") and returns a new token,
// valid for ten minutes, holding only that policy: what a test needs to act
// as a least-privileged client rather than as root.
func (s *Server) TokenWithPolicy(ctx context.Context, name, hcl string) (string, error) {
	if hcl != "" {
		if err := s.client.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
			return "", fmt.Errorf("vaulttest: put policy %s: %w", name, err)
		}
	}
	sec, err := s.client.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{Policies: []string{name}, TTL: "10m"})
	if err != nil {
		return "", fmt.Errorf("vaulttest: create token: %w", err)
	}
	return sec.Auth.ClientToken, nil
}

// PID is the server process's id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Output is what the server printed so far (capped at 64 KiB), with the
// root token redacted.
func (s *Server) Output() string {
	return strings.ReplaceAll(s.out.String(), s.RootToken, "<root token>")
}

// Close stops the server (interrupt, then kill after 5 s), waits for the
// process to exit and removes its directory. It is safe to call twice.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(os.Interrupt)
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.exited
			}
		}
		err = os.RemoveAll(s.dir)
	})
	return err
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "root-" + hex.EncodeToString(b), nil
}
