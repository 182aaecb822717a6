package loadtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/testkit/loadtest"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
	"github.com/astro-sts/astro-sts/internal/testkit/vaulttest"
)

// The servers of the benchmarks, each in its own process so that the CPU
// time of each is its own: the broker (`astro-sts serve`, built from this
// module), the Astro API emulator (`astro-sts emulator`), a real Vault dev
// server, and the floor server (this test binary, re-run as a bare
// net/http server). The OIDC issuer and the load generator run here.

const (
	audience = "https://sts.example.com"
	// vaultRole is the Vault JWT role bound to the claims of the broker's
	// one rule, deploy-main.
	vaultRole = "deploy-main"
	// floorEnv makes this test binary the floor server (see TestMain).
	floorEnv = "ASTRO_STS_LOADTEST_FLOOR_SERVER"
)

// benchPolicy is the broker's policy: one rule, bound to the claims the
// Vault role is bound to (see configureVault).
func benchPolicy(workspaceID string) string {
	return fmt.Sprintf(`rules:
  - name: deploy-main
    match:
      repository_id: "123456"
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
      job_workflow_ref: {glob: "acme/dags/.github/workflows/*.yml@refs/heads/main"}
    grant:
      workspaces: [%s]
      max_role: WORKSPACE_OPERATOR
      max_ttl: 30m
`, workspaceID)
}

// allowedClaims are those of a push to main of acme/dags, which the rule
// and the Vault role trust; the other claims are GitHub's (issuer
// defaults).
func allowedClaims() issuer.Claims {
	return issuer.Claims{
		Audience:       audience,
		Repository:     "acme/dags",
		RepositoryID:   "123456",
		Ref:            "refs/heads/main",
		EventName:      "push",
		JobWorkflowRef: "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
		Workflow:       "deploy",
		RunID:          "987",
		RunAttempt:     "1",
	}
}

// deniedClaims differ only in repository_id: the token verifies, and no
// rule (no role) trusts it.
func deniedClaims() issuer.Claims {
	c := allowedClaims()
	c.RepositoryID = "666"
	return c
}

// emulatorInfo is the first stdout line of `astro-sts emulator`.
type emulatorInfo struct {
	URL               string   `json:"url"`
	OrganizationID    string   `json:"organization_id"`
	OrganizationToken string   `json:"organization_token"`
	WorkspaceIDs      []string `json:"workspace_ids"`
}

// brokerProc is a broker child process and the audit records it printed.
type brokerProc struct {
	*loadtest.Process
	url    string
	allows atomic.Int64 // audit records with outcome allow
	denies atomic.Int64 // ... deny
}

// upstream is an emulator child process.
type upstream struct {
	*loadtest.Process
	info emulatorInfo
}

// stack is everything the benchmarks share; built once, on first use, and
// stopped by TestMain.
type stack struct {
	dir       string
	bin       string
	iss       *issuer.Issuer
	emu       *upstream
	brk       *brokerProc
	floor     *loadtest.Process
	floorURL  string
	vault     *vaulttest.Server // nil without a Vault binary
	vaultDeny int               // the status Vault answers a login it refuses

	slowOnce sync.Once
	slowEmu  *upstream
	slowBrk  *brokerProc
	slowErr  error
}

var (
	shared     *stack
	sharedErr  error
	sharedOnce sync.Once
)

// getStack returns the shared stack, starting it on first use.
func getStack(b *testing.B) *stack {
	b.Helper()
	if _, err := loadtest.ProcessCPU(os.Getpid()); err != nil {
		b.Skip(err) // not Linux
	}
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared, sharedErr = startStack(ctx)
	})
	if sharedErr != nil {
		b.Fatal(sharedErr)
	}
	return shared
}

func startStack(ctx context.Context) (_ *stack, err error) {
	s := &stack{}
	// The half-started stack is closed through its own variable: the
	// result is nil on error.
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.dir, err = os.MkdirTemp("", "astro-sts-loadtest-"); err != nil {
		return nil, err
	}
	s.bin = filepath.Join(s.dir, "astro-sts")
	if err := goBuild(s.bin, "github.com/astro-sts/astro-sts/cmd/astro-sts"); err != nil {
		return nil, err
	}
	if s.iss, err = issuer.Start(issuer.Config{}); err != nil {
		return nil, err
	}
	if s.emu, err = s.startEmulator(ctx); err != nil {
		return nil, err
	}
	if s.brk, err = s.startBroker(ctx, "fast", s.emu); err != nil {
		return nil, err
	}
	if err := s.startFloor(ctx); err != nil {
		return nil, err
	}
	if err := s.startVault(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// slow returns a broker whose upstream answers after 200 ms, started on
// first use.
func (s *stack) slow(b *testing.B, latency time.Duration) *brokerProc {
	b.Helper()
	s.slowOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if s.slowEmu, s.slowErr = s.startEmulator(ctx, "--latency", latency.String()); s.slowErr != nil {
			return
		}
		// The bound on Astro calls in flight (ASTRO_STS_ASTRO_CONCURRENCY,
		// 16 by default) would cap this run at 16 / 200 ms = 80 exchanges
		// a second, by design; raised to the load, the run measures what
		// it is for: that nothing else serializes the upstream calls.
		s.slowBrk, s.slowErr = s.startBroker(ctx, "slow", s.slowEmu, fmt.Sprintf("ASTRO_STS_ASTRO_CONCURRENCY=%d", slowConcurrency))
	})
	if s.slowErr != nil {
		b.Fatal(s.slowErr)
	}
	return s.slowBrk
}

