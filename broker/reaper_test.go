package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// countingAstro counts the reaper's calls as they reach Astro (below the
// broker's bound): the deletes in flight, and the most at any one time.
type countingAstro struct {
	broker.Astro
	inFlight, peak atomic.Int64
	lists, deletes atomic.Int64
	failDeletes    atomic.Bool
}

func (c *countingAstro) DeleteToken(ctx context.Context, org, id string) error {
	c.deletes.Add(1)
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if c.failDeletes.Load() {
		return errors.New("astro api: DELETE /organizations/{organizationId}/tokens/{tokenId}: injected failure")
	}
	return c.Astro.DeleteToken(ctx, org, id)
}

func (c *countingAstro) ListTokensPage(ctx context.Context, org string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error) {
	c.lists.Add(1)
	return c.Astro.ListTokensPage(ctx, org, opts, offset, limit)
}

// seedMarked creates n tokens carrying the broker's marker with the given
// deadline, as many at once as Astro's latency makes worthwhile, and
// returns their ids.
func seedMarked(t *testing.T, e *testEnv, n int, deadline time.Time) []string {
	t.Helper()
	ids := make([]string, n)
	desc := broker.Marker{Deadline: deadline, RepositoryID: "123456", RunID: "1", RunAttempt: "1", Rule: "deploy-main"}.Description("seeded")
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 200)
	days := 1
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tok, err := e.astroOrg.CreateToken(context.Background(), e.emu.OrganizationID(), astro.CreateTokenRequest{
				Name: fmt.Sprintf("seeded %d", i), Description: desc, Role: astro.RoleWorkspaceMember,
				Scope: astro.ScopeWorkspace, EntityID: e.emu.WorkspaceIDs()[0], TokenExpiryPeriodInDays: &days,
			})
			if err != nil {
				errs <- err
				return
			}
			ids[i] = tok.ID
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("seed: %v", err)
	}
	return ids
}

// markedLeft counts the tokens in Astro that carry the broker's marker.
func markedLeft(e *testEnv) int {
	n := 0
	for _, tok := range e.emu.Tokens() {
		if _, ok := broker.ParseMarker(tok.Description); ok {
			n++
		}
	}
	return n
}

// The reaper's bound: with Astro slow (20 ms per call) and 3,000 expired
// tokens (mixed with live ones, on several pages), the reaper deletes every
// one in its first pass, with the bounded concurrency it was given, and
// goes on reaping afterwards. The pass needs several intervals' worth of
// deletes (3,000 x 20 ms / 32 = 1.9 s against 500 ms), so a reaper whose
// pass had a deadline of one interval leaves tokens behind; one that
// deletes one at a time never has more than one delete in flight. The test sends the ticks
// itself, so each pass is the one it is waiting for and no time goes to
// waiting for a ticker.
func TestReaperKeepsUpWithALargeSlowOrganization(t *testing.T) {
	expired, live := 3000, 600
	if testing.Short() {
		expired, live = 300, 60
	}
	const latency = 20 * time.Millisecond
	const reapConc = 32
	counter := &countingAstro{}
	ticks := make(chan time.Time, 1)
	e := newEnv(t, envOptions{
		emulator:  emulator.Config{Latency: latency},
		wrapAstro: func(a broker.Astro) broker.Astro { counter.Astro = a; return counter },
		configure: func(c *broker.Config) {
			c.AstroConcurrency = 2 * reapConc
			c.ReapConcurrency = reapConc
			c.ReapTicks = ticks
		},
	})
	now := e.clock.Now()
	gone := seedMarked(t, e, expired/2, now.Add(-time.Minute))
	kept := seedMarked(t, e, live, now.Add(time.Hour))
	gone = append(gone, seedMarked(t, e, expired-expired/2, now.Add(-time.Second))...)

	const interval = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); e.broker.RunReaper(ctx, interval) }()
	defer func() { cancel(); <-done }()

	// One tick, one pass: wait for its summary line, then check.
	ticks <- e.clock.Now()
	waitForLog(t, e, `"msg":"reaper pass"`, 3*time.Minute)
	elapsed := time.Since(start)
	t.Logf("%d expired tokens among %d at %v per call, %d deletes in flight: the first pass ended %v after its tick (the bound needs %v); %d list calls, peak %d deletes in flight",
		expired, expired+live, latency, reapConc, elapsed.Round(100*time.Millisecond), time.Duration(expired)*latency/reapConc, counter.lists.Load(), counter.peak.Load())
	if left := markedLeft(e); left != live {
		t.Fatalf("%d marked tokens left after the first pass, want the %d live ones", left, live)
	}
	for _, id := range gone[:3] {
		if _, err := e.astroToken(id); err == nil {
			t.Errorf("expired token %s survived", id)
		}
	}
	for _, id := range kept[:3] {
		if _, err := e.astroToken(id); err != nil {
			t.Errorf("live token %s: %v", id, err)
		}
	}
	if p := counter.peak.Load(); p > reapConc {
		t.Errorf("%d deletes in flight at once, bound %d", p, reapConc)
	} else if p < reapConc/2 {
		// Thousands of deletes of 20 ms each fill every slot unless the
		// pass sends them (nearly) one at a time.
		t.Errorf("at most %d deletes in flight at once: the pass did not use its concurrency of %d", p, reapConc)
	}
	if strings.Contains(e.logs.String(), "reaper pass incomplete") {
		t.Errorf("a pass failed:\n%s", lastLines(e.logs.String(), 5))
	}

	// The reaper goes on: tokens that expire later are reaped by a later
	// pass.
	e.clock.Advance(2 * time.Hour)
	testwait.Until(t, 3*time.Minute, "no broker token left", func() bool {
		// A tick sent while the last pass was ending may be dropped as
		// one that fell during it: offer one at every check.
		select {
		case ticks <- e.clock.Now():
		default:
		}
		return markedLeft(e) == 0
	})
	if d := counter.deletes.Load(); d != int64(expired+live) {
		t.Errorf("%d deletes sent for %d tokens: some were deleted twice", d, expired+live)
	}
}

