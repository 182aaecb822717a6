package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// caPEM makes a self-signed CA certificate in PEM.
func caPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestStoreSection(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pwFile := write("pw", "s3cret-pw\n")
	emptyFile := write("empty", "")
	caFile := write("ca.pem", caPEM(t))
	notPEM := write("ca.txt", "not a certificate")

	tests := []struct {
		name    string
		env     map[string]string
		shared  bool
		wantErr []string
	}{
		{"memory by default", nil, false, nil},
		{"redis", map[string]string{"ASTRO_STS_REDIS_URL": "redis://redis:6379"}, true, nil},
		{"rediss with user, password and CA", map[string]string{
			"ASTRO_STS_REDIS_URL": "rediss://astro-sts:s3cret-pw@redis:6380/1", "ASTRO_STS_REDIS_CA_FILE": caFile}, true, nil},
		{"password from a file", map[string]string{
			"ASTRO_STS_REDIS_URL": "redis://astro-sts@redis:6379", "ASTRO_STS_REDIS_PASSWORD_FILE": pwFile}, true, nil},
		{"password twice", map[string]string{
			"ASTRO_STS_REDIS_URL": "redis://:s3cret-pw@redis:6379", "ASTRO_STS_REDIS_PASSWORD_FILE": pwFile}, true,
			[]string{"ASTRO_STS_REDIS_URL: a password both in the URL and from the password file"}},
		{"empty password file", map[string]string{
			"ASTRO_STS_REDIS_URL": "redis://redis:6379", "ASTRO_STS_REDIS_PASSWORD_FILE": emptyFile}, true,
			[]string{"ASTRO_STS_REDIS_PASSWORD_FILE", "is empty"}},
		{"missing password file", map[string]string{
			"ASTRO_STS_REDIS_URL": "redis://redis:6379", "ASTRO_STS_REDIS_PASSWORD_FILE": filepath.Join(dir, "nope")}, true,
			[]string{"ASTRO_STS_REDIS_PASSWORD_FILE"}},
		{"not a redis URL", map[string]string{"ASTRO_STS_REDIS_URL": "https://:s3cret-pw@redis:6379"}, true,
			[]string{"ASTRO_STS_REDIS_URL: scheme"}},
		{"options in the query", map[string]string{"ASTRO_STS_REDIS_URL": "rediss://:s3cret-pw@redis:6379?skip_verify=true"}, true,
			[]string{"ASTRO_STS_REDIS_URL: a query"}},
		{"CA file without PEM", map[string]string{
			"ASTRO_STS_REDIS_URL": "rediss://redis:6380", "ASTRO_STS_REDIS_CA_FILE": notPEM}, true,
			[]string{"ASTRO_STS_REDIS_CA_FILE", "holds no PEM certificate"}},
		{"Redis settings without a URL", map[string]string{
			"ASTRO_STS_REDIS_PASSWORD_FILE": pwFile, "ASTRO_STS_REDIS_CA_FILE": caFile}, false,
			[]string{"ASTRO_STS_REDIS_PASSWORD_FILE is set but ASTRO_STS_REDIS_URL is not", "ASTRO_STS_REDIS_CA_FILE is set but"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := LoadBroker(env)
			if c.Store.Shared() != tt.shared {
				t.Errorf("Shared() = %v, want %v", c.Store.Shared(), tt.shared)
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("LoadBroker: %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("LoadBroker succeeded")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "s3cret-pw") {
					t.Errorf("error %q shows the password", err)
				}
			}
			for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
				if strings.Contains(s, "s3cret-pw") {
					t.Errorf("the configuration prints the password: %s", s)
				}
			}
		})
	}
}

func TestStoreRootCAs(t *testing.T) {
	pool, err := Store{}.RootCAs()
	if pool != nil || err != nil {
		t.Errorf("RootCAs without a file = %v, %v; want nil (the system's), nil", pool, err)
	}
}

func TestStoreRootCAsFromFile(t *testing.T) {
	pool, err := Store{RedisCAFile: "ca.pem", RedisCA: caPEM(t)}.RootCAs()
	if pool == nil || err != nil {
		t.Errorf("RootCAs = %v, %v; want a pool", pool, err)
	}
}
