package broker_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// A token Astro makes late is found only if it is among the newest
// 2,900 tokens (three pages of 1,000, less the 50 of overlap twice) when
// the search looks: in an organization that makes more tokens than that
// between the late token and the next look (about 100 a second between
// the looks at 30 and 60 s), the search never reaches it, records
// not_found, and the token lives to its TTL.
func TestRedTeamLateTokenBuriedUnderNewerTokens(t *testing.T) {
	l := lateCreate{delay: 4 * time.Second, made: make(chan string, 1)}
	e := newEnv(t, envOptions{
		wrapAstro: func(a broker.Astro) broker.Astro { l.Astro = listLog{a, t}; return l },
		configure: func(cfg *broker.Config) {
			// Long enough for a listing of 1,000 tokens under -race.
			cfg.AstroTimeout = time.Second
			cfg.RequestTimeout = 3 * time.Second
			// Looks at 0, 3.3, 10, 20 and 30 s after the create.
			cfg.RecoveryWindow = 30 * time.Second
		},
	})
	if status, b, _ := e.post("/v1/exchange", e.mint(mainClaims()), ""); status == http.StatusOK {
		t.Fatalf("exchange with a late create: %d %s", status, b)
	}
	late := <-l.made // 4 s after the create: after the look at 3.3 s
	if late == "" {
		t.Fatal("the late create failed")
	}
	// 3,000 tokens made after it, before the look at 10 s (other jobs'
	// tokens in a busy organization).
	// The emulator stamps createdAt on the test's clock: the others are
	// made 2 s after the late token, on Astro's clock.
	e.clock.Advance(2 * time.Second)
	ws := e.emu.WorkspaceIDs()[0]
	days := 1
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 3000; i += 16 {
				if _, err := e.astroOrg.CreateToken(context.Background(), e.emu.OrganizationID(), astro.CreateTokenRequest{
					Name: "other job", Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: ws, TokenExpiryPeriodInDays: &days,
				}); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("3,000 newer tokens made in %v (%d failed)", time.Since(start), failed.Load())
	testwait.Until(t, 60*time.Second, "an outcome for the late create", func() bool { return len(undeliveredOutcomes(t, e)) >= 1 })
	recs := undeliveredOutcomes(t, e)
	_, err := e.astroToken(late)
	t.Logf("outcome %v; late token still exists: %v", recs[len(recs)-1]["outcome"], err == nil)
	if err == nil {
		t.Fatal("a late token under 2,900+ newer tokens was not reached by the search: alive to its TTL")
	}
}

type listLog struct {
	broker.Astro
	t *testing.T
}

func (l listLog) ListTokensPage(ctx context.Context, org string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error) {
	p, err := l.Astro.ListTokensPage(ctx, org, opts, offset, limit)
	if err == nil {
		l.t.Logf("%s list offset=%d limit=%d got=%d total=%d", time.Now().Format("05.000"), offset, limit, len(p.Tokens), p.TotalCount)
	} else {
		l.t.Logf("list offset=%d: %v", offset, err)
	}
	return p, err
}
