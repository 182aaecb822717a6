package rotation_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/sink"
)

const checkPolicy = `
rotations:
  - name: to-vault-and-github
    token_id: cltoken1
    strategy: replace
    allow: {repository_id: "1"}
    vault: {mount: secret, path: astro/a, field: token}
    github:
      - {repository: acme/dags, secret: A}
  - name: to-github
    token_id: cltoken2
    strategy: rotate
    allow: {repository_id: "1"}
    github:
      - {organization: acme, secret: B, visibility: all}
`

// Check names, for each rotation, every sink kind it lacks credentials for,
// in one error, so that the broker refuses to start with all of them listed.
func TestCheck(t *testing.T) {
	p, err := policy.Parse([]byte(checkPolicy))
	if err != nil {
		t.Fatal(err)
	}
	vault := sink.VaultConfig{Addr: "http://127.0.0.1:8200", Token: "hvs.x"}
	github := sink.GitHubConfig{Token: "ghp_x", APIURL: sink.DefaultGitHubAPIURL}
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, []byte("not used by Check"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  sink.Config
		// want lists each error line as rotation name and missing kind.
		want []string
	}{
		{"nothing configured", sink.Config{}, []string{"to-vault-and-github: Vault", "to-vault-and-github: GitHub", "to-github: GitHub"}},
		{"vault only", sink.Config{Vault: vault}, []string{"to-vault-and-github: GitHub", "to-github: GitHub"}},
		{"github only", sink.Config{GitHub: github}, []string{"to-vault-and-github: Vault"}},
		{"both", sink.Config{Vault: vault, GitHub: github}, nil},
		{"a GitHub App without its key", sink.Config{Vault: vault, GitHub: sink.GitHubConfig{AppID: 7, APIURL: sink.DefaultGitHubAPIURL}},
			[]string{"to-vault-and-github: GITHUB_APP_PRIVATE_KEY_FILE", "to-github: GITHUB_APP_PRIVATE_KEY_FILE"}},
		{"a GitHub App", sink.Config{Vault: vault, GitHub: sink.GitHubConfig{AppID: 7, AppPrivateKeyFile: keyFile, APIURL: sink.DefaultGitHubAPIURL}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := rotation.Check(p, tt.cfg)
			var got []string
			if err != nil {
				if !errors.Is(err, sink.ErrInvalidConfig) {
					t.Errorf("error %v is not ErrInvalidConfig", err)
				}
				for _, line := range strings.Split(err.Error(), "\n") {
					name, rest, ok := strings.Cut(strings.TrimPrefix(line, `rotation "`), `": `)
					if !ok {
						t.Fatalf("line %q does not name its rotation", line)
					}
					for _, kw := range []string{"Vault", "GitHub", "GITHUB_APP_PRIVATE_KEY_FILE"} {
						if strings.Contains(rest, kw) {
							got = append(got, name+": "+kw)
							break
						}
					}
				}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("problems (-want +got):\n%s\nerror: %v", d, err)
			}
		})
	}
}

// The sink factory refuses, before any network call, a rotation whose
// sinks have no credentials: a policy reloaded after start-up may add one.
func TestSinkFactoryChecksTheRotation(t *testing.T) {
	p, err := policy.Parse([]byte(checkPolicy))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.Rotation("to-github")
	f := rotation.NewSinks(sink.Config{Vault: sink.VaultConfig{Addr: "http://127.0.0.1:1", Token: "hvs.x"}}, nil, nil)
	if _, err := f.For(ctxT(t), r); !errors.Is(err, sink.ErrInvalidConfig) || !strings.Contains(err.Error(), `rotation "to-github"`) {
		t.Fatalf("For = %v, want ErrInvalidConfig naming the rotation", err)
	}
}
