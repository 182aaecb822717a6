package sink_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-github/v62/github"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/secret"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
)

const ghToken = "ghp_test-token-never-printed"

func startGitHub(t *testing.T, cfg githubtest.Config) *githubtest.Server {
	t.Helper()
	s, err := githubtest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tokenClient(t *testing.T, srv *githubtest.Server, token string) *github.Client {
	t.Helper()
	c, err := sink.NewGitHubClient(ctxT(t), sink.GitHubConfig{Token: secret.Value(token), APIURL: srv.URL()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGitHubSinkWrite(t *testing.T) {
	srv := startGitHub(t, githubtest.Config{Tokens: []string{ghToken}})
	dags := srv.AddRepository("acme/dags", "production", "preview env")
	infra := srv.AddRepository("acme/infra")
	client := tokenClient(t, srv, ghToken)

	tests := []struct {
		name       string
		target     sink.GitHubTarget
		server     string // githubtest target
		wantTarget string
		want       githubtest.Secret
	}{
		{
			name:       "repository",
			target:     sink.GitHubTarget{Repository: "acme/dags", Secret: "ASTRO_API_TOKEN"},
			server:     githubtest.RepoTarget("acme/dags"),
			wantTarget: "repo acme/dags secret ASTRO_API_TOKEN",
			want:       githubtest.Secret{Value: "tok-repo"},
		},
		{
			name:       "environment, by repository id",
			target:     sink.GitHubTarget{Repository: "acme/dags", Environment: "production", Secret: "ASTRO_API_TOKEN"},
			server:     githubtest.EnvTarget("acme/dags", "production"),
			wantTarget: "env acme/dags:production secret ASTRO_API_TOKEN",
			want:       githubtest.Secret{Value: "tok-env"},
		},
		{
			name:       "environment whose name needs escaping",
			target:     sink.GitHubTarget{Repository: "acme/dags", Environment: "preview env", Secret: "ASTRO_API_TOKEN"},
			server:     githubtest.EnvTarget("acme/dags", "preview env"),
			wantTarget: "env acme/dags:preview env secret ASTRO_API_TOKEN",
			want:       githubtest.Secret{Value: "tok-env-2"},
		},
		{
			name:       "organization, private",
			target:     sink.GitHubTarget{Organization: "acme", Secret: "ASTRO_API_TOKEN", Visibility: "private"},
			server:     githubtest.OrgTarget("acme"),
			wantTarget: "org acme secret ASTRO_API_TOKEN (private)",
			want:       githubtest.Secret{Value: "tok-org", Visibility: "private"},
		},
		{
			name:       "organization, selected repositories",
			target:     sink.GitHubTarget{Organization: "acme", Secret: "ASTRO_DEPLOY_TOKEN", Visibility: "selected", SelectedRepositoryIDs: []int64{dags, infra}},
			server:     githubtest.OrgTarget("acme"),
			wantTarget: "org acme secret ASTRO_DEPLOY_TOKEN (selected: 2 repositories)",
			want:       githubtest.Secret{Value: "tok-org-selected", Visibility: "selected", SelectedRepositoryIDs: []int64{dags, infra}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sink.NewGitHubSink(client, tt.target)
			if s.Kind() != "github" || s.Target() != tt.wantTarget {
				t.Errorf("Kind, Target = %q, %q; want github, %q", s.Kind(), s.Target(), tt.wantTarget)
			}
			// Twice: a PUT replaces, so a retried write is harmless.
			for range 2 {
				version, err := s.Write(ctxT(t), tt.want.Value, sink.Metadata{TokenID: "id"})
				if err != nil {
					t.Fatal(err)
				}
				if want := srv.PublicKeyID(tt.server); version != want {
					t.Errorf("version %q, want the key id %q", version, want)
				}
			}
			got, ok := srv.SecretInfo(tt.server, tt.target.Secret)
			if !ok {
				t.Fatal("the server holds no such secret")
			}
			want := tt.want
			want.KeyID = srv.PublicKeyID(tt.server)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decrypted secret -want +got:\n%s", diff)
			}
		})
	}
}

// After GitHub rotates a target's key, the next write seals with the new
// one: the key is fetched for every write, never cached.
func TestGitHubSinkFollowsKeyRotation(t *testing.T) {
	srv := startGitHub(t, githubtest.Config{Tokens: []string{ghToken}})
	srv.AddRepository("acme/dags")
	s := sink.NewGitHubSink(tokenClient(t, srv, ghToken), sink.GitHubTarget{Repository: "acme/dags", Secret: "T"})
	first, err := s.Write(ctxT(t), "one", sink.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	srv.RotateKey(githubtest.RepoTarget("acme/dags"))
	second, err := s.Write(ctxT(t), "two", sink.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if first == second {
		t.Errorf("the same key id %q after a rotation", first)
	}
	if v, _ := srv.Secret(githubtest.RepoTarget("acme/dags"), "T"); v != "two" {
		t.Errorf("secret %q, want two", v)
	}
}

func TestGitHubSinkErrors(t *testing.T) {
	repo := sink.GitHubTarget{Repository: "acme/dags", Secret: "ASTRO_API_TOKEN"}
	env := sink.GitHubTarget{Repository: "acme/dags", Environment: "production", Secret: "ASTRO_API_TOKEN"}
	tests := []struct {
		name           string
		token          string
		target         sink.GitHubTarget
		setup          func(*githubtest.Server)
		want           error
		wantOp         string
		wantRetryAfter time.Duration
	}{
		{name: "bad credentials", token: "ghp_wrong", target: repo, want: sink.ErrDenied, wantOp: "public key"},
		{name: "forbidden write", target: repo, want: sink.ErrDenied, wantOp: "write",
			setup: func(s *githubtest.Server) { s.Fail("/repos/acme/dags/actions/secrets/ASTRO", http.StatusForbidden, 1) }},
		{name: "unknown repository", target: sink.GitHubTarget{Repository: "acme/nope", Secret: "X"}, want: sink.ErrNotFound, wantOp: "public key"},
		{name: "unknown environment", target: sink.GitHubTarget{Repository: "acme/dags", Environment: "staging", Secret: "X"}, want: sink.ErrNotFound, wantOp: "public key"},
		{name: "repository lookup of an environment secret", target: env, want: sink.ErrNotFound, wantOp: "repository",
			setup: func(s *githubtest.Server) { s.Fail("/repos/acme/dags", http.StatusNotFound, 1) }},
		{name: "secondary rate limit", target: env, want: sink.ErrUnavailable, wantOp: "public key", wantRetryAfter: 30 * time.Second,
			setup: func(s *githubtest.Server) {
				s.RateLimit(githubtest.EnvTarget("acme/dags", "production"), 30*time.Second, 1)
			}},
		{name: "server error", target: repo, want: sink.ErrUnavailable, wantOp: "write",
			setup: func(s *githubtest.Server) {
				s.Fail("/repos/acme/dags/actions/secrets/ASTRO", http.StatusInternalServerError, 1)
			}},
		{name: "invalid target", target: sink.GitHubTarget{Repository: "acme/dags", Secret: "GITHUB_TOKEN"}, want: sink.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startGitHub(t, githubtest.Config{Tokens: []string{ghToken}})
			srv.AddRepository("acme/dags", "production")
			if tt.setup != nil {
				tt.setup(srv)
			}
			token := ghToken
			if tt.token != "" {
				token = tt.token
			}
			s := sink.NewGitHubSink(tokenClient(t, srv, token), tt.target)
			_, err := s.Write(ctxT(t), "value-never-printed", sink.Metadata{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Write = %v, want %v", err, tt.want)
			}
			var se *sink.Error
			if tt.wantOp != "" {
				if !errors.As(err, &se) {
					t.Fatalf("%v is not a *sink.Error", err)
				}
				if se.Op != tt.wantOp || se.RetryAfter != tt.wantRetryAfter {
					t.Errorf("Op, RetryAfter = %q, %v; want %q, %v", se.Op, se.RetryAfter, tt.wantOp, tt.wantRetryAfter)
				}
			}
			for _, secret := range []string{token, "value-never-printed"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks %q: %v", secret, err)
				}
			}
		})
	}
}

func TestGitHubSinkUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := "http://" + ln.Addr().String() + "/api/v3"
	ln.Close()
	client, err := sink.NewGitHubClient(ctxT(t), sink.GitHubConfig{Token: ghToken, APIURL: api}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sink.NewGitHubSink(client, sink.GitHubTarget{Repository: "acme/dags", Secret: "X"}).Write(ctxT(t), "v", sink.Metadata{})
	if !errors.Is(err, sink.ErrUnavailable) {
		t.Fatalf("Write = %v, want ErrUnavailable", err)
	}
}

// appKeyFile writes key as GitHub hands it out (PKCS #1 PEM).
func appKeyFile(t *testing.T, key *rsa.PrivateKey) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "app.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestGitHubAppAuth(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.Stopped(time.Now()) // shared by the server and the client
	srv := startGitHub(t, githubtest.Config{AppID: 4242, AppKey: &key.PublicKey, Now: clk.Now})
	srv.AddRepository("acme/dags", "production")
	srv.AddRepository("other/repo")
	acme := srv.AddInstallation("acme")
	keyFile := appKeyFile(t, key)

	base := sink.GitHubConfig{AppID: 4242, AppPrivateKeyFile: keyFile, APIURL: srv.URL(), Now: clk.Now}
	tests := []struct {
		name   string
		cfg    func(sink.GitHubConfig) sink.GitHubConfig
		target sink.GitHubTarget
	}{
		{"installation id from config", func(c sink.GitHubConfig) sink.GitHubConfig { c.InstallationID = acme; return c },
			sink.GitHubTarget{Repository: "acme/dags", Secret: "A"}},
		{"installation looked up for the repository", func(c sink.GitHubConfig) sink.GitHubConfig { c.InstallationOwner = "acme/dags"; return c },
			sink.GitHubTarget{Repository: "acme/dags", Environment: "production", Secret: "B"}},
		{"installation looked up for the organization", func(c sink.GitHubConfig) sink.GitHubConfig { c.InstallationOwner = "acme"; return c },
			sink.GitHubTarget{Organization: "acme", Secret: "C", Visibility: "all"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := sink.NewGitHubClient(ctxT(t), tt.cfg(base), nil)
			if err != nil {
				t.Fatal(err)
			}
			before := srv.InstallationTokensIssued()
			s := sink.NewGitHubSink(client, tt.target)
			for _, v := range []string{"first", "second"} {
				if _, err := s.Write(ctxT(t), v, sink.Metadata{}); err != nil {
					t.Fatal(err)
				}
			}
			srvTarget := githubtest.RepoTarget("acme/dags")
			switch {
			case tt.target.Organization != "":
				srvTarget = githubtest.OrgTarget("acme")
			case tt.target.Environment != "":
				srvTarget = githubtest.EnvTarget("acme/dags", "production")
			}
			if v, _ := srv.Secret(srvTarget, tt.target.Secret); v != "second" {
				t.Errorf("secret %q, want second", v)
			}
			// NewGitHubClient fetched one token; both writes reused it.
			if n := srv.InstallationTokensIssued() - before; n != 0 {
				t.Errorf("%d installation tokens minted by the writes, want 0 (cached)", n)
			}
		})
	}

	t.Run("token refreshed a minute before expiry", func(t *testing.T) {
		client, err := sink.NewGitHubClient(ctxT(t), sink.GitHubConfig{AppID: 4242, AppPrivateKeyFile: keyFile, InstallationID: acme, APIURL: srv.URL(), Now: clk.Now}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := sink.NewGitHubSink(client, sink.GitHubTarget{Repository: "acme/dags", Secret: "D"})
		before := srv.InstallationTokensIssued()
		clk.Advance(58 * time.Minute) // 2 minutes left: still cached
		if _, err := s.Write(ctxT(t), "v1", sink.Metadata{}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(90 * time.Second) // 30 s left: replaced
		if _, err := s.Write(ctxT(t), "v2", sink.Metadata{}); err != nil {
			t.Fatal(err)
		}
		if n := srv.InstallationTokensIssued() - before; n != 1 {
			t.Errorf("%d installation tokens minted, want 1", n)
		}
	})

	t.Run("an installation token reaches its own account only", func(t *testing.T) {
		client, err := sink.NewGitHubClient(ctxT(t), sink.GitHubConfig{AppID: 4242, AppPrivateKeyFile: keyFile, InstallationID: acme, APIURL: srv.URL(), Now: clk.Now}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = sink.NewGitHubSink(client, sink.GitHubTarget{Organization: "other", Secret: "X", Visibility: "all"}).Write(ctxT(t), "v", sink.Metadata{})
		if !errors.Is(err, sink.ErrDenied) {
			t.Errorf("Write = %v, want ErrDenied", err)
		}
	})

	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	failures := []struct {
		name string
		cfg  sink.GitHubConfig
		want error
	}{
		{"a key GitHub does not know", sink.GitHubConfig{AppID: 4242, AppPrivateKeyFile: appKeyFile(t, other), InstallationID: acme}, sink.ErrDenied},
		{"another app id", sink.GitHubConfig{AppID: 1, AppPrivateKeyFile: keyFile, InstallationID: acme}, sink.ErrDenied},
		{"no installation on the account", sink.GitHubConfig{AppID: 4242, AppPrivateKeyFile: keyFile, InstallationOwner: "other"}, sink.ErrNotFound},
		{"no installation id and no owner", sink.GitHubConfig{AppID: 4242, AppPrivateKeyFile: keyFile}, sink.ErrInvalidConfig},
		{"missing key file", sink.GitHubConfig{AppID: 4242, AppPrivateKeyFile: filepath.Join(t.TempDir(), "nope.pem"), InstallationID: acme}, sink.ErrInvalidConfig},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.APIURL, tt.cfg.Now = srv.URL(), clk.Now
			_, err := sink.NewGitHubClient(ctxT(t), tt.cfg, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("NewGitHubClient = %v, want %v", err, tt.want)
			}
		})
	}
}

// Credentials go to the API host only: a redirect elsewhere is refused
// before the token can follow it.
func TestGitHubClientRefusesForeignRedirect(t *testing.T) {
	var leaked sync.Map
	foreign := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store("auth", r.Header.Get("Authorization"))
	}), ReadHeaderTimeout: time.Second}
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = foreign.Serve(fl) }()
	t.Cleanup(func() { foreign.Close() })

	redirector := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+fl.Addr().String()+r.URL.Path, http.StatusTemporaryRedirect)
	}), ReadHeaderTimeout: time.Second}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = redirector.Serve(rl) }()
	t.Cleanup(func() { redirector.Close() })

	client, err := sink.NewGitHubClient(ctxT(t), sink.GitHubConfig{Token: ghToken, APIURL: "http://" + rl.Addr().String() + "/api/v3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sink.NewGitHubSink(client, sink.GitHubTarget{Repository: "acme/dags", Secret: "X"}).Write(ctxT(t), "v", sink.Metadata{})
	if err == nil {
		t.Fatal("a redirect to another host was followed")
	}
	if v, ok := leaked.Load("auth"); ok {
		t.Errorf("the foreign host received Authorization %q", v)
	}
}

func TestGitHubTargetValidate(t *testing.T) {
	tests := []struct {
		name   string
		target sink.GitHubTarget
		want   []string
	}{
		{"repo", sink.GitHubTarget{Repository: "acme/dags", Secret: "ASTRO_API_TOKEN"}, nil},
		{"env", sink.GitHubTarget{Repository: "acme/dags", Environment: "prod", Secret: "_X1"}, nil},
		{"org all", sink.GitHubTarget{Organization: "acme", Secret: "X", Visibility: "all"}, nil},
		{"org selected", sink.GitHubTarget{Organization: "acme", Secret: "X", Visibility: "selected", SelectedRepositoryIDs: []int64{1}}, nil},
		{"empty", sink.GitHubTarget{}, []string{
			"github target: repository or organization is required",
			"github target: secret name is required",
		}},
		{"both owners", sink.GitHubTarget{Repository: "a/b", Organization: "a", Secret: "X"}, []string{
			"github target: set repository or organization, not both",
		}},
		{"bad names", sink.GitHubTarget{Repository: "acme", Secret: "1X"}, []string{
			`github target: repository "acme": want owner/name`,
			`github target: secret name "1X": only letters, digits and _, not starting with a digit`,
		}},
		{"reserved prefix", sink.GitHubTarget{Repository: "a/b", Secret: "github_token"}, []string{
			`github target: secret name "github_token": the GITHUB_ prefix is reserved`,
		}},
		{"visibility on a repo", sink.GitHubTarget{Repository: "a/b", Secret: "X", Visibility: "all"}, []string{
			"github target: visibility and selected repositories apply to organization secrets only",
		}},
		{"org without visibility, with an environment", sink.GitHubTarget{Organization: "acme", Environment: "prod", Secret: "X"}, []string{
			"github target: environment applies to repository secrets only",
			"github target: an organization secret needs a visibility: all, private or selected",
		}},
		{"selected without ids", sink.GitHubTarget{Organization: "acme", Secret: "X", Visibility: "selected"}, []string{
			"github target: visibility selected needs at least one selected repository id",
		}},
		{"ids without selected", sink.GitHubTarget{Organization: "acme", Secret: "X", Visibility: "private", SelectedRepositoryIDs: []int64{1}}, []string{
			"github target: selected repositories need visibility selected, not private",
		}},
		{"unknown visibility", sink.GitHubTarget{Organization: "acme", Secret: "X", Visibility: "public"}, []string{
			`github target: visibility "public": want all, private or selected`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, messages(tt.target.Validate())); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
		})
	}
}

