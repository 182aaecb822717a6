package imagetest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/testkit/dockertest"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// trustedRepoID is the repository the world's policy trusts.
const trustedRepoID = "123456"

// world is what a broker container talks to, on 127.0.0.1: the local OIDC
// issuer standing in for GitHub, and the Astro emulator behind a [gate];
// plus the policy and Organization token files the broker mounts.
type world struct {
	iss      *issuer.Issuer
	emu      *emulator.Emulator
	emuURL   string // the API base, .../v1
	gate     *gate
	settings containerSettings

	policyDir, secretDir string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{}
	esrv := httptest.NewServer(g.wrap(emu.Handler()))
	t.Cleanup(esrv.Close)
	iss, err := issuer.Start(issuer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })

	w := &world{iss: iss, emu: emu, emuURL: esrv.URL + "/v1", gate: g, settings: loadSettings(t)}
	// The container's user (65532) is not the test's: the directories and
	// files it reads must be world-readable, as a Secret or ConfigMap
	// volume's are by default.
	base := t.TempDir()
	w.policyDir, w.secretDir = filepath.Join(base, "policy"), filepath.Join(base, "secret")
	for _, d := range []string{base, w.policyDir, w.secretDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	policy := fmt.Sprintf(`rules:
  - name: deploy-main
    match:
      repository_id: %q
      ref: refs/heads/main
      event_name: [push]
    grant:
      workspaces: [%s]
      max_role: WORKSPACE_AUTHOR
      max_ttl: 30m
`, trustedRepoID, emu.WorkspaceIDs()[0])
	for p, content := range map[string]string{
		filepath.Join(w.policyDir, path.Base(w.settings.PolicyFile)):            policy,
		filepath.Join(w.secretDir, path.Base(w.settings.OrganizationTokenFile)): emu.OrganizationToken() + "\n",
	} {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// claims are a push to main of the trusted repository in a run of its own;
// untrusted ones come from a repository no rule names.
func (w *world) claims(audience string, trusted bool, run int) issuer.Claims {
	c := issuer.DefaultClaims()
	c.Audience = audience
	c.RunID = fmt.Sprint(7000 + run)
	c.RunAttempt = "1"
	if !trusted {
		c.Repository, c.RepositoryID = "acme/website", "654321"
		c.Subject = "repo:acme/website:ref:refs/heads/main"
		c.JobWorkflowRef = "acme/website/.github/workflows/deploy.yml@refs/heads/main"
		c.WorkflowRef = c.JobWorkflowRef
	}
	return c
}

// brokerContainer is `astro-sts serve` running from the image.
type brokerContainer struct {
	name string
	url  string // http://127.0.0.1:PORT, also the audience
}

// startBroker runs the broker from the image with the lockdown of
// deploy/broker-container.yaml, its policy directory and token file
// mounted read-only where the Kubernetes manifests mount them, on the
// host network at a free loopback port, and waits until /healthz answers.
// The environment is passed as the runner and kubelet do: names on the
// command line (-e NAME), values in the client's environment.
func (w *world) startBroker(t *testing.T, e *dockertest.Engine, img dockertest.Image) *brokerContainer {
	t.Helper()
	addr := freeAddr(t)
	b := &brokerContainer{name: containerName("astro-sts-imagetest-broker"), url: "http://" + addr}
	env := map[string]string{
		"ASTRO_STS_ADDR":                addr,
		"ASTRO_STS_AUDIENCE":            b.url,
		"ASTRO_STS_ISSUERS":             w.iss.URL(),
		"ASTRO_STS_POLICY_FILE":         w.settings.PolicyFile,
		"ASTRO_API_URL":                 w.emuURL,
		"ASTRO_ORGANIZATION_ID":         w.emu.OrganizationID(),
		"ASTRO_ORGANIZATION_TOKEN_FILE": w.settings.OrganizationTokenFile,
		"ASTRO_STS_LOG_LEVEL":           "debug",
	}
	args := []string{"run", "--detach", "--name", b.name, "--label", containerLabel, "--network", "host"}
	args = append(args, w.settings.dockerFlags()...)
	args = append(args,
		"-v", w.policyDir+":"+w.settings.PolicyDir+":ro",
		"-v", w.secretDir+":"+path.Dir(w.settings.OrganizationTokenFile)+":ro",
	)
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	vals := make([]string, 0, len(env))
	for _, k := range names {
		args = append(args, "-e", k)
		vals = append(vals, k+"="+env[k])
	}
	args = append(args, img.Ref, "serve")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() { removeContainer(t, e, b.name) })
	if out, err := e.Command(ctx, vals, args...).CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	if err := b.waitHealthy(ctx, e); err != nil {
		t.Fatal(err)
	}
	return b
}

// waitHealthy polls /healthz until it answers 200, the container exits,
// or ctx ends.
func (b *brokerContainer) waitHealthy(ctx context.Context, e *dockertest.Engine) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	var gone error
	err := testwait.ForContext(ctx, func() bool {
		if status, _, err := get(ctx, hc, b.url+"/healthz"); err == nil && status == http.StatusOK {
			return true
		}
		if state, err := e.Output(ctx, "inspect", "--format", "{{.State.Status}}", b.name); err != nil || state == "exited" || state == "dead" {
			gone = fmt.Errorf("broker container %s is %q (%v) before it was healthy", b.name, state, err)
			return true
		}
		return false
	})
	switch {
	case gone != nil:
		return gone
	case err != nil:
		return fmt.Errorf("broker container %s not healthy: %w", b.name, err)
	}
	return nil
}

// get returns a GET's status and body.
func get(ctx context.Context, hc *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), err
}

// gate holds the next token creation the emulator receives until the test
// releases it, so that a test can have an exchange in flight at a moment
// of its choosing without guessing at timings.
type gate struct {
	mu      sync.Mutex
	arrived chan struct{} // closed when the held request arrives
	release chan struct{} // closed to let it through
}

// hold arms the gate for the next POST .../tokens.
func (g *gate) hold() (arrived <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.arrived, g.release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	rel := g.release
	return g.arrived, func() { once.Do(func() { close(rel) }) }
}

func (g *gate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tokens") {
			g.mu.Lock()
			arrived, release := g.arrived, g.release
			g.arrived, g.release = nil, nil
			g.mu.Unlock()
			if arrived != nil {
				close(arrived)
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}
