package broker_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
)

// barrierAstro holds every token create until n of them are in flight at
// once, then lets them all through.
type barrierAstro struct {
	broker.Astro
	arrived chan struct{}
	release chan struct{}
}

func (b *barrierAstro) CreateToken(ctx context.Context, org string, req astro.CreateTokenRequest) (*astro.Token, error) {
	b.arrived <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.Astro.CreateToken(ctx, org, req)
}

// TestNoLockAcrossTheUpstreamCall: n exchanges can all be waiting on
// Astro at the same time. If anything in the broker (the replay guard, the
// policy reloader, the verifier's key cache, the logger) were held across the
// token create, the second create could not start before the first ended,
// the barrier would never fill, and the exchanges would stay blocked. This
// is what lets throughput grow with concurrency against a slow Astro
// (BenchmarkSlowUpstream in internal/testkit/loadtest measures that).
func TestNoLockAcrossTheUpstreamCall(t *testing.T) {
	const n = 8
	b := &barrierAstro{arrived: make(chan struct{}, n), release: make(chan struct{})}
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { b.Astro = a; return b }})
	toks := make([]string, n)
	for i := range toks {
		toks[i] = e.mint(mainClaims()) // a fresh jti each
	}

	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i, tok := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _, _ = e.post("/v1/exchange", tok, "")
		}()
	}
	// Not a measure of speed: a guard that turns a deadlock into a failure.
	guard := time.NewTimer(time.Minute)
	defer guard.Stop()
	for got := 0; got < n; got++ {
		select {
		case <-b.arrived:
		case <-guard.C:
			t.Errorf("only %d of %d token creates were in flight at once: something serializes them", got, n)
			got = n
		}
	}
	close(b.release)
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Errorf("exchange %d: status %d", i, st)
		}
	}
}