// FuzzGitHubTarget: Validate and String never panic, every rejection is
// ErrInvalidConfig, and an accepted target has an owner/name repository, no
// reserved secret name, and a String naming its secret.
func FuzzGitHubTarget(f *testing.F) {
	f.Add("acme/dags", "", "", "ASTRO_API_TOKEN", "")
	f.Add("acme/dags", "prod env", "", "X", "")
	f.Add("", "", "acme", "X", "selected")
	f.Add("a/b/c", "", "", "GITHUB_X", "all")
	f.Fuzz(func(t *testing.T, repo, env, org, secret, vis string) {
		target := sink.GitHubTarget{Repository: repo, Environment: env, Organization: org, Secret: secret, Visibility: vis}
		if vis == "selected" {
			target.SelectedRepositoryIDs = []int64{1}
		}
		_ = target.String()
		if err := target.Validate(); err != nil {
			if !errors.Is(err, sink.ErrInvalidConfig) {
				t.Fatalf("Validate error %v is not ErrInvalidConfig", err)
			}
			return
		}
		if repo != "" && strings.Count(repo, "/") != 1 {
			t.Fatalf("accepted repository %q", repo)
		}
		if strings.HasPrefix(strings.ToUpper(secret), "GITHUB_") {
			t.Fatalf("accepted reserved secret name %q", secret)
		}
		if !strings.Contains(target.String(), " secret "+secret) {
			t.Fatalf("String() %q does not name secret %q", target.String(), secret)
		}
	})
}

