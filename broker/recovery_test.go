package broker_test

import (
	"context"
	"fmt"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
)

// countedAstro counts the listings and can fail creates the way an
// overloaded Astro does: a 503, after which the broker cannot know whether
// the token was made.
type countedAstro struct {
	broker.Astro
	lists atomic.Int64
	fail  atomic.Bool
	// listing, if set, is told of each listing, which then waits for
	// release.
	listing chan struct{}
	release chan struct{}
}

func (c *countedAstro) CreateToken(ctx context.Context, org string, req astro.CreateTokenRequest) (*astro.Token, error) {
	if c.fail.Load() {
		return nil, &astro.APIError{StatusCode: http.StatusServiceUnavailable, Message: "Service Unavailable"}
	}
	return c.Astro.CreateToken(ctx, org, req)
}

func (c *countedAstro) ListTokensPage(ctx context.Context, org string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error) {
	c.lists.Add(1)
	if c.listing != nil {
		select {
		case c.listing <- struct{}{}:
		default:
		}
		<-c.release
	}
	return c.Astro.ListTokensPage(ctx, org, opts, offset, limit)
}

func notFound(t *testing.T, e *testEnv) int {
	n := 0
	for _, r := range undeliveredOutcomes(t, e) {
		if r["outcome"] == "not_found" {
			n++
		}
	}
	return n
}

// Many creates with an unknown outcome in an organization with many recent
// tokens: the search for their tokens shares its listings, and costs at
// most a few per failed create (it cost up to 40 each: four looks of up to
// ten pages, each create on its own).
func TestRecoveryListingsAreBounded(t *testing.T) {
	c := &countedAstro{}
	e := newEnv(t, envOptions{
		wrapAstro: func(a broker.Astro) broker.Astro { c.Astro = a; return c },
		configure: func(cfg *broker.Config) {
			// The window is then three Astro timeouts (3 s): the old search
			// had time for all its looks.
			cfg.AstroTimeout = time.Second
			cfg.RecoveryWindow = 900 * time.Millisecond
		},
	})
	// 1,100 tokens made over the last four minutes, as a busy organization
	// has.
	days := 1
	for i := range 1100 {
		if i%5 == 0 {
			e.clock.Advance(time.Second)
		}
		if _, err := e.astroOrg.CreateToken(context.Background(), e.emu.OrganizationID(), astro.CreateTokenRequest{
			Name: fmt.Sprintf("other-%d", i), Scope: astro.ScopeWorkspace, EntityID: e.emu.WorkspaceIDs()[0],
			Role: astro.RoleWorkspaceMember, TokenExpiryPeriodInDays: &days,
		}); err != nil {
			t.Fatal(err)
		}
	}
	c.fail.Store(true)
	const failed = 5
	var wg sync.WaitGroup
	for i := range failed {
		cl := mainClaims()
		cl.RunID = fmt.Sprint(1000 + i)
		tok := e.mint(cl)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, b, _ := e.post("/v1/exchange", tok, ""); status != http.StatusBadGateway && status != http.StatusServiceUnavailable {
				t.Errorf("exchange with a failed create: %d %s", status, b)
			}
		}()
	}
	wg.Wait()
	testwait.Until(t, 30*time.Second, "the search for every failed create to end", func() bool { return notFound(t, e) == failed })
	lists := c.lists.Load()
	t.Logf("%d listings for %d failed creates", lists, failed)
	if lists > 5*failed {
		t.Errorf("%d listings for %d failed creates, want at most 5 each", lists, failed)
	}
}

// The search for a create's token does not take the Astro call slots that
// exchanges wait on: with one slot and a listing that does not answer, an
// exchange still gets its token.
func TestExchangesDoNotQueueBehindRecovery(t *testing.T) {
	c := &countedAstro{listing: make(chan struct{}, 1), release: make(chan struct{})}
	e := newEnv(t, envOptions{
		wrapAstro: func(a broker.Astro) broker.Astro { c.Astro = a; return c },
		configure: func(cfg *broker.Config) {
			cfg.AstroConcurrency = 1
			cfg.RequestTimeout = 2 * time.Second
		},
	})
	defer close(c.release)
	c.fail.Store(true)
	if status, b, _ := e.post("/v1/exchange", e.mint(mainClaims()), ""); status != http.StatusBadGateway && status != http.StatusServiceUnavailable {
		t.Fatalf("exchange with a failed create: %d %s", status, b)
	}
	<-c.listing // the search is listing, and the listing hangs
	c.fail.Store(false)
	cl := mainClaims()
	cl.RunID = "988"
	if status, b, _ := e.post("/v1/exchange", e.mint(cl), ""); status != http.StatusOK {
		t.Fatalf("exchange while the search lists: %d %s, want 200", status, b)
	}
}

// lateCreate is an Astro that makes the token late: the broker's call
// times out, and the token appears after delay, as a slow Astro finishes
// a create its caller gave up on.
type lateCreate struct {
	broker.Astro
	delay time.Duration
	made  chan string
}

func (l lateCreate) CreateToken(ctx context.Context, org string, req astro.CreateTokenRequest) (*astro.Token, error) {
	go func() {
		time.Sleep(l.delay) // Astro's own slowness, not a synchronisation
		tok, err := l.Astro.CreateToken(context.Background(), org, req)
		if err != nil {
			l.made <- ""
			return
		}
		l.made <- tok.ID
	}()
	<-ctx.Done()
	return nil, fmt.Errorf("astro: POST /tokens: %w", ctx.Err())
}

// A token that Astro makes three times the Astro timeout after the create
// was sent, and, scaled down 100 times, the four tokens of the action's
// four attempts, each made 31 s after its create: the search goes on long
// enough to find them all and delete them, rather than stopping at 1.75
// times the Astro timeout and leaving them to live their TTL.
func TestRecoveryOutlastsASlowAstro(t *testing.T) {
	for _, tc := range []struct {
		late     time.Duration
		attempts int
	}{{300 * time.Millisecond, 1}, {310 * time.Millisecond, 4}} {
		t.Run(fmt.Sprintf("%v/%d", tc.late, tc.attempts), func(t *testing.T) {
			l := lateCreate{delay: tc.late, made: make(chan string, tc.attempts)}
			e := newEnv(t, envOptions{
				wrapAstro: func(a broker.Astro) broker.Astro { l.Astro = a; return l },
				configure: func(cfg *broker.Config) {
					cfg.AstroTimeout = 100 * time.Millisecond
					cfg.RequestTimeout = time.Second
					cfg.RecoveryWindow = 900 * time.Millisecond // 90 s scaled down 100 times
				},
			})
			for range tc.attempts {
				// Each attempt with a fresh ID token, as the action's.
				if status, b, _ := e.post("/v1/exchange", e.mint(mainClaims()), ""); status == http.StatusOK {
					t.Fatalf("exchange with a late create: %d %s", status, b)
				}
			}
			made := map[string]bool{}
			for range tc.attempts {
				id := <-l.made
				if id == "" {
					t.Fatal("a late create failed")
				}
				made[id] = true
			}
			testwait.Until(t, 30*time.Second, "an outcome for every attempt", func() bool { return len(undeliveredOutcomes(t, e)) == tc.attempts })
			for _, r := range undeliveredOutcomes(t, e) {
				if r["outcome"] != "deleted" || !made[fmt.Sprint(r["token_id"])] {
					t.Errorf("undelivered record: %v", r)
				}
			}
			for id := range made {
				if _, err := e.astroToken(id); err == nil {
					t.Errorf("the late token %s still exists", id)
				}
			}
		})
	}
}
