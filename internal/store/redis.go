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
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/astro-sts/astro-sts/internal/skew"
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
	// Set, it also dates a recreated epoch (see [Redis]), which is
	// otherwise Redis's own TIME: tests on a fake clock set it.
	Now func() time.Time
	// Logger receives what the store finds wrong with Redis: lost data,
	// an eviction policy that may lose it, persistence off. nil discards.
	Logger *slog.Logger
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
//     [skew.Max], key astro-sts:replay:<sha256(issuer, jti)>.
//   - Rate limits: go-redis/redis_rate's GCRA script, atomic in Redis and
//     timed by Redis's own clock, so the replicas' clocks do not matter;
//     key rate:astro-sts:<key>.
//   - Lease: SET key owner NX PX ttl to take it; renewing and releasing
//     are Lua compare-and-set scripts, so only the owner can do either;
//     key astro-sts:lease:<name>.
//
// A Redis that loses data must not reopen replay, and nothing in a lone
// SET NX can tell "never used" from "used, then forgotten". So the replay
// check runs in one Lua script with an epoch, key astro-sts:epoch, no
// expiry, holding the second from which this Redis remembers every spent
// token and the run_id of the server that wrote it. When the key is gone
// (FLUSHALL, a restart without persistence, eviction) or names another
// server (a restart, a failover to a replica that may lag), the script
// writes a new epoch, rounded up to a whole second of Redis's TIME, and
// every token that may have been used before it (iat minus
// [skew.Future] before it) is refused with
// [ErrIssuedBeforeEpoch]: the memory broker's restart rule, made
// general. The store logs it and counts it ([Redis.DataLost]). An
// eviction (volatile-* policies evict replay entries and never the
// epoch) is a loss too: the epoch remembers INFO's evicted_keys, and the
// script reads it on every check. While maxmemory-policy is not
// noeviction, every replay check fails (503) in the same script, and
// [Redis.Ping] reports [ErrUnsafe].
//
// Any error reaching Redis is [ErrUnavailable]. The client reconnects by
// itself: once Redis is back, so is the broker.
type Redis struct {
	client  *redis.Client
	limiter *redis_rate.Limiter
	owner   string
	now     func() time.Time
	clock   bool // now was configured: it dates the epoch, not Redis TIME
	log     *slog.Logger

	lost   atomic.Uint64         // epochs this store recreated
	unsafe atomic.Pointer[error] // what the last Ping found unsafe; nil: nothing

	warnMu sync.Mutex
	warned map[string]bool // the Ping warnings given, each once
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
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := redis.NewClient(opts)
	return &Redis{client: c, limiter: redis_rate.NewLimiter(c), owner: owner, now: now, clock: cfg.Now != nil,
		log: log, warned: make(map[string]bool)}, nil
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

// epochKey holds the epoch: "<unix second>:<run_id>" (see [Redis]).
const epochKey = keyPrefix + "epoch"

// probeKey is what [Redis.Ping] writes to prove that Redis takes writes.
const probeKey = keyPrefix + "probe"

// epochLua defines epoch(now) for the scripts below: the epoch's second,
// 1 if this call had to write it, and Redis's maxmemory-policy. KEYS[1]
// is the epoch key; now is the second to date a new epoch with, or ""
// for Redis's TIME rounded up (a token issued within the second of the
// loss may have been spent before it; iat has a second's resolution).
//
// The epoch key holds "<second>:<run_id>:<evicted_keys>", all from INFO,
// which Redis lets a script call: a restart or a promoted replica
// changes run_id, and an eviction (of a replay entry, while the policy
// was not noeviction, however briefly) changes evicted_keys. Either is a
// loss, seen atomically with the check that would otherwise accept a
// token whose entry is gone. evicted_keys counts every database's
// evictions and CONFIG RESETSTAT zeroes it: both count as a loss too,
// which costs refusals, never a replay.
const epochLua = `
redis.replicate_commands()
local function info(section, name)
  return string.match(redis.call("INFO", section), name .. ":([^\r\n]*)")
end
local function epoch(now)
  local run = info("server", "run_id") or ""
  local evicted = info("stats", "evicted_keys") or ""
  local policy = info("memory", "maxmemory_policy") or ""
  local cur = redis.call("GET", KEYS[1])
  if cur then
    local sec, by, ev = string.match(cur, "^(%d+):(%x*):(%d*)$")
    if sec and by == run and ev == evicted then
      return tonumber(sec), 0, policy
    end
  end
  local sec
  if now ~= "" then
    sec = tonumber(now)
  else
    local t = redis.call("TIME")
    sec = tonumber(t[1])
    if tonumber(t[2]) > 0 then
      sec = sec + 1
    end
  end
  redis.call("SET", KEYS[1], string.format("%d:%s:%s", sec, run, evicted))
  return sec, 1, policy
end
-- unsafe: a policy that lets Redis evict keys, under which the script
-- refuses to check (fail closed), as Ping refuses to say ready.
local function unsafe(policy)
  return policy ~= "" and policy ~= "noeviction"
end
`

// replayLua begins both replay checks ([useScript], [usedScript]), so
// that the exchange and the dry run refuse alike: while Redis may evict
// keys (3, with the policy), and a token that may have been used before
// the epoch (2); each answer is {code, the epoch, whether it was
// recreated}, read by [Redis.runReplay]. KEYS: epoch, entry; ARGV: now,
// the first second the token may have been used (see [earliestUse]).
const replayLua = epochLua + `
local sec, created, policy = epoch(ARGV[1])
if unsafe(policy) then
  return {3, sec, created, policy}
end
if tonumber(ARGV[2]) < sec then
  return {2, sec, created}
end
`

// useScript is the replay check ([replayLua]), then SET NX the entry (1
// set, 0 a replay). ARGV after replayLua's: owner, ttl in ms.
var useScript = redis.NewScript(replayLua + `if redis.call("SET", KEYS[2], ARGV[3], "NX", "PX", ARGV[4]) then
  return {1, sec, created}
end
return {0, sec, created}
`)

// probeScript is the readiness check: the epoch, and a write that Redis
// refuses when it cannot take writes (out of memory under noeviction,
// CLIENT PAUSE WRITE, a read-only replica). KEYS: epoch, probe; ARGV:
// now, owner. It returns the epoch, whether it was recreated, and Redis's
// TIME in seconds and microseconds.
var probeScript = redis.NewScript(epochLua + `
local sec, created = epoch(ARGV[1])
redis.call("SET", KEYS[2], ARGV[2], "PX", 10000)
local t = redis.call("TIME")
return {sec, created, tonumber(t[1]), tonumber(t[2])}
`)

// epochNow is the now argument of the scripts: the configured clock's
// second rounded up, or "" for Redis's TIME.
func (r *Redis) epochNow() string {
	if !r.clock {
		return ""
	}
	t := r.now()
	sec := t.Unix()
	if t.Nanosecond() > 0 {
		sec++
	}
	return strconv.FormatInt(sec, 10)
}

// epochResult reads the epoch and "created" from a script's answer, and
// says so when this call had to recreate it.
func (r *Redis) epochResult(vals []any) (time.Time, error) {
	if len(vals) < 3 {
		return time.Time{}, fmt.Errorf("unexpected answer %v", vals)
	}
	sec, ok1 := vals[1].(int64)
	created, ok2 := vals[2].(int64)
	if !ok1 || !ok2 {
		return time.Time{}, fmt.Errorf("unexpected answer %v", vals)
	}
	epoch := time.Unix(sec, 0)
	if created == 1 {
		r.lost.Add(1)
		r.log.Error("shared store: Redis had lost the broker's data (its epoch key was gone, or written by another server, or keys were evicted since: a flush, a restart, a failover or an eviction); "+
			"a new epoch begins, and every ID token issued before it is refused with 503 restarted, so that a token spent before the loss cannot be used again; "+
			"rate-limit budgets start afresh. If it recurs, give Redis persistence (appendonly yes) and maxmemory-policy noeviction",
			"epoch", epoch.UTC().Format(time.RFC3339))
	}
	return epoch, nil
}

// DataLost is how many times this store found that Redis had lost its
// data and began a new epoch; the broker exports it as a counter.
func (r *Redis) DataLost() uint64 { return r.lost.Load() }

// Use implements [Store.Use] in one script with the epoch (see [Redis]):
// a token issued before it is [ErrIssuedBeforeEpoch]; otherwise SET NX
// with an expiry at exp plus [skew.Max], so that the entry
// lives exactly as long as the token could still verify.
func (r *Redis) Use(ctx context.Context, issuer, jti string, iat, exp time.Time) error {
	if jti == "" {
		return fmt.Errorf("%w: no jti", ErrNoJTI)
	}
	ttl := exp.Add(skew.Max).Sub(r.now())
	if ttl <= 0 {
		return fmt.Errorf("%w: expired", ErrTokenExpired)
	}
	// Redis expiries have a millisecond resolution: round up, never
	// forget a token early.
	ttl = ttl.Truncate(time.Millisecond) + time.Millisecond
	code, epoch, err := r.runReplay(ctx, useScript, issuer, jti, iat, r.owner, ttl.Milliseconds())
	if err != nil {
		return err
	}
	switch code {
	case 1:
		return nil
	case 2:
		return fmt.Errorf("%w (issued %s, epoch %s)", ErrIssuedBeforeEpoch,
			iat.UTC().Format(time.RFC3339), epoch.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("%w: used before (shared store), issuer %s", ErrReplayed, issuer)
}

// usedScript is the dry run's replay check ([replayLua]), then 1 if the
// entry exists, 0 if not. It spends nothing; like the exchange, it begins
// a new epoch where the old one is gone, so that dry runs alone cannot be
// refused for ever.
var usedScript = redis.NewScript(replayLua + `if redis.call("GET", KEYS[2]) then
  return {1, sec, created}
end
return {0, sec, created}
`)

// Used implements [Store.Used] with a script that reads the replay
// entry, and writes only a new epoch where one is due (the commands the
// entry's writer already may run: see docs/operations.md's ACL).
func (r *Redis) Used(ctx context.Context, issuer, jti string, iat time.Time) (bool, error) {
	code, epoch, err := r.runReplay(ctx, usedScript, issuer, jti, iat)
	if err != nil {
		return false, err
	}
	switch code {
	case 2:
		return false, fmt.Errorf("%w (dry run, issued %s, epoch %s)", ErrIssuedBeforeEpoch,
			iat.UTC().Format(time.RFC3339), epoch.UTC().Format(time.RFC3339))
	case 1:
		return true, nil
	}
	return false, nil
}

// runReplay runs script, one of the replay checks that begin with
// [replayLua], for the token (issuer, jti) issued at iat, with args after
// replayLua's own. It fails closed while Redis is known to be unsafe and
// when the script finds it so (code 3); otherwise it returns the script's
// code (0, 1 or 2) and the epoch.
func (r *Redis) runReplay(ctx context.Context, script *redis.Script, issuer, jti string, iat time.Time, args ...any) (int64, time.Time, error) {
	if p := r.unsafe.Load(); p != nil {
		return 0, time.Time{}, fmt.Errorf("%w: replay: %w", ErrUnavailable, *p)
	}
	argv := append([]any{r.epochNow(), earliestUse(iat)}, args...)
	vals, err := script.Run(ctx, r.client, []string{epochKey, replayKey(issuer, jti)}, argv...).Slice()
	if err != nil {
		return 0, time.Time{}, unavailable("replay", err)
	}
	epoch, err := r.epochResult(vals)
	if err != nil {
		return 0, time.Time{}, unavailable("replay", err)
	}
	code, _ := vals[0].(int64)
	if code == 3 {
		return 0, time.Time{}, unsafePolicy(vals)
	}
	return code, epoch, nil
}

// earliestUse is the first second at which a token issued at iat may
// have been used: the verifier accepts an iat up to
// [skew.Future] ahead of its clock (the issuer's may be ahead of
// it, and of Redis's). A token is refused as issued before the epoch
// while that second is before it: compared with iat itself, a token
// spent just before a loss with an iat a little in the future would be
// accepted again just after it.
func earliestUse(iat time.Time) int64 { return iat.Add(-skew.Future).Unix() }

// unsafePolicy is the error of a script that found Redis's
// maxmemory-policy not noeviction (its answer's fourth value): the check
// fails closed at once, not only from the next readiness probe, since
// keys may be evicted between two.
func unsafePolicy(vals []any) error {
	policy := "?"
	if len(vals) > 3 {
		policy = fmt.Sprint(vals[3])
	}
	return fmt.Errorf("%w: replay: %w: Redis's maxmemory-policy is %s: it may evict replay entries; set maxmemory-policy noeviction", ErrUnavailable, ErrUnsafe, policy)
}

// replayKey is the key of the token (issuer, jti)'s replay entry.
func replayKey(issuer, jti string) string { return keyPrefix + "replay:" + Key(issuer, jti) }

// Allow implements [Store.Allow] with redis_rate's GCRA script.
func (r *Redis) Allow(ctx context.Context, key string, l Limit) (Verdict, error) {
	if err := l.Validate(); err != nil {
		return Verdict{}, fmt.Errorf("store: %w", err)
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

// refundScript gives one interval back to a redis_rate GCRA budget: its
// theoretical arrival time, in seconds since 2017 as redis_rate keeps it,
// goes back by ARGV[1] seconds, and a budget whole again is deleted.
var refundScript = redis.NewScript(`
redis.replicate_commands()
local tat = redis.call("GET", KEYS[1])
if not tat then
  return 0
end
local t = redis.call("TIME")
local now = (t[1] - 1483228800) + (t[2] / 1000000)
local new = tonumber(tat) - tonumber(ARGV[1])
if new <= now then
  redis.call("DEL", KEYS[1])
  return 1
end
redis.call("SET", KEYS[1], new, "EX", math.ceil(new - now))
return 1
`)

// Refund implements [Store.Refund] on the key [Redis.Allow] uses.
func (r *Redis) Refund(ctx context.Context, key string, l Limit) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	interval := strconv.FormatFloat(l.Interval().Seconds(), 'f', -1, 64)
	// redis_rate's own prefix, before the broker's.
	err := refundScript.Run(ctx, r.client, []string{"rate:" + keyPrefix + key}, interval).Err()
	return unavailable("rate limit", err)
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

// Ping implements [Store.Ping]: INFO must show maxmemory-policy
// noeviction, and the probe script must write (so that a Redis out of
// memory or paused for writes is not ready). A new epoch is waited out
// (up to [skew.Future] and a second after it, if ctx allows; if
// not, Ping says not ready until then), so that a broker that says ready
// refuses no fresh token as issued before it.
//
// INFO refused (an ACL without +info, a managed Redis that hides it)
// would make every replay check fail too (the epoch script needs it), so
// Ping fails then; a field missing from INFO is warned about once and
// trusted to the operator.
func (r *Redis) Ping(ctx context.Context) error {
	// INFO first: a Redis that may evict keys is unsafe whether or not it
	// takes the probe's write (full under volatile-*, it may not).
	//
	// INFO's default sections hold memory and persistence; naming two
	// sections needs Redis 7.
	info, err := r.client.Info(ctx).Result()
	if err != nil {
		return unavailable("ping", withFix(err))
	}
	if err := r.checkInfo(info); err != nil {
		r.unsafe.Store(&err)
		return err
	}
	r.unsafe.Store(nil)
	vals, err := probeScript.Run(ctx, r.client, []string{epochKey, probeKey}, r.epochNow(), r.owner).Slice()
	if err != nil {
		return unavailable("ping", withFix(err))
	}
	epoch, err := r.epochResult(append([]any{nil}, vals...))
	if err != nil {
		return unavailable("ping", err)
	}
	now := r.now()
	if !r.clock && len(vals) == 4 {
		sec, _ := vals[2].(int64)
		usec, _ := vals[3].(int64)
		now = time.Unix(sec, usec*1000)
	}
	// A token issued (by Redis's clock) before epoch+FutureLeeway is
	// refused as possibly used before the epoch.
	fresh := epoch.Add(skew.Future)
	wait := fresh.Sub(now)
	if wait <= 0 {
		return nil
	}
	// On a configured clock (a test's fake one) a real sleep would not
	// bring the epoch closer: say not ready until that clock gets there.
	if d, ok := ctx.Deadline(); r.clock || ok && time.Until(d) < wait {
		return fmt.Errorf("%w: ping: Redis's data was lost and a new epoch began at %s: ID tokens issued before %s are refused (503 restarted), ready then",
			ErrUnavailable, epoch.UTC().Format(time.RFC3339), fresh.UTC().Format(time.RFC3339))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return unavailable("ping", ctx.Err())
	case <-t.C:
	}
	return nil
}

// withFix adds to an error Redis answered what to do about it, for the
// readiness log line: the broker answering is not the problem then.
func withFix(err error) error {
	var fix string
	switch {
	case redis.HasErrorPrefix(err, "NOPERM"):
		fix = "the broker's ACL user lacks a command or key: grant what docs/operations.md's ACL lists (+info, +eval, +evalsha, ...)"
	case redis.HasErrorPrefix(err, "NOREPLICAS"):
		fix = "Redis refuses writes until min-replicas-to-write replicas are connected: bring them back or lower it"
	case redis.HasErrorPrefix(err, "READONLY"):
		fix = "the URL points at a read-only replica: point it at the primary"
	case redis.HasErrorPrefix(err, "OOM"):
		fix = "Redis is full (maxmemory under noeviction): raise maxmemory"
	case redis.HasErrorPrefix(err, "NOAUTH"), redis.HasErrorPrefix(err, "WRONGPASS"):
		fix = "Redis refuses the login: check the URL's user and the password file"
	default:
		return err
	}
	return fmt.Errorf("%w (%s)", err, fix)
}

// checkInfo reads INFO's memory and persistence sections.
func (r *Redis) checkInfo(info string) error {
	field := func(name string) (string, bool) {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
				return v, true
			}
		}
		return "", false
	}
	switch policy, ok := field("maxmemory_policy"); {
	case !ok:
		r.warnOnce("policy", "shared store: INFO does not show maxmemory_policy; trusting that Redis never evicts keys (maxmemory-policy noeviction): an evicted replay entry reopens replay for its token")
	case policy != "noeviction":
		return fmt.Errorf("%w: Redis's maxmemory-policy is %s: under memory pressure it evicts keys, and an evicted replay entry lets its token be used again; "+
			"set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in its configuration)", ErrUnsafe, policy)
	}
	switch aof, ok := field("aof_enabled"); {
	case !ok:
		r.warnOnce("aof", "shared store: INFO does not show aof_enabled; trusting that Redis persists its data")
	case aof != "1":
		r.warnOnce("aof", "shared store: Redis runs without AOF persistence (appendonly no): a restart loses every replay entry and rate-limit budget; "+
			"the broker then refuses ID tokens issued before it noticed (503 restarted), so jobs retry, but run Redis with appendonly yes on a volume")
	}
	return nil
}

// warnOnce logs msg the first time key is warned about.
func (r *Redis) warnOnce(key, msg string) {
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	if r.warned[key] {
		return
	}
	r.warned[key] = true
	r.log.Warn(msg)
}

// Shared implements [Store.Shared]: every replica sees the same Redis.
func (r *Redis) Shared() bool { return true }

// Close implements [Store.Close].
func (r *Redis) Close() error { return r.client.Close() }
