package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/skew"
	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// TestRedisReplayAcrossReplicas: two stores on one Redis are two replicas;
// a token used on one is refused on the other, and on a replica started
// later (a restart).
func TestRedisReplayAcrossReplicas(t *testing.T) {
	srv := needRedis(t)
	a, b := newRedis(t, srv.URL()), newRedis(t, srv.URL())
	ctx := context.Background()
	exp := time.Now().Add(5 * time.Minute)
	if err := a.Use(ctx, "https://iss", "j", time.Now(), exp); err != nil {
		t.Fatal(err)
	}
	if err := b.Use(ctx, "https://iss", "j", time.Now(), exp); !errors.Is(err, store.ErrReplayed) {
		t.Errorf("Use on the second replica = %v, want ErrReplayed", err)
	}
	a.Close()
	later := newRedis(t, srv.URL())
	if err := later.Use(ctx, "https://iss", "j", time.Now(), exp); !errors.Is(err, store.ErrReplayed) {
		t.Errorf("Use after a restart = %v, want ErrReplayed", err)
	}
	if !a.Shared() || store.NewMemory(0, nil).Shared() {
		t.Error("Shared: want true for Redis, false for memory")
	}
}

// TestRedisReplayEntry: the entry names neither issuer nor jti, and lives
// until exp plus the leeway, no longer.
func TestRedisReplayEntry(t *testing.T) {
	srv := needRedis(t)
	s := newRedis(t, srv.URL())
	ctx := context.Background()
	exp := time.Now().Add(5 * time.Minute)
	if err := s.Use(ctx, "https://token.actions.githubusercontent.com", "secret-looking-jti", time.Now(), exp); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	keys, err := c.Keys(ctx, "astro-sts:replay:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := "astro-sts:replay:" + store.Key("https://token.actions.githubusercontent.com", "secret-looking-jti")
	if len(keys) != 1 || keys[0] != want {
		t.Fatalf("keys %q, want [%s]", keys, want)
	}
	ttl, err := c.PTTL(ctx, want).Result()
	if err != nil {
		t.Fatal(err)
	}
	full := 5*time.Minute + skew.Max
	if ttl > full || ttl < full-10*time.Second {
		t.Errorf("entry expires in %s, want about %s (exp plus leeway)", ttl, full)
	}
	if v, _ := c.Get(ctx, want).Result(); v != s.Owner() {
		t.Errorf("entry holds %q, want the owner %q", v, s.Owner())
	}
}

// TestRedisLease: one owner at a time; only the owner renews or releases;
// an expired lease goes to whoever asks next.
func TestRedisLease(t *testing.T) {
	srv := needRedis(t)
	ctx := context.Background()
	a, err := store.NewRedis(store.RedisConfig{URL: srv.URL(), Owner: "replica-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.NewRedis(store.RedisConfig{URL: srv.URL(), Owner: "replica-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	lease := func(s *store.Redis, ttl time.Duration) bool {
		t.Helper()
		held, err := s.Lease(ctx, "reaper", ttl)
		if err != nil {
			t.Fatal(err)
		}
		return held
	}
	c := srv.Client()
	defer c.Close()

	if !lease(a, time.Minute) {
		t.Fatal("a could not take a free lease")
	}
	if lease(b, time.Minute) {
		t.Fatal("b took a lease a holds")
	}
	if !lease(a, time.Minute) {
		t.Fatal("a could not renew its own lease")
	}
	// b's release must not free a's lease.
	if err := b.ReleaseLease(ctx, "reaper"); err != nil {
		t.Fatal(err)
	}
	if owner, _ := c.Get(ctx, "astro-sts:lease:reaper").Result(); owner != "replica-a" {
		t.Fatalf("after b's release the lease is held by %q, want replica-a", owner)
	}
	if err := a.ReleaseLease(ctx, "reaper"); err != nil {
		t.Fatal(err)
	}
	if !lease(b, time.Minute) {
		t.Fatal("b could not take the lease a released")
	}
	// Renewing sets the expiry again, only for the owner.
	if !lease(b, 30*time.Second) {
		t.Fatal("b could not renew")
	}
	if ttl, _ := c.PTTL(ctx, "astro-sts:lease:reaper").Result(); ttl > 30*time.Second || ttl < 25*time.Second {
		t.Errorf("renewed lease expires in %s, want about 30s", ttl)
	}
	// A holder that stops renewing (dies) loses the lease at its expiry.
	if err := b.ReleaseLease(ctx, "reaper"); err != nil {
		t.Fatal(err)
	}
	if !lease(a, 100*time.Millisecond) {
		t.Fatal("a could not take the free lease")
	}
	testwait.Until(t, 10*time.Second, "b to take the lease a let expire", func() bool { return lease(b, time.Minute) })
	if lease(a, time.Minute) {
		t.Error("a still holds the lease after it expired and b took it")
	}
}

// TestRedisUnavailable: with Redis gone every operation fails with
// ErrUnavailable (never a replay verdict, never allowed), and the same
// store works again once Redis is back.
func TestRedisUnavailable(t *testing.T) {
	srv := needRedis(t)
	s := newRedis(t, srv.URL())
	ctx := context.Background()
	l := store.Limit{Rate: 10, Period: time.Minute, Burst: 10}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	restarted := false
	defer func() {
		if !restarted {
			_ = srv.Restart(ctx)
		}
	}()

	exp := time.Now().Add(5 * time.Minute)
	if err := s.Use(ctx, "https://iss", "j", time.Now(), exp); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Use = %v, want ErrUnavailable", err)
	}
	if v, err := s.Allow(ctx, "k", l); !errors.Is(err, store.ErrUnavailable) || v.Allowed {
		t.Errorf("Allow = %+v, %v; want not allowed, ErrUnavailable", v, err)
	}
	if held, err := s.Lease(ctx, "reaper", time.Minute); !errors.Is(err, store.ErrUnavailable) || held {
		t.Errorf("Lease = %v, %v; want false, ErrUnavailable", held, err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping = %v, want ErrUnavailable", err)
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// The restart lost the epoch (TestReplayAfterRestart shows what that
	// refuses): an aged one stands in, so that what this shows is the
	// same store reconnecting, not a new epoch waited out.
	agedEpoch(t, store.RedisConfig{URL: srv.URL()})
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after Redis came back: %v", err)
	}
	if err := s.Use(ctx, "https://iss", "j", time.Now(), exp); err != nil {
		t.Errorf("Use after Redis came back: %v", err)
	}
}

func TestRedisPasswordAndACL(t *testing.T) {
	bin, ok := redistest.Binary()
	if !ok {
		needRedis(t) // skips or fails as the package's server would
	}
	ctx := context.Background()
	pw := redistest.RandomPassword()

	t.Run("requirepass, password from a file", func(t *testing.T) {
		srv, err := redistest.Start(ctx, bin, redistest.Options{Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		url := "redis://" + srv.Addr
		agedEpoch(t, store.RedisConfig{URL: url, Password: pw})
		s, err := store.NewRedis(store.RedisConfig{URL: url, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Ping(ctx); err != nil {
			t.Errorf("with the password: %v", err)
		}
		wrong, err := store.NewRedis(store.RedisConfig{URL: url, Password: "wrong"})
		if err != nil {
			t.Fatal(err)
		}
		defer wrong.Close()
		err = wrong.Ping(ctx)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("with a wrong password: %v, want ErrUnavailable", err)
		}
		if err != nil && strings.Contains(err.Error(), "wrong") {
			t.Errorf("error %q shows the password", err)
		}
	})
	t.Run("ACL user and password in the URL", func(t *testing.T) {
		srv, err := redistest.Start(ctx, bin, redistest.Options{User: "astro-sts", Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		s := newRedis(t, srv.URL())
		if err := s.Use(ctx, "https://iss", "j", time.Now(), time.Now().Add(time.Minute)); err != nil {
			t.Errorf("as the ACL user: %v", err)
		}
	})
}

func TestRedisOptions(t *testing.T) {
	const pw = "s3cret-pw"
	tests := []struct {
		url, password string
		wantErr       string // "" for success
	}{
		{"redis://127.0.0.1:6379", "", ""},
		{"redis://redis", "", ""},
		{"rediss://user:" + pw + "@redis.example.com:6380/2", "", ""},
		{"redis://:" + pw + "@redis:6379/0", "", ""},
		{"redis://redis:6379", pw, ""},
		{"http://redis:6379", "", "scheme"},
		{"redis://", "", "no host"},
		{"redis:opaque", "", "no host"},
		{"redis://redis:6379/?skip_verify=true", "", "query"},
		{"rediss://:" + pw + "@redis:6379?dial_timeout=1h", "", "query"},
		{"redis://redis:6379#x", "", "fragment"},
		{"redis://redis:99999", "", "port"},
		{"redis://redis:6379/db", "", "database number"},
		{"redis://redis:6379/1/2", "", "database number"},
		{"redis://:" + pw + "@redis:6379", pw, "both"},
		{"redis://:" + pw + "@red is:6379\x7f", "", "not a URL"},
	}
	for _, tt := range tests {
		t.Run(store.RedactURL(tt.url), func(t *testing.T) {
			opts, err := store.RedisOptions(tt.url, tt.password)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("RedisOptions: %v", err)
				}
				if tt.password != "" && opts.Password != tt.password {
					t.Error("the password from the file was not used")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("RedisOptions = %v, want an error about %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestRedisTLSOptions(t *testing.T) {
	opts, err := store.RedisOptions("rediss://redis.example.com:6380", "")
	if err != nil {
		t.Fatal(err)
	}
	if opts.TLSConfig == nil || opts.TLSConfig.ServerName != "redis.example.com" || opts.TLSConfig.InsecureSkipVerify {
		t.Errorf("TLS config %+v, want verification of redis.example.com", opts.TLSConfig)
	}
	if opts, _ := store.RedisOptions("redis://redis:6379", ""); opts.TLSConfig != nil {
		t.Error("redis:// got a TLS config")
	}
}

func TestRedisConfigRedacts(t *testing.T) {
	const pw = "s3cret-pw"
	c := store.RedisConfig{URL: "redis://user:" + pw + "@redis:6379", Password: pw}
	for _, s := range []string{c.String(), fmt.Sprintf("%v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%+v", c)} {
		if strings.Contains(s, pw) {
			t.Errorf("%q shows the password", s)
		}
		if !strings.Contains(s, "redis:6379") {
			t.Errorf("%q does not show the address", s)
		}
	}
	if got := c.LogValue().String(); strings.Contains(got, pw) {
		t.Errorf("LogValue %q shows the password", got)
	}
}

// TestRedisTLS: rediss:// verifies the server against RootCAs (a private
// CA), and refuses a server the system's roots do not vouch for.
func TestRedisTLS(t *testing.T) {
	bin, ok := redistest.Binary()
	if !ok {
		needRedis(t)
	}
	ctx := context.Background()
	srv, err := redistest.Start(ctx, bin, redistest.Options{TLS: true, Password: redistest.RandomPassword()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	agedEpoch(t, store.RedisConfig{URL: srv.URL(), RootCAs: srv.CAPool()})
	s, err := store.NewRedis(store.RedisConfig{URL: srv.URL(), RootCAs: srv.CAPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Errorf("over TLS with the CA: %v", err)
	}
	if err := s.Use(ctx, "https://iss", "j", time.Now(), time.Now().Add(time.Minute)); err != nil {
		t.Errorf("over TLS with the CA: %v", err)
	}

	untrusted, err := store.NewRedis(store.RedisConfig{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer untrusted.Close()
	if err := untrusted.Ping(ctx); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v, want ErrUnavailable about the certificate", err)
	}
}

// brokerACL returns the rules of the least-privileged ACL user
// docs/operations.md gives (the broker's keys, and the commands its store
// sends), read from the doc, so that the doc and the test cannot drift.
func brokerACL(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "`ACL SETUSER astro-sts on >PASSWORD "
	_, line, ok := strings.Cut(string(doc), prefix)
	if !ok {
		t.Fatalf("docs/operations.md has no %s...` line", prefix)
	}
	line, _, _ = strings.Cut(line, "`")
	rules := strings.Fields(line)
	if len(rules) < 3 {
		t.Fatalf("docs/operations.md's ACL rules are %q", rules)
	}
	return rules
}

// TestRedisLeastPrivilege: every operation works as an ACL user with only
// the rights docs/operations.md lists.
func TestRedisLeastPrivilege(t *testing.T) {
	bin, ok := redistest.Binary()
	if !ok {
		needRedis(t)
	}
	ctx := context.Background()
	srv, err := redistest.Start(ctx, bin, redistest.Options{User: "astro-sts", Password: redistest.RandomPassword(), UserRules: brokerACL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s := newRedis(t, srv.URL())
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if used, err := s.Used(ctx, "https://iss", "j", time.Now()); err != nil || used {
		t.Errorf("Used before Use: %v, %v", used, err)
	}
	if err := s.Use(ctx, "https://iss", "j", time.Now(), time.Now().Add(time.Minute)); err != nil {
		t.Errorf("Use: %v", err)
	}
	if used, err := s.Used(ctx, "https://iss", "j", time.Now()); err != nil || !used {
		t.Errorf("Used after Use: %v, %v", used, err)
	}
	if err := s.Use(ctx, "https://iss", "j", time.Now(), time.Now().Add(time.Minute)); !errors.Is(err, store.ErrReplayed) {
		t.Errorf("second Use: %v, want ErrReplayed", err)
	}
	if v, err := s.Allow(ctx, "k", store.Limit{Rate: 1, Period: time.Minute, Burst: 1}); err != nil || !v.Allowed {
		t.Errorf("Allow: %+v, %v", v, err)
	}
	for i := range 2 { // take, then renew
		if held, err := s.Lease(ctx, "reaper", time.Minute); err != nil || !held {
			t.Errorf("Lease #%d: %v, %v", i, held, err)
		}
	}
	if err := s.ReleaseLease(ctx, "reaper"); err != nil {
		t.Errorf("ReleaseLease: %v", err)
	}
	// The user really is confined: another key is refused.
	c := srv.Client()
	defer c.Close()
	if err := c.Set(ctx, "other:key", "v", 0).Err(); err == nil {
		t.Error("the ACL user could write outside astro-sts:*")
	}
}

// TestRedisPingSaysTheFix: a Redis that answers but refuses the broker a
// command (an ACL without +info) is not ready, and the error names the fix
// rather than calling Redis unreachable.
func TestRedisPingSaysTheFix(t *testing.T) {
	bin, ok := redistest.Binary()
	if !ok {
		needRedis(t)
	}
	ctx := context.Background()
	var rules []string
	for _, r := range brokerACL(t) {
		if r != "+info" {
			rules = append(rules, r)
		}
	}
	srv, err := redistest.Start(ctx, bin, redistest.Options{User: "astro-sts", Password: redistest.RandomPassword(), UserRules: rules})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s, err := store.NewRedis(store.RedisConfig{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Ping(ctx)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(err.Error(), "grant") {
		t.Errorf("Ping without +info: %v, want ErrUnavailable naming NOPERM and the grant", err)
	}
}