func (s *stack) close() {
	if s.slowBrk != nil {
		_ = s.slowBrk.Close()
	}
	if s.slowEmu != nil {
		_ = s.slowEmu.Close()
	}
	if s.brk != nil {
		_ = s.brk.Close()
	}
	if s.emu != nil {
		_ = s.emu.Close()
	}
	if s.floor != nil {
		_ = s.floor.Close()
	}
	if s.vault != nil {
		_ = s.vault.Close()
	}
	if s.iss != nil {
		_ = s.iss.Close()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// goBuild builds pkg into out with the go tool of the running toolchain.
func goBuild(out, pkg string) error {
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gotool); err != nil {
		if gotool, err = exec.LookPath("go"); err != nil {
			return errors.New("no go tool in GOROOT/bin or on PATH")
		}
	}
	cmd := exec.Command(gotool, "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// childEnv is the environment of a child: nothing of ours but PATH and
// HOME, so that a developer's settings cannot change what is measured.
func childEnv(kv ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, kv...)
}

// startEmulator runs `astro-sts emulator` with two Workspaces and flags
// (--latency, --error-rate).
func (s *stack) startEmulator(ctx context.Context, flags ...string) (*upstream, error) {
	cmd := exec.Command(s.bin, append([]string{"emulator", "--addr", "127.0.0.1:0", "--workspaces", "2"}, flags...)...)
	cmd.Env = childEnv()
	u := &upstream{}
	p, err := loadtest.Start(ctx, cmd, func(line []byte) bool {
		return json.Unmarshal(line, &u.info) == nil && u.info.URL != ""
	}, nil)
	if err != nil {
		return nil, err
	}
	u.Process = p
	return u, nil
}

// startBroker runs `astro-sts serve` against emu, configured as in
// production but for the reaper, which would list every token of the
// emulator during the runs (it is not part of an exchange; its interval is
// set past the end of the benchmarks). extra adds settings after those.
func (s *stack) startBroker(ctx context.Context, name string, emu *upstream, extra ...string) (*brokerProc, error) {
	policyFile := filepath.Join(s.dir, name+"-policy.yaml")
	if err := os.WriteFile(policyFile, []byte(benchPolicy(emu.info.WorkspaceIDs[0])), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(s.bin, "serve")
	cmd.Env = childEnv(append([]string{
		"ASTRO_STS_ADDR=127.0.0.1:0",
		"ASTRO_STS_AUDIENCE=" + audience,
		"ASTRO_STS_ISSUERS=" + s.iss.URL(),
		"ASTRO_STS_POLICY_FILE=" + policyFile,
		"ASTRO_API_URL=" + emu.info.URL,
		"ASTRO_ORGANIZATION_ID=" + emu.info.OrganizationID,
		"ASTRO_ORGANIZATION_TOKEN=" + emu.info.OrganizationToken,
		"ASTRO_STS_REAP_INTERVAL=23h", // out of the way; 24h and more are refused
		"ASTRO_STS_REPLAY_CACHE_SIZE=1000000",
	}, extra...)...)
	bp := &brokerProc{}
	p, err := loadtest.Start(ctx, cmd, func(line []byte) bool {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "broker listening" {
			bp.url = "http://" + l.Addr
			return true
		}
		return false
	}, bp.count)
	if err != nil {
		return nil, err
	}
	bp.Process = p
	// The first token of an issuer makes the broker fetch its discovery
	// document and keys: do it now, not in a measured run. A new broker
	// also refuses (503 restarted) the tokens issued up to the future-iat
	// leeway after it started, since its replay memory begins then: wait
	// until a fresh token gets the answer a measured run expects, or every
	// measured answer could be that refusal.
	for _, w := range []struct {
		claims issuer.Claims
		status int
	}{{allowedClaims(), http.StatusOK}, {deniedClaims(), http.StatusForbidden}} {
		var last loadtest.Result
		var lastErr error
		if !testwait.For(time.Minute, func() bool {
			tok, err := s.iss.Mint(w.claims)
			if err != nil {
				lastErr = err
				return true
			}
			last, lastErr = loadtest.Load{Requests: []loadtest.Request{exchangeRequest(bp.url, tok)}}.Run(ctx)
			return lastErr != nil || last.Statuses[w.status] == 1
		}) {
			return nil, fmt.Errorf("broker %s: a fresh token never got %d: %v", name, w.status, last.Statuses)
		}
		if lastErr != nil {
			return nil, lastErr
		}
	}
	return bp, nil
}

// count tallies the broker's audit records of exchanges, so a benchmark
// can check that every request left one.
func (bp *brokerProc) count(line []byte) {
	var l struct {
		Audit   string `json:"audit"`
		Outcome string `json:"outcome"`
	}
	if json.Unmarshal(line, &l) != nil || l.Audit != "exchange" {
		return
	}
	switch l.Outcome {
	case "allow":
		bp.allows.Add(1)
	case "deny":
		bp.denies.Add(1)
	}
}

// waitAudit waits until the broker has printed want records of the
// outcome in all (they reach us through a pipe, after the answers), and
// fails if it printed fewer, or more: one audit record per decision.
func (bp *brokerProc) waitAudit(b *testing.B, counter *atomic.Int64, want int64) {
	b.Helper()
	testwait.For(30*time.Second, func() bool { return counter.Load() >= want })
	if got := counter.Load(); got != want {
		b.Fatalf("broker printed %d audit records, want %d", got, want)
	}
}

func (s *stack) startFloor(ctx context.Context) error {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = childEnv(floorEnv + "=1")
	p, err := loadtest.Start(ctx, cmd, func(line []byte) bool {
		addr, ok := strings.CutPrefix(string(line), "listening on ")
		if ok {
			s.floorURL = "http://" + addr
		}
		return ok
	}, nil)
	if err != nil {
		return err
	}
	s.floor = p
	return nil
}

// serveFloor is the floor server: net/http and nothing else, answering a
// POST the way the broker answers a denied exchange (the same headers and
// a JSON error body of the same size), so that the broker's CPU per
// request can be read against what any Go HTTP server spends.
func serveFloor() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	body := []byte(`{"error":"denied","message":"no policy rule allows this identity"}` + "\n")
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			_, _ = io.Copy(io.Discard, r.Body)
			h := w.Header()
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write(body)
		}),
	}
	fmt.Println("listening on " + ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startVault starts the shared real Vault and configures JWT auth at
// auth/jwt to trust the issuer's key, with one role bound to the claims
// the broker's rule matches. Without a Vault binary the Vault half of the
// benchmarks is skipped (an error under CI=true).
func (s *stack) startVault(ctx context.Context) error {
	v, err := vaulttest.Shared()
	if err != nil || v == nil {
		return err
	}
	s.vault = v
	c := v.Client()
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "jwt", &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
		return fmt.Errorf("vault: enable jwt auth: %w", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/jwt/config", map[string]any{
		"jwt_validation_pubkeys": []string{string(s.iss.PublicKeyPEM())},
		"bound_issuer":           s.iss.URL(),
	}); err != nil {
		return fmt.Errorf("vault: jwt config: %w", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/jwt/role/"+vaultRole, map[string]any{
		"role_type":         "jwt",
		"user_claim":        "sub",
		"bound_audiences":   []string{audience},
		"bound_claims_type": "glob",
		"bound_claims": map[string]any{
			"repository_id":    "123456",
			"ref":              "refs/heads/main",
			"event_name":       []string{"push", "workflow_dispatch"},
			"job_workflow_ref": "acme/dags/.github/workflows/*.yml@refs/heads/main",
		},
		"token_policies": []string{"default"},
		"token_ttl":      "30m",
	}); err != nil {
		return fmt.Errorf("vault: jwt role: %w", err)
	}
	// Learn how Vault refuses, and check it accepts.
	for _, tc := range []struct {
		claims issuer.Claims
		allow  bool
	}{{allowedClaims(), true}, {deniedClaims(), false}} {
		tok, err := s.iss.Mint(tc.claims)
		if err != nil {
			return err
		}
		res, err := (loadtest.Load{Requests: []loadtest.Request{vaultLogin(v.Addr, tok)}}).Run(ctx)
		if err != nil {
			return err
		}
		switch {
		case res.Answered != 1:
			return fmt.Errorf("vault: login: %v", res.Err)
		case tc.allow && res.Statuses[http.StatusOK] != 1:
			return fmt.Errorf("vault: a login the role should accept got %v", res.Statuses)
		case !tc.allow:
			for st := range res.Statuses {
				if st < 400 || st > 499 {
					return fmt.Errorf("vault: a login the role should refuse got %d", st)
				}
				s.vaultDeny = st
			}
		}
	}
	return nil
}

func exchangeRequest(brokerURL, tok string) loadtest.Request {
	return loadtest.Request{
		Method: http.MethodPost,
		URL:    brokerURL + "/v1/exchange",
		Header: http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}},
		Body:   []byte(`{}`),
	}
}

func vaultLogin(addr, tok string) loadtest.Request {
	body, _ := json.Marshal(map[string]string{"role": vaultRole, "jwt": tok})
	return loadtest.Request{
		Method: http.MethodPost,
		URL:    addr + "/v1/auth/jwt/login",
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   body,
	}
}

// mintN signs n tokens for c, on every core: signing is GitHub's work,
// done before a run.
func (s *stack) mintN(b *testing.B, c issuer.Claims, n int) []string {
	b.Helper()
	toks := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				tok, err := s.iss.Mint(c)
				if err != nil {
					failed.Store(err)
					return
				}
				toks[i] = tok
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return toks
}
