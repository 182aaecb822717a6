package sink_test

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/secret"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
)

// GitHubSink.Preflight fetches the key a write would seal with, through the
// same organization, environment or repository API, and fails as the write
// would, before any value exists: nothing is written either way.
func TestGitHubSinkPreflight(t *testing.T) {
	repo := sink.GitHubTarget{Repository: "acme/dags", Secret: "ASTRO_API_TOKEN"}
	env := sink.GitHubTarget{Repository: "acme/dags", Environment: "production", Secret: "ASTRO_API_TOKEN"}
	org := sink.GitHubTarget{Organization: "acme", Secret: "ASTRO_API_TOKEN", Visibility: sink.VisibilityPrivate}
	tests := []struct {
		name           string
		token          string
		target         sink.GitHubTarget
		setup          func(*githubtest.Server)
		want           error // nil: the preflight passes
		wantOp         string
		wantRetryAfter time.Duration
	}{
		{name: "repository", target: repo},
		{name: "environment", target: env},
		{name: "organization", target: org},
		{name: "bad credentials", token: "ghp_wrong", target: repo, want: sink.ErrDenied, wantOp: "public key"},
		{name: "unknown repository", target: sink.GitHubTarget{Repository: "acme/nope", Secret: "X"}, want: sink.ErrNotFound, wantOp: "public key"},
		{name: "unknown environment", target: sink.GitHubTarget{Repository: "acme/dags", Environment: "staging", Secret: "X"}, want: sink.ErrNotFound, wantOp: "public key"},
		{name: "repository lookup of an environment secret", target: env, want: sink.ErrNotFound, wantOp: "repository",
			setup: func(s *githubtest.Server) { s.Fail("/repos/acme/dags", http.StatusNotFound, 1) }},
		// The preflight classifies like a write: the delay GitHub asks for
		// is kept, so the rotation waits it out before trying again.
		{name: "secondary rate limit", target: env, want: sink.ErrUnavailable, wantOp: "public key", wantRetryAfter: 30 * time.Second,
			setup: func(s *githubtest.Server) {
				s.RateLimit(githubtest.EnvTarget("acme/dags", "production"), 30*time.Second, 1)
			}},
		{name: "server error", target: repo, want: sink.ErrUnavailable, wantOp: "public key",
			setup: func(s *githubtest.Server) {
				s.Fail("/repos/acme/dags/actions/secrets/public-key", http.StatusBadGateway, 1)
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
			err := sink.NewGitHubSink(tokenClient(t, srv, token), tt.target).Preflight(ctxT(t))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Preflight = %v", err)
				}
			} else if !errors.Is(err, tt.want) {
				t.Fatalf("Preflight = %v, want %v", err, tt.want)
			}
			if tt.wantOp != "" {
				var se *sink.Error
				if !errors.As(err, &se) {
					t.Fatalf("%v is not a *sink.Error", err)
				}
				if se.Op != tt.wantOp || se.RetryAfter != tt.wantRetryAfter {
					t.Errorf("Op, RetryAfter = %q, %v; want %q, %v", se.Op, se.RetryAfter, tt.wantOp, tt.wantRetryAfter)
				}
			}
			if _, ok := srv.Secret(githubtest.RepoTarget("acme/dags"), "ASTRO_API_TOKEN"); ok {
				t.Error("the preflight wrote a secret")
			}
		})
	}
}

// VaultSink.Preflight reads the secret as a write would: a token that may
// not read fails, one that may passes, and nothing is written.
func TestVaultSinkPreflight(t *testing.T) {
	v := needVault(t)
	path := unique("astro/preflight")
	target := sink.VaultTarget{Mount: "secret", Path: path, Field: "token"}
	if err := sink.NewVaultSink(writerClient(t, v), target).Preflight(ctxT(t)); err != nil {
		t.Fatalf("Preflight with the writer policy = %v", err)
	}
	none, err := sink.NewVaultClient(ctxT(t), sink.VaultConfig{Addr: v.Addr, Token: secret.Value(policyToken(t, v, "astro-sts-nothing", `path "sys/nothing" { capabilities = ["read"] }`))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.NewVaultSink(none, target).Preflight(ctxT(t)); !errors.Is(err, sink.ErrDenied) {
		t.Fatalf("Preflight without a policy = %v, want ErrDenied", err)
	}
	if sec, err := v.Client().KVv2("secret").GetMetadata(ctxT(t), path); err == nil && sec != nil {
		t.Error("the preflight wrote the secret")
	}
}

// VaultSink.Restore puts back the field as the sink's first Write found
// it, with the previous rotation's metadata, and only while the secret is
// still at the version the sink wrote.
func TestVaultSinkRestore(t *testing.T) {
	v := needVault(t)
	client := writerClient(t, v)
	before := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	now := before.Add(24 * time.Hour)
	seed := func(t *testing.T, path string) {
		t.Helper()
		s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
		if _, err := s.Write(ctxT(t), "old-value", sink.Metadata{TokenID: "clold", Strategy: "rotate", RotatedAt: before}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("restores value and metadata", func(t *testing.T) {
		path := unique("astro/restore")
		seed(t, path)
		s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
		// Twice, as a retried write would: the value before the first one
		// is what comes back.
		for range 2 {
			if _, err := s.Write(ctxT(t), "new-value", sink.Metadata{TokenID: "clnew", Strategy: "replace", RotatedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		version, err := s.Restore(ctxT(t))
		if err != nil {
			t.Fatalf("Restore = %v", err)
		}
		data, meta := readBack(t, v, path)
		if d := cmp.Diff(map[string]any{"token": "old-value"}, data); d != "" {
			t.Errorf("data (-want +got):\n%s", d)
		}
		wantMeta := map[string]any{sink.MetaTokenID: "clold", sink.MetaStrategy: "rotate", sink.MetaRotatedAt: before.Format(time.RFC3339)}
		if d := cmp.Diff(wantMeta, meta.CustomMetadata); d != "" {
			t.Errorf("custom_metadata (-want +got):\n%s", d)
		}
		if version != strconv.Itoa(meta.CurrentVersion) {
			t.Errorf("Restore's version %q, the secret is at %d", version, meta.CurrentVersion)
		}
	})
	t.Run("nothing written", func(t *testing.T) {
		path := unique("astro/restore")
		seed(t, path)
		s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
		if _, err := s.Restore(ctxT(t)); !errors.Is(err, sink.ErrNothingToRestore) {
			t.Errorf("Restore = %v, want ErrNothingToRestore", err)
		}
	})
	t.Run("empty before", func(t *testing.T) {
		s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: unique("astro/restore"), Field: "token"})
		if _, err := s.Write(ctxT(t), "new-value", sink.Metadata{TokenID: "clnew"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Restore(ctxT(t)); !errors.Is(err, sink.ErrNothingToRestore) {
			t.Errorf("Restore = %v, want ErrNothingToRestore", err)
		}
	})
	t.Run("another writer came after", func(t *testing.T) {
		path := unique("astro/restore")
		seed(t, path)
		s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
		if _, err := s.Write(ctxT(t), "new-value", sink.Metadata{TokenID: "clnew"}); err != nil {
			t.Fatal(err)
		}
		other := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
		if _, err := other.Write(ctxT(t), "their-value", sink.Metadata{TokenID: "cltheirs"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Restore(ctxT(t)); !errors.Is(err, sink.ErrNothingToRestore) {
			t.Errorf("Restore = %v, want ErrNothingToRestore", err)
		}
		if data, _ := readBack(t, v, path); data["token"] != "their-value" {
			t.Errorf("the other writer's value was replaced: %v", data)
		}
	})
}