// A pass whose deletes all fail logs one short line with a count and the
// first few errors, not one line per token.
func TestReaperSummarizesErrors(t *testing.T) {
	counter := &countingAstro{}
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { counter.Astro = a; return counter }})
	seedMarked(t, e, 50, e.clock.Now().Add(-time.Minute))
	counter.failDeletes.Store(true)
	n, err := e.broker.Reap(context.Background())
	if n != 0 || err == nil {
		t.Fatalf("Reap = %d, %v; want 0 and an error", n, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "50 calls failed") || !strings.Contains(msg, "and 47 more") || len(msg) > 1000 {
		t.Errorf("error is not a short summary (%d bytes): %s", len(msg), msg)
	}
	var line string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, "reaper pass incomplete") {
			if line != "" {
				t.Fatal("more than one log line for one failed pass")
			}
			line = l
		}
	}
	if line == "" || len(line) > 2000 || !strings.Contains(line, `"failed":50`) {
		t.Errorf("summary line (%d bytes): %s", len(line), line)
	}
	if got := strings.Count(e.logs.String(), "injected failure"); got != reapErrorsKeptForTest {
		t.Errorf("the injected error appears %d times in the log, want %d (the first few)", got, reapErrorsKeptForTest)
	}
	// The next pass, with Astro well again, deletes them all.
	counter.failDeletes.Store(false)
	if n, err := e.broker.Reap(context.Background()); n != 50 || err != nil {
		t.Fatalf("second pass: %d, %v", n, err)
	}
}

// reapErrorsKeptForTest is how many errors a pass reports verbatim.
const reapErrorsKeptForTest = 3

// A pass slower than the interval does not overlap the next one: the ticks
// that fall during it are skipped and counted.
func TestReaperSkipsTicksDuringAPass(t *testing.T) {
	e := newEnv(t, envOptions{emulator: emulator.Config{Latency: 150 * time.Millisecond}})
	seedMarked(t, e, 5, e.clock.Now().Add(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.broker.RunReaper(ctx, 20*time.Millisecond) }()
	waitForLog(t, e, "ticks skipped", time.Minute)
	cancel()
	<-done
	m := metricsText(t, e)
	if !strings.Contains(m, "astro_sts_reap_skipped_ticks_total ") || strings.Contains(m, "astro_sts_reap_skipped_ticks_total 0\n") {
		t.Errorf("skipped ticks not counted:\n%s", grepLines(m, "astro_sts_reap"))
	}
	for _, name := range []string{"astro_sts_reap_duration_seconds_count", "astro_sts_reap_expired_tokens 0", "astro_sts_reap_most_overdue_seconds 0"} {
		if !strings.Contains(m, name) {
			t.Errorf("metrics lack %s", name)
		}
	}
}

// The metrics of a pass say how many expired tokens it found and how
// overdue the worst was.
func TestReaperMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	seedMarked(t, e, 4, e.clock.Now().Add(-90*time.Second))
	seedMarked(t, e, 2, e.clock.Now().Add(-10*time.Second))
	if n, err := e.broker.Reap(context.Background()); n != 6 || err != nil {
		t.Fatalf("Reap = %d, %v", n, err)
	}
	m := metricsText(t, e)
	for _, want := range []string{"astro_sts_reap_expired_tokens 6", "astro_sts_reap_most_overdue_seconds 90", `astro_sts_reaped_tokens_total{outcome="deleted"} 6`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(m, "astro_sts_reap"))
		}
	}
}

