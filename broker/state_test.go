package broker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
)

// testRedis is the package's one redis-server, started by TestMain when
// the binary exists.
var testRedis = redistest.PackageServer()

func TestMain(m *testing.M) {
	testRedis.Main(m)
}

// redisStore returns a maker of stores on the package's redis-server,
// emptied, or skips the test when there is none (TestMain has already
// failed the run in CI).
func redisStore(t *testing.T) (func(now func() time.Time) store.Store, *redistest.Server) {
	t.Helper()
	srv := testRedis.Need(t)
	return storesOn(t, srv), srv
}

// storesOn returns a maker of stores on srv, each on the clock now and
// closed when the test ends.
func storesOn(t *testing.T, srv *redistest.Server) func(now func() time.Time) store.Store {
	return func(now func() time.Time) store.Store {
		s, err := store.NewRedis(store.RedisConfig{URL: srv.URL(), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

// limitedPolicy is samplePolicy with rate limits: a default of one token
// an hour, two a minute on deploy-main, none on deployment-only.
func limitedPolicy(ws, deps []string) string {
	p := samplePolicy(ws, deps)
	p = strings.Replace(p, "\nrules:\n", "\nrate_limit: {rate: 1/h}\nrules:\n", 1)
	p = strings.Replace(p, "      max_ttl: 30m\n", "      max_ttl: 30m\n    rate_limit: {rate: 2/m}\n", 1)
	p = strings.Replace(p, "      max_ttl: 10m\n", "      max_ttl: 10m\n    rate_limit: none\n", 1)
	return p
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, envOptions{policy: limitedPolicy})
	exchange := func(workflow string) (int, string, http.Header) {
		t.Helper()
		claims := mainClaims()
		claims.Workflow = workflow
		if workflow != "deploy" {
			// Not a push to main: deploy-main does not match.
			claims.Ref = "refs/heads/feature"
		}
		st, body, h := e.post("/v1/exchange", e.mint(claims), "")
		code := ""
		if st != http.StatusOK {
			code, _ = errorCode(t, body)
		}
		return st, code, h
	}

	// deploy-main: two a minute. A replayed token is refused before the
	// limit, so it costs the repository nothing.
	tok := e.mint(mainClaims())
	if st, body, _ := e.post("/v1/exchange", tok, ""); st != http.StatusOK {
		t.Fatalf("first exchange: %d %s", st, body)
	}
	if st, _, _ := e.post("/v1/exchange", tok, ""); st != http.StatusUnauthorized {
		t.Fatalf("replay: %d, want 401", st)
	}
	if st, code, _ := exchange("deploy"); st != http.StatusOK {
		t.Fatalf("second exchange: %d %s", st, code)
	}
	st, code, h := exchange("deploy")
	if st != http.StatusTooManyRequests || code != "rate_limited" {
		t.Fatalf("third exchange: %d %s, want 429 rate_limited", st, code)
	}
	// One token's worth comes back every 30 s.
	if ra := h.Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After %q, want 30", ra)
	}
	e.clock.Advance(30 * time.Second)
	if st, code, _ := exchange("deploy"); st != http.StatusOK {
		t.Errorf("after Retry-After: %d %s, want 200", st, code)
	}

	// both-workspaces: the default, one an hour, a budget of its own.
	if st, code, _ := exchange("preview"); st != http.StatusOK {
		t.Fatalf("preview: %d %s", st, code)
	}
	st, code, h = exchange("preview")
	if st != http.StatusTooManyRequests || h.Get("Retry-After") != "3600" {
		t.Errorf("second preview: %d %s Retry-After %q, want 429 after 3600", st, code, h.Get("Retry-After"))
	}

	// deployment-only: none lifts the default.
	for i := range 4 {
		if st, code, _ := exchange("deploy-only"); st != http.StatusOK {
			t.Fatalf("deploy-only #%d: %d %s", i, st, code)
		}
	}

	if n := len(e.emu.Tokens()); n != 3+1+4+1 { // 3 deploy-main, 1 preview, 4 deploy-only, and the owner's
		t.Errorf("%d tokens in the organization, want 9: a refused exchange mints nothing", n)
	}
	m := e.metrics()
	for _, want := range []string{
		`astro_sts_rate_limited_total{rule="deploy-main"} 1`,
		`astro_sts_rate_limited_total{rule="both-workspaces"} 1`,
		`astro_sts_exchanges_total{outcome="rate_limited",rule="deploy-main"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var limited int
	for _, rec := range e.audits("exchange") {
		if r, _ := rec["reason"].(string); strings.HasPrefix(r, "rate limited") {
			limited++
			if rec["outcome"] != "deny" || rec["rule"] == nil || rec["repository_id"] != "123456" {
				t.Errorf("rate-limited audit record %v: want outcome deny, the rule and the repository", rec)
			}
		}
	}
	if limited != 2 {
		t.Errorf("%d audit records of a rate-limited exchange, want 2", limited)
	}
}

// TestDryRunStore: a dry run answers as the exchange of the same token
// would, as far as it can without acting: a spent token is replayed, on
// one replica or on another sharing its Redis; an unspent one stays
// unspent however often it is dry-run. And a dry run takes nothing from
// the rate limit: trying a workflow must not cost it a deploy.
func TestDryRunStore(t *testing.T) {
	stores := map[string]func(t *testing.T) func(now func() time.Time) store.Store{
		"memory": func(*testing.T) func(now func() time.Time) store.Store {
			return func(now func() time.Time) store.Store { return memStore(1000, now) }
		},
		"redis": func(t *testing.T) func(now func() time.Time) store.Store {
			rs, _ := redisStore(t)
			return rs
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{store: open(t), policy: limitedPolicy})
			dryRun := func(tok string) (int, brokerapi.ErrorBody) {
				t.Helper()
				st, body, _ := e.post("/v1/exchange?dry_run=true", tok, "")
				if st == http.StatusOK {
					return st, brokerapi.ErrorBody{}
				}
				return st, errorBody(t, body)
			}

			spent := e.mint(mainClaims())
			if st, body, _ := e.post("/v1/exchange", spent, ""); st != http.StatusOK {
				t.Fatalf("exchange: %d %s", st, body)
			}
			if st, eb := dryRun(spent); st != http.StatusUnauthorized || eb.Error != brokerapi.CodeTokenInvalid || eb.Reason != brokerapi.ReasonReplayed {
				t.Errorf("dry run of a spent token: %d %+v, want 401 token_invalid/replayed", st, eb)
			}

			// deploy-main allows two a minute; one is spent above. Dry
			// runs take none of the other.
			fresh := e.mint(mainClaims())
			for i := range 3 {
				if st, eb := dryRun(fresh); st != http.StatusOK {
					t.Fatalf("dry run #%d of an unspent token: %d %+v", i, st, eb)
				}
			}
			if st, body, _ := e.post("/v1/exchange", fresh, ""); st != http.StatusOK {
				t.Fatalf("exchange after dry runs: %d %s; a dry run spent the token or the budget", st, body)
			}
			if st, body, _ := e.post("/v1/exchange", e.mint(mainClaims()), ""); st != http.StatusTooManyRequests {
				t.Errorf("third exchange in the minute: %d %s, want 429: dry runs must not refill the budget either", st, body)
			}
			m := e.metrics()
			if !strings.Contains(m, `astro_sts_exchanges_total{outcome="dry_run",rule="deploy-main"} 3`) ||
				!strings.Contains(m, `astro_sts_exchanges_total{outcome="unauthorized",rule="deploy-main"} 1`) {
				t.Errorf("metrics:\n%s", grep(m, "exchanges_total"))
			}
		})
	}
}

// TestRedisDown: with the shared store gone, exchange and revoke fail
// closed with 503 and Retry-After, nothing is minted, /readyz says why;
// when Redis is back the broker serves again by itself.
func TestRedisDown(t *testing.T) {
	rs, srv := redisStore(t)
	e := newEnv(t, envOptions{store: rs})
	ctx := context.Background()

	first := e.exchange(mainClaims(), "")
	srv.Stop()
	restarted := false
	defer func() {
		if !restarted {
			_ = srv.Restart(ctx)
		}
	}()
	before := len(e.emu.Tokens())

	st, body, h := e.post("/v1/exchange", e.mint(mainClaims()), "")
	if code, _ := errorCode(t, body); st != http.StatusServiceUnavailable || code != "store_unavailable" || h.Get("Retry-After") == "" {
		t.Errorf("exchange with Redis down: %d %s Retry-After %q; want 503 store_unavailable with Retry-After", st, code, h.Get("Retry-After"))
	}
	if n := len(e.emu.Tokens()); n != before {
		t.Errorf("%d tokens minted with Redis down", n-before)
	}
	st, body, _ = e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id": %q}`, first.TokenID))
	if code, _ := errorCode(t, body); st != http.StatusServiceUnavailable || code != "store_unavailable" {
		t.Errorf("revoke with Redis down: %d %s; want 503 store_unavailable", st, code)
	}
	// A dry run cannot tell whether the token was spent: it does not
	// guess "allow".
	st, body, _ = e.post("/v1/exchange?dry_run=true", e.mint(mainClaims()), "")
	if code, _ := errorCode(t, body); st != http.StatusServiceUnavailable || code != "store_unavailable" {
		t.Errorf("dry run with Redis down: %d %s; want 503 store_unavailable", st, code)
	}
	if _, err := e.astroToken(first.TokenID); err != nil {
		t.Errorf("the token was revoked without a replay check: %v", err)
	}
	if st, body := e.get("/readyz"); st != http.StatusServiceUnavailable || !strings.Contains(body, "shared store unreachable") {
		t.Errorf("readyz with Redis down: %d %q", st, body)
	}
	if m := e.metrics(); !strings.Contains(m, `astro_sts_store_errors_total{op="replay"} 3`) {
		t.Errorf("metrics do not count the three failed replay checks:\n%s", grep(m, "store_errors"))
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// Restarted empty, Redis lost the epoch: the first probe begins a new
	// one, and the replica is ready once tokens issued at it may be
	// served, idtoken.FutureLeeway later.
	if st, body := e.get("/readyz"); st != http.StatusServiceUnavailable {
		t.Errorf("readyz at the new epoch: %d %q, want 503 until tokens issued at it are served", st, body)
	}
	e.clock.Advance(idtoken.FutureLeeway)
	if st, body := e.get("/readyz"); st != http.StatusOK {
		t.Errorf("readyz after Redis came back: %d %q", st, body)
	}
	e.exchange(mainClaims(), "")
	if st, body, _ := e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id": %q}`, first.TokenID)); st != http.StatusNoContent {
		t.Errorf("revoke after Redis came back: %d %s", st, body)
	}
}

func (e *testEnv) get(path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
