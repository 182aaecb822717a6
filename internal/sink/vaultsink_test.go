package sink_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/astro-sts/astro-sts/internal/secret"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/vaulttest"
)

// writerPolicy is the minimal policy docs/sinks.md documents for a sink
// writing under secret/astro/: the tests below log in with it rather than
// with the root token, so the documented policy is proven sufficient.
const writerPolicy = `
path "secret/data/astro/*" {
  capabilities = ["create", "update", "read"]
}
path "secret/metadata/astro/*" {
  capabilities = ["create", "update", "read"]
}
`

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// unique returns name with a random suffix: the Vault server is shared by
// the whole package and by repeated runs (-count).
func unique(name string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "-" + hex.EncodeToString(b)
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

func writerClient(t *testing.T, v *vaulttest.Server) *vaultapi.Client {
	t.Helper()
	tok := policyToken(t, v, "astro-sts-writer", writerPolicy)
	c, err := sink.NewVaultClient(ctxT(t), sink.VaultConfig{Addr: v.Addr, Token: secret.Value(tok)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readBack reads the secret's latest data and metadata with the root token.
func readBack(t *testing.T, v *vaulttest.Server, path string) (data map[string]any, meta *vaultapi.KVMetadata) {
	t.Helper()
	ctx := ctxT(t)
	kv := v.Client().KVv2("secret")
	sec, err := kv.Get(ctx, path)
	if err != nil {
		t.Fatalf("read back %s: %v", path, err)
	}
	meta, err = kv.GetMetadata(ctx, path)
	if err != nil {
		t.Fatalf("read back metadata %s: %v", path, err)
	}
	return sec.Data, meta
}

func TestVaultSinkWrite(t *testing.T) {
	v := needVault(t)
	client := writerClient(t, v)
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

	type step struct {
		value       string
		meta        sink.Metadata
		wantVersion string
	}
	tests := []struct {
		name string
		// seed prepares the secret with the root token before the sink
		// writes; nil: the secret does not exist.
		seed       func(t *testing.T, path string)
		steps      []step
		wantData   map[string]any
		wantCustom map[string]any
		wantMaxVer int
	}{
		{
			name: "new secret",
			steps: []step{
				{"tok-1", sink.Metadata{TokenID: "clx1", Strategy: "rotate", RotatedAt: at}, "1"},
			},
			wantData:   map[string]any{"token": "tok-1"},
			wantCustom: map[string]any{sink.MetaTokenID: "clx1", sink.MetaStrategy: "rotate", sink.MetaRotatedAt: "2026-11-23T10:00:00Z"},
		},
		{
			name: "existing secret keeps its other fields and metadata",
			seed: func(t *testing.T, path string) {
				ctx := ctxT(t)
				if _, err := v.Client().KVv2("secret").Put(ctx, path, map[string]any{"other": "keep", "token": "old"}); err != nil {
					t.Fatal(err)
				}
				if _, err := v.Client().Logical().WriteWithContext(ctx, "secret/metadata/"+path, map[string]any{
					"max_versions":    7,
					"custom_metadata": map[string]any{"owner": "data-team", sink.MetaTokenID: "previous"},
				}); err != nil {
					t.Fatal(err)
				}
			},
			steps: []step{
				{"tok-1", sink.Metadata{TokenID: "clx1", Strategy: "rotate", RotatedAt: at}, "2"},
				{"tok-2", sink.Metadata{TokenID: "clx2", Strategy: "overlap", RotatedAt: at.Add(time.Hour)}, "3"},
				// A retried write of the same value: no new version.
				{"tok-2", sink.Metadata{TokenID: "clx2", Strategy: "overlap", RotatedAt: at.Add(time.Hour)}, "3"},
			},
			wantData: map[string]any{"other": "keep", "token": "tok-2"},
			wantCustom: map[string]any{
				"owner": "data-team", sink.MetaTokenID: "clx2", sink.MetaStrategy: "overlap", sink.MetaRotatedAt: "2026-11-23T11:00:00Z",
			},
			wantMaxVer: 7,
		},
		{
			name: "empty metadata fields remove stale keys",
			seed: func(t *testing.T, path string) {
				ctx := ctxT(t)
				if _, err := v.Client().KVv2("secret").Put(ctx, path, map[string]any{"token": "old"}); err != nil {
					t.Fatal(err)
				}
				if _, err := v.Client().Logical().WriteWithContext(ctx, "secret/metadata/"+path, map[string]any{
					"custom_metadata": map[string]any{"owner": "data-team", sink.MetaTokenID: "previous", sink.MetaStrategy: "rotate"},
				}); err != nil {
					t.Fatal(err)
				}
			},
			steps:      []step{{"tok-1", sink.Metadata{Strategy: "manual"}, "2"}},
			wantData:   map[string]any{"token": "tok-1"},
			wantCustom: map[string]any{"owner": "data-team", sink.MetaStrategy: "manual"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := unique("astro/write")
			if tt.seed != nil {
				tt.seed(t, path)
			}
			s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
			if got, want := s.Target(), "secret/"+path+"#token"; got != want {
				t.Errorf("Target() = %q, want %q", got, want)
			}
			for i, st := range tt.steps {
				got, err := s.Write(ctxT(t), st.value, st.meta)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != st.wantVersion {
					t.Errorf("step %d: version %s, want %s", i, got, st.wantVersion)
				}
			}
			data, meta := readBack(t, v, path)
			if diff := cmp.Diff(tt.wantData, data); diff != "" {
				t.Errorf("data -want +got:\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCustom, meta.CustomMetadata); diff != "" {
				t.Errorf("custom_metadata -want +got:\n%s", diff)
			}
			if meta.MaxVersions != tt.wantMaxVer {
				t.Errorf("max_versions %d, want %d (clobbered?)", meta.MaxVersions, tt.wantMaxVer)
			}
		})
	}
}

// A writer between our read and our check-and-set write makes the write
// fail with ErrConflict instead of overwriting; Write then re-reads and
// keeps the other writer's changes.
func TestVaultSinkCASConflict(t *testing.T) {
	v := needVault(t)
	ctx := ctxT(t)
	path := unique("astro/cas")
	s := sink.NewVaultSink(writerClient(t, v), sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
	m := sink.Metadata{TokenID: "id", Strategy: "rotate", RotatedAt: time.Now()}

	if _, err := s.Write(ctx, "ours-1", m); err != nil {
		t.Fatal(err)
	}
	before, err := s.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Version != 1 {
		t.Fatalf("version %d after the first write, want 1", before.Version)
	}

	// Someone else writes version 2.
	if _, err := v.Client().KVv2("secret").Put(ctx, path, map[string]any{"token": "theirs", "extra": "theirs too"}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		version int
	}{
		{"stale version", before.Version},
		{"create over an existing secret", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.WriteCAS(ctx, tt.version, map[string]any{"token": "ours-stale"})
			if !errors.Is(err, sink.ErrConflict) {
				t.Fatalf("WriteCAS(%d) = %v, want ErrConflict", tt.version, err)
			}
			var se *sink.Error
			if !errors.As(err, &se) || se.Sink != "vault" || se.Op != "write" {
				t.Errorf("error %#v is not a vault write *sink.Error", err)
			}
		})
	}
	data, _ := readBack(t, v, path)
	if diff := cmp.Diff(map[string]any{"token": "theirs", "extra": "theirs too"}, data); diff != "" {
		t.Errorf("a conflicting write changed the secret -want +got:\n%s", diff)
	}

	got, err := s.Write(ctx, "ours-2", m)
	if err != nil {
		t.Fatal(err)
	}
	if got != "3" {
		t.Errorf("version %s, want 3", got)
	}
	data, _ = readBack(t, v, path)
	if diff := cmp.Diff(map[string]any{"token": "ours-2", "extra": "theirs too"}, data); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

// Two sinks writing different fields of one secret at the same time: with
// check-and-set, no update is lost. A writer may give up with ErrConflict
// after its re-reads, but never with anything else, and never silently.
func TestVaultSinkConcurrentWriters(t *testing.T) {
	v := needVault(t)
	ctx := ctxT(t)
	client := writerClient(t, v)
	path := unique("astro/concurrent")
	m := sink.Metadata{TokenID: "id", Strategy: "rotate", RotatedAt: time.Now()}

	const writes = 6
	fields := []string{"a", "b"}
	lastOK := make([]string, len(fields))
	okCount := make([]int, len(fields))
	var wg sync.WaitGroup
	for i, f := range fields {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: f})
			for n := range writes {
				value := f + strconv.Itoa(n)
				_, err := s.Write(ctx, value, m)
				switch {
				case err == nil:
					lastOK[i] = value
					okCount[i]++
				case errors.Is(err, sink.ErrConflict):
				default:
					t.Errorf("writer %s: %v", f, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("successful writes per writer: %v of %d", okCount, writes)

	data, meta := readBack(t, v, path)
	want := map[string]any{}
	for i, f := range fields {
		if lastOK[i] != "" {
			want[f] = lastOK[i]
		}
	}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("final data is not the last successful write of each writer -want +got:\n%s", diff)
	}
	if total := okCount[0] + okCount[1]; meta.CurrentVersion != total {
		t.Errorf("current version %d, want one per successful write (%d)", meta.CurrentVersion, total)
	}
}

func TestVaultSinkDenied(t *testing.T) {
	v := needVault(t)
	path := unique("astro/denied")
	if _, err := v.Client().KVv2("secret").Put(ctxT(t), path, map[string]any{"token": "original"}); err != nil {
		t.Fatal(err)
	}
	readOnly := `
path "secret/data/astro/*" { capabilities = ["read"] }
path "secret/metadata/astro/*" { capabilities = ["read"] }
`
	tests := []struct {
		name  string
		token string
	}{
		{"a token with no policy", policyToken(t, v, "default", "")},
		{"a read-only token", policyToken(t, v, "astro-sts-reader", readOnly)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := sink.NewVaultClient(ctxT(t), sink.VaultConfig{Addr: v.Addr, Token: secret.Value(tt.token)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
			_, err = s.Write(ctxT(t), "new-value", sink.Metadata{TokenID: "id"})
			if !errors.Is(err, sink.ErrDenied) {
				t.Fatalf("Write = %v, want ErrDenied", err)
			}
			if strings.Contains(err.Error(), tt.token) || strings.Contains(err.Error(), "new-value") {
				t.Errorf("error leaks a secret: %v", err)
			}
			data, _ := readBack(t, v, path)
			if data["token"] != "original" {
				t.Errorf("denied write changed the secret to %v", data)
			}
		})
	}
}

func TestVaultSinkUnavailable(t *testing.T) {
	// A port nobody listens on: bind, note it, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()

	const token = "hvs.never-printed"
	client, err := sink.NewVaultClient(ctxT(t), sink.VaultConfig{Addr: addr, Token: token}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: "astro/down", Field: "token"})
	_, err = s.Write(ctxT(t), "value", sink.Metadata{})
	if !errors.Is(err, sink.ErrUnavailable) {
		t.Fatalf("Write = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("error leaks the token: %v", err)
	}

	// A login against the same address is unavailable too, not denied.
	_, err = sink.NewVaultClient(ctxT(t), sink.VaultConfig{Addr: addr, Auth: "approle", RoleID: "r", SecretID: "s3cr3t-id"}, nil)
	if !errors.Is(err, sink.ErrUnavailable) {
		t.Errorf("login = %v, want ErrUnavailable", err)
	}
}

// Writing "data/<path>" into a KV version 1 mount would create a stray
// secret; the sink refuses before writing anything.
func TestVaultSinkRefusesKVv1(t *testing.T) {
	v := needVault(t)
	ctx := ctxT(t)
	mount := unique("kv1")
	if err := v.Client().Sys().MountWithContext(ctx, mount, &vaultapi.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	s := sink.NewVaultSink(v.Client(), sink.VaultTarget{Mount: mount, Path: "astro/x", Field: "token"})
	_, err := s.Write(ctx, "value", sink.Metadata{})
	if !errors.Is(err, sink.ErrInvalidConfig) {
		t.Fatalf("Write = %v, want ErrInvalidConfig", err)
	}
	stray, err := v.Client().Logical().ReadWithContext(ctx, mount+"/data/astro/x")
	if err != nil || stray != nil {
		t.Errorf("something was written to %s/data/astro/x: %v %v", mount, stray, err)
	}
}

func TestVaultTarget(t *testing.T) {
	tests := []struct {
		target sink.VaultTarget
		ok     bool
	}{
		{sink.VaultTarget{Mount: "secret", Path: "astro/airflow-ci", Field: "token"}, true},
		{sink.VaultTarget{Mount: "team/kv", Path: "a", Field: "f"}, true},
		{sink.VaultTarget{}, false},
		{sink.VaultTarget{Mount: "/secret", Path: "a", Field: "f"}, false},
		{sink.VaultTarget{Mount: "secret", Path: "a/../b", Field: "f"}, false},
		{sink.VaultTarget{Mount: "secret", Path: "a//b", Field: "f"}, false},
		{sink.VaultTarget{Mount: "secret", Path: "a", Field: "f/g"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.target.String(), func(t *testing.T) {
			err := tt.target.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, sink.ErrInvalidConfig) {
				t.Errorf("%v is not ErrInvalidConfig", err)
			}
		})
	}
}

func TestVaultTokenFile(t *testing.T) {
	v := needVault(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte(policyToken(t, v, "astro-sts-writer", writerPolicy)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		file    string
		wantErr error
	}{
		{"token file", good, nil},
		{"missing file", filepath.Join(dir, "nope"), sink.ErrInvalidConfig},
		{"empty file", empty, sink.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := sink.NewVaultClient(ctxT(t), sink.VaultConfig{Addr: v.Addr, TokenFile: tt.file}, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: unique("astro/tokenfile"), Field: "token"})
			if _, err := s.Write(ctxT(t), "v", sink.Metadata{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestVaultAppRoleLogin(t *testing.T) {
	v := needVault(t)
	ctx := ctxT(t)
	root := v.Client()
	mount := unique("approle")
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &vaultapi.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "astro-sts-writer", writerPolicy); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/astro-sts", map[string]any{
		"token_policies": []string{"astro-sts-writer"},
		"token_ttl":      "5m",
	}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().ReadWithContext(ctx, "auth/"+mount+"/role/astro-sts/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/astro-sts/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	roleID, secretID := rid.Data["role_id"].(string), sid.Data["secret_id"].(string)
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}

	base := sink.VaultConfig{Addr: v.Addr, Auth: sink.VaultAuthAppRole, AuthMount: mount, RoleID: roleID}
	with := func(f func(*sink.VaultConfig)) sink.VaultConfig { c := base; f(&c); return c }
	tests := []struct {
		name    string
		cfg     sink.VaultConfig
		wantErr error
	}{
		{"secret id", with(func(c *sink.VaultConfig) { c.SecretID = secret.Value(secretID) }), nil},
		{"secret id file", with(func(c *sink.VaultConfig) { c.SecretIDFile = secretFile }), nil},
		{"wrong secret id", with(func(c *sink.VaultConfig) { c.SecretID = "00000000-0000-0000-0000-000000000000" }), sink.ErrDenied},
		{"wrong role id", with(func(c *sink.VaultConfig) { c.RoleID = "nope"; c.SecretID = secret.Value(secretID) }), sink.ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := sink.NewVaultClient(ctxT(t), tt.cfg, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("login = %v, want %v", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), secretID) {
					t.Errorf("error leaks the secret id: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if client.Token() == "" || client.Token() == v.RootToken {
				t.Fatal("the client holds no login token")
			}
			path := unique("astro/approle")
			s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: path, Field: "token"})
			if got, err := s.Write(ctxT(t), "via-approle", sink.Metadata{TokenID: "id"}); err != nil || got != "1" {
				t.Fatalf("Write = %q, %v", got, err)
			}
			data, _ := readBack(t, v, path)
			if data["token"] != "via-approle" {
				t.Errorf("data %v", data)
			}
		})
	}
}

// The jwt method logs in with the broker's own identity token. Vault's jwt
// method is configured with the test's public key, so the login is verified
// for real. The kubernetes method sends the same {role, jwt} body to
// auth/<mount>/login; a real kubernetes backend would need a Kubernetes API
// to review the token, so it is exercised here against a jwt backend mounted
// under another name, which proves the request shape and the file handling.
func TestVaultJWTLogin(t *testing.T) {
	v := needVault(t)
	ctx := ctxT(t)
	root := v.Client()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	if err := root.Sys().PutPolicyWithContext(ctx, "astro-sts-writer", writerPolicy); err != nil {
		t.Fatal(err)
	}
	const issuer = "https://broker.astro-sts.test"
	mount := func(name string) string {
		m := unique(name)
		if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, m, &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
			t.Fatal(err)
		}
		if _, err := root.Logical().WriteWithContext(ctx, "auth/"+m+"/config", map[string]any{
			"jwt_validation_pubkeys": []string{pubPEM},
			"bound_issuer":           issuer,
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := root.Logical().WriteWithContext(ctx, "auth/"+m+"/role/astro-sts", map[string]any{
			"role_type":       "jwt",
			"bound_audiences": []string{"vault"},
			"user_claim":      "sub",
			"token_policies":  []string{"astro-sts-writer"},
			"token_ttl":       "5m",
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	jwtFile := func(k *rsa.PrivateKey) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		tok, err := jwt.Signed(signer).Claims(jwt.Claims{
			Issuer: issuer, Subject: "astro-sts-broker", Audience: jwt.Audience{"vault"},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
		}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "id.jwt")
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	jwtMount, k8sMount := mount("jwt"), mount("kubernetes")
	goodFile, badFile := jwtFile(key), jwtFile(other)

	tests := []struct {
		name    string
		cfg     sink.VaultConfig
		wantErr error
	}{
		{"jwt", sink.VaultConfig{Auth: sink.VaultAuthJWT, AuthMount: jwtMount, Role: "astro-sts", JWTFile: goodFile}, nil},
		{"kubernetes request shape", sink.VaultConfig{Auth: sink.VaultAuthKubernetes, AuthMount: k8sMount, Role: "astro-sts", JWTFile: goodFile}, nil},
		{"jwt signed by another key", sink.VaultConfig{Auth: sink.VaultAuthJWT, AuthMount: jwtMount, Role: "astro-sts", JWTFile: badFile}, sink.ErrDenied},
		{"unknown role", sink.VaultConfig{Auth: sink.VaultAuthJWT, AuthMount: jwtMount, Role: "nope", JWTFile: goodFile}, sink.ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Addr = v.Addr
			client, err := sink.NewVaultClient(ctxT(t), tt.cfg, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("login = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: unique("astro/jwt"), Field: "token"})
			if _, err := s.Write(ctxT(t), "via-jwt", sink.Metadata{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func ExampleNewVaultSink() {
	ctx := context.Background()
	// The sinks' section of the configuration (internal/config), from
	// VAULT_ADDR and the ASTRO_STS_VAULT_* variables.
	cfg := sink.VaultConfig{
		Addr:         "https://vault.example.com:8200",
		Auth:         sink.VaultAuthAppRole,
		RoleID:       "astro-sts",
		SecretIDFile: "/run/secrets/vault-secret-id",
	}
	if err := cfg.Validate(); err != nil {
		return
	}
	client, err := sink.NewVaultClient(ctx, cfg, nil) // logs in
	if err != nil {
		return
	}
	s := sink.NewVaultSink(client, sink.VaultTarget{Mount: "secret", Path: "astro/airflow-ci", Field: "token"})
	version, err := s.Write(ctx, "<new Astro token>", sink.Metadata{TokenID: "clx...", Strategy: "rotate", RotatedAt: time.Now()})
	if errors.Is(err, sink.ErrUnavailable) || errors.Is(err, sink.ErrConflict) {
		return // retry later
	}
	_ = version // the KV version now holding the token
}
