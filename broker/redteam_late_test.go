package broker_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// Tokens Astro makes 59, 61, 89 and 120 s late (scaled down 100 times:
// Astro timeout 100 ms, window 900 ms), eight creates at once: which are
// found and deleted by the search, and which are left alive.
func TestRedTeamLateTokensSweep(t *testing.T) {
	for _, late := range []time.Duration{590 * time.Millisecond, 610 * time.Millisecond, 890 * time.Millisecond, 1200 * time.Millisecond} {
		t.Run(fmt.Sprint(late), func(t *testing.T) {
			const n = 8
			l := lateCreate{delay: late, made: make(chan string, n)}
			e := newEnv(t, envOptions{
				wrapAstro: func(a broker.Astro) broker.Astro { l.Astro = a; return l },
				configure: func(cfg *broker.Config) {
					cfg.AstroTimeout = 100 * time.Millisecond
					cfg.RequestTimeout = time.Second
					cfg.RecoveryWindow = 900 * time.Millisecond
				},
			})
			for i := range n {
				c := mainClaims()
				c.RunID = fmt.Sprint(7000 + i)
				if status, _, _ := e.post("/v1/exchange", e.mint(c), ""); status == http.StatusOK {
					t.Fatal("exchange with a late create answered 200")
				}
			}
			made := []string{}
			for range n {
				made = append(made, <-l.made)
			}
			testwait.Until(t, 30*time.Second, "an outcome for every create", func() bool { return len(undeliveredOutcomes(t, e)) >= n })
			alive := 0
			for _, id := range made {
				if _, err := e.astroToken(id); err == nil {
					alive++
				}
			}
			outcomes := map[string]int{}
			for _, r := range undeliveredOutcomes(t, e) {
				outcomes[fmt.Sprint(r["outcome"])]++
			}
			t.Logf("late %v (x100 = %v): %d of %d alive after the search; outcomes %v", late, late*100, alive, n, outcomes)
		})
	}
}

// A shutdown with creates pending: the search looks once more at once and
// stops; a token Astro makes after that lives to its deadline, with a
// not_found record and nothing that hands it to another replica.
func TestRedTeamDrainWithPendingCreates(t *testing.T) {
	const n = 8
	l := lateCreate{delay: 300 * time.Millisecond, made: make(chan string, n)}
	e := newEnv(t, envOptions{
		wrapAstro: func(a broker.Astro) broker.Astro { l.Astro = a; return l },
		configure: func(cfg *broker.Config) {
			cfg.AstroTimeout = 100 * time.Millisecond
			cfg.RequestTimeout = time.Second
			cfg.RecoveryWindow = 900 * time.Millisecond
		},
	})
	for i := range n {
		c := mainClaims()
		c.RunID = fmt.Sprint(8000 + i)
		if status, _, _ := e.post("/v1/exchange", e.mint(c), ""); status == http.StatusOK {
			t.Fatal("exchange with a late create answered 200")
		}
	}
	start := time.Now()
	err := e.broker.Drain(context.Background())
	t.Logf("Drain returned after %v: %v", time.Since(start), err)
	made := []string{}
	for range n {
		made = append(made, <-l.made)
	}
	alive := 0
	for _, id := range made {
		if _, err := e.astroToken(id); err == nil {
			alive++
		}
	}
	outcomes := map[string]int{}
	for _, r := range undeliveredOutcomes(t, e) {
		outcomes[fmt.Sprint(r["outcome"])]++
	}
	t.Logf("SIGTERM-equivalent Drain with %d creates pending (made 30 s late, scaled): %d alive; outcomes %v", n, alive, outcomes)
	// The documented behaviour (docs/reliability.md): Drain ends the
	// search with an outcome for every pending create, and what Astro
	// makes after it is left alive for the reaper.
	if err != nil || outcomes["not_found"]+outcomes["deleted"] != n || alive > outcomes["not_found"] {
		t.Fatalf("Drain: %v; outcomes %v, %d alive; want one outcome per create and only not_found ones alive", err, outcomes, alive)
	}
}
