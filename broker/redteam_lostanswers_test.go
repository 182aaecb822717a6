package broker_test

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// Many creates whose answers are lost, each of which made a token: the
// search finds them all in one listing, and deletes them one at a time in
// its lane, at Astro's latency: how long after its create is the last
// one deleted?
func TestRedTeamManyFoundTokensDeletedOneAtATime(t *testing.T) {
	n := 1000
	if s := os.Getenv("RT_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	e := newEnv(t, envOptions{
		emulator:  emulator.Config{Latency: 100 * time.Millisecond},
		wrapAstro: func(a broker.Astro) broker.Astro { return lostCreate{a} },
	})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	toks := make([]string, n)
	for i := range n {
		c := mainClaims()
		c.RunID = fmt.Sprint(9000 + i)
		toks[i] = e.mint(c)
	}
	start := time.Now()
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			e.post("/v1/exchange", toks[i], "")
		}()
	}
	wg.Wait()
	sent := time.Since(start)
	testwait.Until(t, 150*time.Second, "every token deleted", func() bool {
		d := 0
		for _, r := range undeliveredOutcomes(t, e) {
			if r["outcome"] == "deleted" || r["outcome"] == "not_found" {
				d++
			}
		}
		return d >= n
	})
	t.Logf("%d creates with lost answers sent within %v; all %d searches ended %v after the first create (Astro latency 100 ms); tokens still alive: %d", n, sent, n, time.Since(start), len(e.emu.Tokens())-1)
	if time.Since(start)-sent > 90*time.Second {
		t.Fatal("found tokens were deleted too slowly: the last lived past 90 s after its create")
	}
}
