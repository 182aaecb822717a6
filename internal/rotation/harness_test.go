package rotation_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/secret"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
	"github.com/astro-sts/astro-sts/internal/testkit/vaulttest"
)

const ghToken = "ghp_rotation-test-token-never-printed"

// writerPolicy is the Vault policy docs/sinks.md documents for a sink
// writing under secret/astro/; the tests log in with it, not as root.
const writerPolicy = `
path "secret/data/astro/*" {
  capabilities = ["create", "update", "read"]
}
path "secret/metadata/astro/*" {
  capabilities = ["create", "update", "read"]
}
`

// readOnlyPolicy can read the secret (so the preflight passes) but not
// write it: the failure then comes after the token has changed.
const readOnlyPolicy = `
path "secret/data/astro/*" { capabilities = ["read"] }
path "secret/metadata/astro/*" { capabilities = ["read"] }
`

// dataOnlyPolicy can write the secret's data but not its metadata: the
// value lands and the custom_metadata write after it is refused.
const dataOnlyPolicy = `
path "secret/data/astro/*" { capabilities = ["create", "update", "read"] }
path "secret/metadata/astro/*" { capabilities = ["read"] }
`

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func unique(name string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "-" + hex.EncodeToString(b)
}

// closedAddr is a loopback URL nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	return addr
}

// ghSecret is one GitHub secret of the default targets.
type ghSecret struct{ target, name string }

// The default GitHub targets, in policy order. The organization secret is
// in the middle, so that failing it is a failure midway.
var (
	ghRepo = ghSecret{githubtest.RepoTarget("acme/dags"), "ASTRO_API_TOKEN"}
	ghOrg  = ghSecret{githubtest.OrgTarget("acme"), "ASTRO_CI_TOKEN"}
	ghEnv  = ghSecret{githubtest.EnvTarget("acme/dags", "production"), "ASTRO_API_TOKEN"}
)

const githubTargetsYAML = `
    github:
      - {repository: acme/dags, secret: ASTRO_API_TOKEN}
      - {organization: acme, secret: ASTRO_CI_TOKEN, visibility: private}
      - {repository: acme/dags, environment: production, secret: ASTRO_API_TOKEN}`

// orgPutPath is the path of the organization secret's PUT (and not of its
// public key), for githubtest.Fail: the preflight passes, the write fails.
const orgPutPath = "/orgs/acme/actions/secrets/ASTRO_CI_TOKEN"

type vaultMode int

const (
	noVault     vaultMode = iota
	vaultWriter           // a token holding writerPolicy
	vaultReadOnly
	vaultDataOnly // data writes allowed, metadata writes denied
	vaultNoPolicy // a valid token holding only Vault's default policy
	vaultDown     // a closed port
)

type envOptions struct {
	strategy string // default replace
	vault    vaultMode
	noGitHub bool
	// managed is the managed token's create request; default a Workspace
	// token (WORKSPACE_OPERATOR on the first Workspace, 90 days).
	managed func(e *testEnv) astro.CreateTokenRequest
	// roles, when set, become the managed token's whole role set.
	roles func(e *testEnv) []astro.TokenRole
}

// testEnv is a rotation wired to an emulator, a GitHub secrets server and
// (optionally) the package's Vault, all over loopback HTTP.
type testEnv struct {
	t         *testing.T
	clock     *clock.Clock
	emu       *emulator.Emulator
	emuURL    string
	ac        *astro.Client
	gh        *githubtest.Server
	vault     *vaulttest.Server
	vaultPath string
	sinkCfg   sink.Config
	logs      *syncbuf.Buffer
	logger    *slog.Logger
	pol       *policy.Policy
	rot       *policy.Rotation
	rotator   *rotation.Rotator
	managed   *astro.Token // as created, value cleared
	oldValue  string
	// secrets must never appear in a log line.
	secrets []string
}