// A GitHub App writes an environment secret; the test server decrypts it.
func ExampleNewGitHubSink() {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv, err := githubtest.Start(githubtest.Config{AppID: 42, AppKey: &key.PublicKey})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	srv.AddRepository("acme/dags", "production")
	srv.AddInstallation("acme")
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	keyFile := filepath.Join(dir, "app.pem")
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)

	// The sinks' section of the configuration (internal/config), from
	// GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY_FILE and GITHUB_API_URL.
	gh := sink.GitHubConfig{AppID: 42, AppPrivateKeyFile: keyFile, APIURL: srv.URL()}
	if err := gh.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	target := sink.GitHubTarget{Repository: "acme/dags", Environment: "production", Secret: "ASTRO_API_TOKEN"}
	ctx := context.Background()
	gh.InstallationOwner = target.Owner() // no GITHUB_APP_INSTALLATION_ID: look it up
	client, err := sink.NewGitHubClient(ctx, gh, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	s := sink.NewGitHubSink(client, target)
	if _, err := s.Write(ctx, "new-astro-token", sink.Metadata{}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Target())
	fmt.Println(srv.Secret(githubtest.EnvTarget("acme/dags", "production"), "ASTRO_API_TOKEN"))
	// Output:
	// env acme/dags:production secret ASTRO_API_TOKEN
	// new-astro-token true
}