func metricsText(t *testing.T, e *testEnv) string {
	t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// waitForLog waits until the broker's log holds substr; limit only guards
// against a hang.
func waitForLog(t *testing.T, e *testEnv, substr string, limit time.Duration) {
	t.Helper()
	testwait.Until(t, limit, fmt.Sprintf("%q in the broker's log", substr), func() bool { return strings.Contains(e.logs.String(), substr) })
}

// A policy file that stops loading shows in /metrics and /readyz (which
// stays ready: the last good policy decides), and clears when it is fixed.
func TestPolicyHealthIsVisible(t *testing.T) {
	e := newEnv(t, envOptions{})
	policies := e.policies
	m := metricsText(t, e)
	for _, want := range []string{"astro_sts_policy_reload_ok 1", "astro_sts_policy_rules 3"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(m, "astro_sts_policy"))
		}
	}
	good, err := os.ReadFile(e.policy)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.policy, []byte("rules: [{name: r}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := policies.Reload(); err == nil {
		t.Fatal("a bad policy loaded")
	}
	if m := metricsText(t, e); !strings.Contains(m, "astro_sts_policy_reload_ok 0\n") || !strings.Contains(m, "astro_sts_policy_rules 3\n") {
		t.Errorf("a failed reload does not show:\n%s", grepLines(m, "astro_sts_policy"))
	}
	status, body := getText(t, e.url+"/readyz")
	if status != http.StatusOK || !strings.Contains(body, "the policy file does not load") {
		t.Errorf("readyz with a broken policy file: %d %q", status, body)
	}
	if err := os.WriteFile(e.policy, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := policies.Reload(); err != nil {
		t.Fatal(err)
	}
	if m := metricsText(t, e); !strings.Contains(m, "astro_sts_policy_reload_ok 1\n") {
		t.Errorf("the fix does not show:\n%s", grepLines(m, "astro_sts_policy"))
	}
	if status, body := getText(t, e.url+"/readyz"); status != http.StatusOK || body != "ready\n" {
		t.Errorf("readyz after the fix: %d %q", status, body)
	}
	if !strings.Contains(e.logs.String(), "policy file good again") {
		t.Error("the recovery was not logged")
	}
}

func getText(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// With every Astro slot taken, exchanges queue, but /readyz still asks
// Astro and answers ready: busy is not unready.
func TestBusyBrokerIsReady(t *testing.T) {
	g := newGated()
	e := newEnv(t, envOptions{
		wrapAstro: func(a broker.Astro) broker.Astro { g.Astro = a; return g },
		configure: func(c *broker.Config) { c.AstroConcurrency = 1 },
	})
	go e.post("/v1/exchange", e.mint(mainClaims()), "")
	<-g.made // the one slot is taken
	status, body := getText(t, e.url+"/readyz")
	close(g.release)
	if status != http.StatusOK {
		t.Errorf("readyz while busy: %d %q", status, body)
	}
	if m := metricsText(t, e); !strings.Contains(m, "astro_sts_upstream_wait_seconds_count") {
		t.Error("no wait histogram")
	}
}

// peakCreates counts creates in flight below the broker's bound.
type peakCreates struct {
	broker.Astro
	inFlight, peak atomic.Int64
}

func (p *peakCreates) CreateToken(ctx context.Context, org string, req astro.CreateTokenRequest) (*astro.Token, error) {
	n := p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	for {
		old := p.peak.Load()
		if n <= old || p.peak.CompareAndSwap(old, n) {
			break
		}
	}
	return p.Astro.CreateToken(ctx, org, req)
}

// A burst of exchanges queues in the broker: never more Astro calls in
// flight than the bound, and every exchange is served.
func TestBurstQueuesWithinTheBound(t *testing.T) {
	pc := &peakCreates{}
	e := newEnv(t, envOptions{
		emulator:  emulator.Config{Latency: 50 * time.Millisecond},
		wrapAstro: func(a broker.Astro) broker.Astro { pc.Astro = a; return pc },
		configure: func(c *broker.Config) { c.AstroConcurrency = 2 },
	})
	var wg sync.WaitGroup
	statuses := make(chan int, 12)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := mainClaims()
			c.RunID = fmt.Sprint(2000 + i)
			st, _, _ := e.post("/v1/exchange", e.mint(c), "")
			statuses <- st
		}()
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusOK {
			t.Errorf("exchange in a burst: %d", st)
		}
	}
	if p := pc.peak.Load(); p > 2 {
		t.Errorf("%d creates in flight at once, bound 2", p)
	}
}
