package store

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/astro-sts/astro-sts/internal/idtoken"
)

// keyPrefix starts every key the broker writes, so that it can share a
// Redis with others (an ACL can confine it to ~astro-sts:* and ~rate:astro-sts:*).
const keyPrefix = "astro-sts:"

// DefaultTimeout bounds each Redis command (and each connection attempt)
// when [RedisConfig.Timeout] is 0: a broker whose Redis is gone answers
// 503 within about this long instead of holding requests.
const DefaultTimeout = time.Second

// RedisConfig configures [NewRedis].
type RedisConfig struct {
	// URL is redis://[user[:password]@]host[:port][/db], or rediss:// for
	// TLS. It must carry no query: timeouts and retries are the broker's.
	URL string
	// Password, if set, is the password (from a file); the URL must then
	// carry none.
	Password string
	// RootCAs verifies a rediss:// server; nil means the system's roots.
	RootCAs *x509.CertPool
	// Owner names this replica in the leases it takes (and in the replay
	// entries it writes), for an operator reading Redis; "" means
	// hostname/pid/random.
	Owner string
	// Timeout bounds each command; 0 means [DefaultTimeout].
	Timeout time.Duration
	// Now is the clock for replay entries' expiry; nil means time.Now.
	Now func() time.Time
}

// String hides the password, in the field and in the URL.
func (c RedisConfig) String() string {
	return fmt.Sprintf("store.RedisConfig{URL: %q, Password: %s, Owner: %q, Timeout: %s}", RedactURL(c.URL), redact(c.Password), c.Owner, c.Timeout)
}

// GoString is [RedisConfig.String], for %#v.
func (c RedisConfig) GoString() string { return c.String() }

// LogValue keeps the password out of structured logs.
func (c RedisConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", RedactURL(c.URL)), slog.String("password", redact(c.Password)), slog.String("owner", c.Owner))
}

func redact(secret string) string {
	if secret == "" {
		return `""`
	}
	return "[redacted]"
}

// RedactURL returns raw with any password replaced, for logs; a string
// that is not a URL with a host (which could hold a password anywhere) is
// hidden whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" {
		return "[not a URL with a host]"
	}
	return u.Redacted()
}

// Redis is the store shared by every replica, in Redis or Valkey.
//
//   - Replay: SET key NX with an expiry at the token's exp plus
//     [idtoken.MaxLeeway], key astro-sts:replay:<sha256(issuer, jti)>.
//   - Rate limits: go-redis/redis_rate's GCRA script, atomic in Redis and
//     timed by Redis's own clock, so the replicas' clocks do not matter;
//     key rate:astro-sts:<key>.
//   - Lease: SET key owner NX PX ttl to take it; renewing and releasing
//     are Lua compare-and-set scripts, so only the owner can do either;
//     key astro-sts:lease:<name>.
//
// Any error reaching Redis is [ErrUnavailable]. The client reconnects by
// itself: once Redis is back, so is the broker.
type Redis struct {
	client  *redis.Client
	limiter *redis_rate.Limiter
	owner   string
	now     func() time.Time
}

// NewRedis checks cfg and returns a store. It does not connect: a broker
// may start while Redis is down (it is not ready until Redis answers).
func NewRedis(cfg RedisConfig) (*Redis, error) {
	opts, err := RedisOptions(cfg.URL, cfg.Password)
	if err != nil {
		return nil, err
	}
	if opts.TLSConfig != nil && cfg.RootCAs != nil {
		opts.TLSConfig.RootCAs = cfg.RootCAs
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	opts.DialTimeout = timeout
	opts.ReadTimeout = timeout
	opts.WriteTimeout = timeout
	opts.PoolTimeout = 2 * timeout
	opts.ContextTimeoutEnabled = true
	// No retries inside the client: a SET NX retried after a lost answer
	// would find its own entry and call the token a replay. The caller
	// (the action) retries a 503 with a fresh ID token.
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	// No CLIENT SETINFO or MAINT_NOTIFICATIONS at connect: an ACL user
	// confined to the broker's keys need not be allowed them, and Valkey
	// and older Redis do not know the latter.
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

	owner := cfg.Owner
	if owner == "" {
		owner = defaultOwner()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	c := redis.NewClient(opts)
	return &Redis{client: c, limiter: redis_rate.NewLimiter(c), owner: owner, now: now}, nil
}

// RedisOptions parses a redis:// or rediss:// URL strictly: host required,
// database a number, no query or fragment. password, if set, must be the
// only password. Errors never quote the URL: it may hold a password.
func RedisOptions(raw, password string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	switch {
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return nil, fmt.Errorf("scheme %q: want redis:// or rediss:// (TLS)", u.Scheme)
	case u.Opaque != "" || u.Hostname() == "":
		return nil, errors.New("no host: want redis://host:6379")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("a query or fragment is not allowed (timeouts and retries are the broker's)")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("the port is not a number from 1 to 65535")
		}
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 || strings.Contains(db, "/") {
			return nil, fmt.Errorf("path %q: want /N, a database number", u.Path)
		}
	}
	_, hasPassword := u.User.Password()
	if password != "" && hasPassword {
		return nil, errors.New("a password both in the URL and from the password file: keep one")
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, errors.New("not a valid Redis URL")
	}
	if password != "" {
		opts.Password = password
	}
	return opts, nil
}

func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(b)
}