func newEnv(t *testing.T, opts envOptions) *testEnv {
	t.Helper()
	ctx := ctxT(t)
	e := &testEnv{t: t, clock: clock.Stopped(time.Now().UTC().Truncate(time.Second)), logs: &syncbuf.Buffer{}}
	e.logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	esrv, emu, err := emulator.Start(emulator.Config{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { esrv.Close() })
	e.emu, e.emuURL = emu, esrv.URL
	e.ac, err = astro.New(astro.Config{BaseURL: esrv.URL, Token: emu.OrganizationToken(),
		BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, emu.OrganizationToken(), ghToken)

	e.gh, err = githubtest.Start(githubtest.Config{Tokens: []string{ghToken}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.gh.Close() })
	e.gh.AddRepository("acme/dags", "production")
	e.sinkCfg.GitHub = sink.GitHubConfig{Token: ghToken, APIURL: e.gh.URL()}

	// The managed token.
	req := astro.CreateTokenRequest{Name: "airflow-ci", Description: "Airflow CI connection, managed by astro-sts",
		Scope: astro.ScopeWorkspace, Role: astro.RoleWorkspaceOperator, EntityID: emu.WorkspaceIDs()[0], TokenExpiryPeriodInDays: ptr(90)}
	if opts.managed != nil {
		req = opts.managed(e)
	}
	tok, err := e.ac.CreateToken(ctx, emu.OrganizationID(), req)
	if err != nil {
		t.Fatal(err)
	}
	e.oldValue = tok.Token
	e.secrets = append(e.secrets, tok.Token)
	if opts.roles != nil {
		if _, err := e.ac.SetTokenRoles(ctx, emu.OrganizationID(), tok.ID, opts.roles(e)); err != nil {
			t.Fatal(err)
		}
	}
	if e.managed, err = e.ac.GetToken(ctx, emu.OrganizationID(), tok.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)

	// The sinks, each holding the old value as it would before a rotation.
	var vaultYAML string
	if opts.vault != noVault {
		e.vaultPath = unique("astro/airflow-ci")
		vaultYAML = fmt.Sprintf("\n    vault: {mount: secret, path: %s, field: token}", e.vaultPath)
		switch opts.vault {
		case vaultDown:
			e.sinkCfg.Vault = sink.VaultConfig{Addr: closedAddr(t), Token: "hvs.never-printed"}
		default:
			e.vault = needVault(t)
			hcl := map[vaultMode]string{vaultWriter: writerPolicy, vaultReadOnly: readOnlyPolicy, vaultDataOnly: dataOnlyPolicy}[opts.vault]
			name := map[vaultMode]string{vaultWriter: "astro-sts-writer", vaultReadOnly: "astro-sts-reader", vaultDataOnly: "astro-sts-data-only", vaultNoPolicy: "default"}[opts.vault]
			token := policyToken(t, e.vault, name, hcl)
			e.secrets = append(e.secrets, token)
			e.sinkCfg.Vault = sink.VaultConfig{Addr: e.vault.Addr, Token: secret.Value(token)}
			if _, err := e.vault.Client().KVv2("secret").Put(ctx, e.vaultPath, map[string]any{"token": e.oldValue, "other": "kept"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ghYAML := githubTargetsYAML
	if opts.noGitHub {
		ghYAML = ""
	} else {
		client, err := sink.NewGitHubClient(ctx, e.sinkCfg.GitHub, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range []sink.GitHubTarget{
			{Repository: "acme/dags", Secret: "ASTRO_API_TOKEN"},
			{Organization: "acme", Secret: "ASTRO_CI_TOKEN", Visibility: "private"},
			{Repository: "acme/dags", Environment: "production", Secret: "ASTRO_API_TOKEN"},
		} {
			if _, err := sink.NewGitHubSink(client, target).Write(ctx, e.oldValue, sink.Metadata{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	strategy := opts.strategy
	if strategy == "" {
		strategy = rotation.StrategyReplace
	}
	if vaultYAML+ghYAML != "" {
		e.setPolicy(strategy, vaultYAML+ghYAML)
	}
	e.rotator = e.newRotator(rotation.NewSinks(e.sinkCfg, nil, e.logger))
	t.Cleanup(func() { e.checkLogs() })
	return e
}

// setPolicy parses a policy with the one rotation airflow-ci of the managed
// token, and a decoy rotation whose lineage must never be confused with it.
func (e *testEnv) setPolicy(strategy, sinksYAML string) {
	e.t.Helper()
	src := fmt.Sprintf(`
rotations:
  - name: airflow-ci
    token_id: %q
    strategy: %s
    allow: {repository_id: "123456", event_name: [schedule]}%s
  - name: other
    token_id: %q
    strategy: replace
    allow: {repository_id: "123456"}
    github:
      - {repository: acme/dags, secret: OTHER}
`, e.managed.ID, strategy, sinksYAML, e.emu.OrganizationID())
	p, err := policy.Parse([]byte(src))
	if err != nil {
		e.t.Fatalf("policy: %v\n%s", err, src)
	}
	e.pol = p
	e.rot, _ = p.Rotation("airflow-ci")
}

func (e *testEnv) newRotator(s rotation.Sinks) *rotation.Rotator {
	e.t.Helper()
	r, err := rotation.New(rotation.Config{
		Astro: e.ac, OrganizationID: e.emu.OrganizationID(), Sinks: s, Logger: e.logger,
		Now: e.clock.Now, SinkAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *testEnv) rotate() (*rotation.Result, error) {
	e.t.Helper()
	res, err := e.rotator.Rotate(ctxT(e.t), e.rot)
	e.clock.Advance(time.Minute)
	return res, err
}

// status is the emulator's answer to value presented as a bearer token:
// 200 when it is a valid token, 401 when it was rotated or deleted.
func (e *testEnv) status(value string) int {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.emuURL+"/organizations", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// managedTokens are the live tokens named like the managed one.
func (e *testEnv) managedTokens() []astro.Token {
	var out []astro.Token
	for _, tok := range e.emu.Tokens() {
		if tok.Name == e.managed.Name {
			out = append(out, tok)
		}
	}
	return out
}

func (e *testEnv) vaultValue() string {
	e.t.Helper()
	sec, err := e.vault.Client().KVv2("secret").Get(ctxT(e.t), e.vaultPath)
	if err != nil {
		e.t.Fatal(err)
	}
	if sec.Data["other"] != "kept" {
		e.t.Errorf("the secret's other field is %v, want kept", sec.Data["other"])
	}
	v, _ := sec.Data["token"].(string)
	e.secrets = append(e.secrets, v)
	return v
}

func (e *testEnv) vaultMeta() map[string]string {
	e.t.Helper()
	m, err := e.vault.Client().KVv2("secret").GetMetadata(ctxT(e.t), e.vaultPath)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range m.CustomMetadata {
		out[k], _ = v.(string)
	}
	return out
}

func (e *testEnv) ghValue(s ghSecret) string {
	e.t.Helper()
	v, ok := e.gh.Secret(s.target, s.name)
	if !ok {
		e.t.Fatalf("no secret %s of %s", s.name, s.target)
	}
	e.secrets = append(e.secrets, v)
	return v
}

// checkLogs fails the test if any secret it saw appears in a log line.
func (e *testEnv) checkLogs() {
	logs := e.logs.String()
	for _, s := range e.secrets {
		if s != "" && strings.Contains(logs, s) {
			e.t.Errorf("a secret value appears in the logs:\n%s", logs)
			return
		}
	}
}

// policyToken creates a Vault token holding only the named policy (plus
// "default"); see [vaulttest.Server.TokenWithPolicy].
func policyToken(t *testing.T, v *vaulttest.Server, name, hcl string) string {
	t.Helper()
	tok, err := v.TokenWithPolicy(ctxT(t), name, hcl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func ptr[T any](v T) *T { return &v }

// sinkView is a SinkResult without its version, which differs per run.
type sinkView struct{ Kind, Target, Status string }

func viewSinks(res *rotation.Result) []sinkView {
	if res == nil {
		return nil
	}
	out := make([]sinkView, len(res.Sinks))
	for i, s := range res.Sinks {
		out[i] = sinkView{s.Kind, s.Target, s.Status}
	}
	return out
}

// The sink targets of the default policy, as results name them.
func (e *testEnv) vaultTarget() string { return "secret/" + e.vaultPath + "#token" }

const (
	repoTarget = "repo acme/dags secret ASTRO_API_TOKEN"
	orgTarget  = "org acme secret ASTRO_CI_TOKEN (private)"
	envTarget  = "env acme/dags:production secret ASTRO_API_TOKEN"
)

// emulatorClaims returns the id of the token a value belongs to, as the
// emulator signed it into the value.
func emulatorClaims(value string) (string, error) {
	c, err := emulator.ParseClaims(value)
	return c.APITokenID, err
}

// appKey returns a GitHub App key and the PEM file (PKCS #1, as GitHub hands
// it out) holding it.
func appKey(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "app.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return key, f
}