// Owner is the name this store writes into the leases it takes.
func (r *Redis) Owner() string { return r.owner }

// Use implements [Store.Use] with SET NX and an expiry at exp plus
// [idtoken.MaxLeeway]: the entry lives exactly as long as the token could
// still verify.
func (r *Redis) Use(ctx context.Context, issuer, jti string, exp time.Time) error {
	if jti == "" {
		return fmt.Errorf("%w: no jti", idtoken.ErrBadClaims)
	}
	ttl := exp.Add(idtoken.MaxLeeway).Sub(r.now())
	if ttl <= 0 {
		return fmt.Errorf("%w: expired", idtoken.ErrExpired)
	}
	// Redis expiries have a millisecond resolution: round up, never
	// forget a token early.
	ttl = ttl.Truncate(time.Millisecond) + time.Millisecond
	ok, err := r.client.SetNX(ctx, replayKey(issuer, jti), r.owner, ttl).Result()
	if err != nil {
		return unavailable("replay", err)
	}
	if !ok {
		return fmt.Errorf("%w: used before (shared store), issuer %s", idtoken.ErrReplayed, issuer)
	}
	return nil
}

// Used implements [Store.Used] with a GET of the replay entry: the
// command the entry's writer already may run (see docs/operations.md's
// ACL), and nothing written.
func (r *Redis) Used(ctx context.Context, issuer, jti string) (bool, error) {
	err := r.client.Get(ctx, replayKey(issuer, jti)).Err()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, unavailable("replay", err)
	}
	return true, nil
}

// replayKey is the key of the token (issuer, jti)'s replay entry.
func replayKey(issuer, jti string) string { return keyPrefix + "replay:" + Key(issuer, jti) }

// Allow implements [Store.Allow] with redis_rate's GCRA script.
func (r *Redis) Allow(ctx context.Context, key string, l Limit) (Verdict, error) {
	if err := l.Validate(); err != nil {
		return Verdict{}, err
	}
	res, err := r.limiter.Allow(ctx, keyPrefix+key, redis_rate.Limit{Rate: l.Rate, Period: l.Period, Burst: l.Burst})
	if err != nil {
		return Verdict{}, unavailable("rate limit", err)
	}
	v := Verdict{Allowed: res.Allowed > 0, Remaining: res.Remaining}
	if !v.Allowed {
		v.RetryAfter = max(res.RetryAfter, 0)
	}
	return v, nil
}

// renewLease extends the lease only if this owner holds it.
var renewLease = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
`)

// releaseLease deletes the lease only if this owner holds it.
var releaseLease = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
`)

// Lease implements [Store.Lease]: renew it if this owner holds it, else
// take it if it is free (SET NX PX).
func (r *Redis) Lease(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("store: lease ttl %s is under a millisecond", ttl)
	}
	key := keyPrefix + "lease:" + name
	n, err := renewLease.Run(ctx, r.client, []string{key}, r.owner, ttl.Milliseconds()).Int()
	if err != nil {
		return false, unavailable("lease", err)
	}
	if n == 1 {
		return true, nil
	}
	ok, err := r.client.SetNX(ctx, key, r.owner, ttl).Result()
	if err != nil {
		return false, unavailable("lease", err)
	}
	return ok, nil
}

// ReleaseLease implements [Store.ReleaseLease] with a compare-and-delete.
func (r *Redis) ReleaseLease(ctx context.Context, name string) error {
	err := releaseLease.Run(ctx, r.client, []string{keyPrefix + "lease:" + name}, r.owner).Err()
	return unavailable("lease", err)
}

// Ping implements [Store.Ping].
func (r *Redis) Ping(ctx context.Context) error {
	return unavailable("ping", r.client.Ping(ctx).Err())
}

// Shared implements [Store.Shared]: every replica sees the same Redis.
func (r *Redis) Shared() bool { return true }

// Close implements [Store.Close].
func (r *Redis) Close() error { return r.client.Close() }
