package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// lostCreate lets the create reach Astro, which makes the token, and then
// loses the answer the way a gateway does: a 502.
type lostCreate struct{ broker.Astro }

func (l lostCreate) CreateToken(ctx context.Context, org string, req astro.CreateTokenRequest) (*astro.Token, error) {
	if _, err := l.Astro.CreateToken(ctx, org, req); err != nil {
		return nil, err
	}
	return nil, &astro.APIError{StatusCode: http.StatusBadGateway, Message: "Bad Gateway"}
}

// refusedCreate is a create Astro refused: nothing was made.
type refusedCreate struct {
	broker.Astro
	lists *int64
	mu    *sync.Mutex
}

func (r refusedCreate) CreateToken(context.Context, string, astro.CreateTokenRequest) (*astro.Token, error) {
	return nil, &astro.APIError{StatusCode: http.StatusTooManyRequests, Message: "Too Many Requests"}
}

func (r refusedCreate) ListTokensPage(ctx context.Context, org string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error) {
	r.mu.Lock()
	*r.lists++
	r.mu.Unlock()
	return r.Astro.ListTokensPage(ctx, org, opts, offset, limit)
}

// auditRecords returns the JSON log records whose "audit" is kind.
func auditRecords(t *testing.T, e *testEnv, kind string) []map[string]any {
	t.Helper()
	return parseAudit(t, e.logs.String(), kind)
}

// undeliveredOutcomes are the "undelivered" records that say what became
// of a token: all but the records of intent written before a delete.
func undeliveredOutcomes(t *testing.T, e *testEnv) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, rec := range auditRecords(t, e, "undelivered") {
		if rec["outcome"] != "deleting" {
			out = append(out, rec)
		}
	}
	return out
}

// parseAudit returns the JSON records of logs whose "audit" is kind.
func parseAudit(t *testing.T, logs, kind string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"audit":"`+kind+`"`) {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// A create whose answer is lost (Astro made the token) answers "try again",
// and the broker finds the token by its nonce and deletes it, with an
// audit record naming it.
func TestCreateWithLostAnswerIsFoundAndDeleted(t *testing.T) {
	for _, scope := range []struct {
		name, claimsWorkflow string
	}{{"workspace", ""}, {"organization", "preview"}, {"deployment", "deploy-only"}} {
		t.Run(scope.name, func(t *testing.T) {
			e := newEnv(t, envOptions{
				wrapAstro: func(a broker.Astro) broker.Astro { return lostCreate{a} },
				configure: func(c *broker.Config) { c.AstroTimeout = 2 * time.Second },
			})
			c := mainClaims()
			body := ""
			if scope.claimsWorkflow != "" {
				c.Workflow = scope.claimsWorkflow
			}
			if scope.name == "organization" {
				body = fmt.Sprintf(`{"workspace_id":%q}`, "")
			}
			status, b, _ := e.post("/v1/exchange", e.mint(c), body)
			if status != http.StatusBadGateway {
				t.Fatalf("exchange with a lost create answer: %d %s, want 502", status, b)
			}
			testwait.Until(t, 30*time.Second, "an undelivered record", func() bool { return len(undeliveredOutcomes(t, e)) > 0 })
			recs := undeliveredOutcomes(t, e)
			if len(recs) != 1 || recs[0]["outcome"] != "deleted" || recs[0]["why"] != "create_outcome_unknown" || recs[0]["token_id"] == "" {
				t.Fatalf("undelivered records: %v", recs)
			}
			if exch := auditRecords(t, e, "exchange"); len(exch) != 1 || exch[0]["request_id"] == "" || exch[0]["request_id"] != recs[0]["request_id"] {
				t.Errorf("the undelivered record's request id %v is not the exchange's %v", recs[0]["request_id"], exch)
			}
			if left := markedLeft(e); left != 0 {
				t.Errorf("%d broker tokens left in Astro", left)
			}
			if !strings.Contains(metricsText(t, e), `astro_sts_undelivered_tokens_total{outcome="deleted",why="create_outcome_unknown"} 1`) {
				t.Error("not counted")
			}
		})
	}
}

// A create Astro refused (a 429) made nothing: the broker does not go
// looking for a token.
func TestRefusedCreateIsNotSearched(t *testing.T) {
	var lists int64
	var mu sync.Mutex
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { return refusedCreate{a, &lists, &mu} }})
	if err := e.broker.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	status, b, _ := e.post("/v1/exchange", e.mint(mainClaims()), "")
	if status != http.StatusTooManyRequests {
		t.Fatalf("%d %s", status, b)
	}
	if err := e.broker.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if lists != 0 || len(auditRecords(t, e, "undelivered")) != 0 {
		t.Errorf("%d listings and %v after a refused create", lists, auditRecords(t, e, "undelivered"))
	}
}

// A create slower than the broker's Astro timeout: Astro makes the token,
// the broker answers "try again" within its request deadline, and then
// finds the token and deletes it.
func TestSlowCreateIsFoundAndDeleted(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *broker.Config) {
		c.AstroTimeout = 300 * time.Millisecond
		c.RequestTimeout = time.Second
	}})
	e.emu.SlowAnswers(5 * time.Second)
	status, b, _ := e.post("/v1/exchange", e.mint(mainClaims()), "")
	e.emu.SlowAnswers(0)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("exchange with a slow Astro: %d %s, want 503", status, b)
	}
	var eb brokerapi.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error != brokerapi.CodeUpstreamUnavailable || eb.Reason != brokerapi.ReasonTimeout {
		t.Errorf("answer %s: want %s/%s", b, brokerapi.CodeUpstreamUnavailable, brokerapi.ReasonTimeout)
	}
	if err := e.broker.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := undeliveredOutcomes(t, e)
	if len(recs) != 1 || recs[0]["outcome"] != "deleted" {
		t.Fatalf("undelivered records: %v\n%s", recs, lastLines(e.logs.String(), 10))
	}
	if left := markedLeft(e); left != 0 {
		t.Errorf("%d broker tokens left in Astro", left)
	}
}

// gatedCreate makes the token, tells the test, and holds the answer until
// released: the test decides what happens to the caller meanwhile.
type gatedCreate struct {
	broker.Astro
	made    chan string
	release chan struct{}
	// untilGone holds the answer until the request's context has ended
	// (the server noticed the caller hang up, or the request's deadline
	// passed), after release.
	untilGone bool
}

func (g gatedCreate) CreateToken(ctx context.Context, org string, req astro.CreateTokenRequest) (*astro.Token, error) {
	tok, err := g.Astro.CreateToken(context.WithoutCancel(ctx), org, req)
	if err != nil {
		return nil, err
	}
	g.made <- tok.ID
	<-g.release
	if g.untilGone {
		<-ctx.Done()
	}
	return tok, nil
}

func newGated() gatedCreate {
	return gatedCreate{made: make(chan string, 1), release: make(chan struct{})}
}

// A caller who hangs up after the token was made, before the answer: the
// broker deletes the token and says so.
func TestCallerGoneTokenIsDeleted(t *testing.T) {
	g := newGated()
	g.untilGone = true
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { g.Astro = a; return g }})
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/exchange", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.mint(mainClaims()))
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	id := <-g.made
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	close(g.release)
	testwait.Until(t, 10*time.Second, "an undelivered record", func() bool { return len(undeliveredOutcomes(t, e)) > 0 })
	recs := undeliveredOutcomes(t, e)
	if len(recs) != 1 || recs[0]["token_id"] != id || recs[0]["why"] != "caller_gone" || recs[0]["outcome"] != "deleted" {
		t.Fatalf("undelivered records: %v", recs)
	}
	if _, err := e.astroToken(id); err == nil {
		t.Error("the undelivered token still exists")
	}
}

// An answer ready after the request's deadline is not sent: the caller
// gets "try again" and the token is deleted.
func TestAnswerPastTheDeadlineIsNotSent(t *testing.T) {
	g := newGated()
	g.untilGone = true // the answer is ready only once the deadline has passed
	e := newEnv(t, envOptions{
		wrapAstro: func(a broker.Astro) broker.Astro { g.Astro = a; return g },
		configure: func(c *broker.Config) { c.RequestTimeout = 200 * time.Millisecond },
	})
	close(g.release)
	status, b, _ := e.post("/v1/exchange", e.mint(mainClaims()), "")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want 503", status, b)
	}
	recs := undeliveredOutcomes(t, e)
	if len(recs) != 1 || recs[0]["why"] != "caller_gone" {
		t.Fatalf("undelivered records: %v", recs)
	}
	if left := markedLeft(e); left != 0 {
		t.Errorf("%d broker tokens left", left)
	}
}

// At shutdown, an exchange that outlives the grace period is cut off, and
// what it minted is deleted before Drain returns.
func TestShutdownDeletesLateMints(t *testing.T) {
	g := newGated()
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { g.Astro = a; return g }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := e.broker.HTTPServer()
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String()
	statusc := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/exchange", nil)
		req.Header.Set("Authorization", "Bearer "+e.mint(mainClaims()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			statusc <- 0
			return
		}
		resp.Body.Close()
		statusc <- resp.StatusCode
	}()
	id := <-g.made

	grace, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(grace); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the grace to run out", err)
	}
	srv.Close() // cuts the exchange off: its context ends
	close(g.release)
	if err := e.broker.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := <-statusc; st == http.StatusOK {
		t.Error("the cut-off exchange was answered 200")
	}
	recs := undeliveredOutcomes(t, e)
	if len(recs) != 1 || recs[0]["token_id"] != id {
		t.Fatalf("undelivered records: %v", recs)
	}
	if _, err := e.astroToken(id); err == nil {
		t.Error("the late mint survived the shutdown")
	}
}

// Drain gives up when its context ends and says how much is left.
func TestDrainIsBounded(t *testing.T) {
	g := newGated()
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { g.Astro = a; return g }})
	go e.post("/v1/exchange", e.mint(mainClaims()), "")
	<-g.made
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.broker.Drain(ctx); err == nil || !strings.Contains(err.Error(), "1 operations") {
		t.Errorf("Drain = %v, want one operation left", err)
	}
	close(g.release)
	if err := e.broker.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// sharedMemory is the memory store claiming to be shared, as Redis is:
// what it remembers would outlive a restart.
type sharedMemory struct{ *store.Memory }

func (sharedMemory) Shared() bool { return true }

// After a restart, an ID token issued before it (which may have been used
// before it) is refused with a "try again"; a fresh one is accepted. With
// a replay store that survives restarts the rule does not apply.
func TestRestartDoesNotReopenReplay(t *testing.T) {
	var started time.Time
	e := newEnv(t, envOptions{configure: func(c *broker.Config) {
		started = c.Now().Add(2 * time.Second)
		c.Started = started
	}})
	before := e.mint(mainClaims()) // issued before the broker "started"
	status, b, h := e.post("/v1/exchange", before, "")
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") != "1" {
		t.Fatalf("exchange with a token issued before the start: %d %s (Retry-After %q)", status, b, h.Get("Retry-After"))
	}
	if code, _ := errorCode(t, b); code != "restarted" {
		t.Errorf("code %s", code)
	}
	if st, _, _ := e.post("/v1/revoke", before, `{"token_id":"clsomething"}`); st != http.StatusServiceUnavailable {
		t.Errorf("revoke with a token issued before the start: %d", st)
	}
	// Issued after the start by the issuer's clock, which may be ahead of
	// the broker's by up to idtoken.FutureLeeway: it may have been used
	// just before the restart, so it is refused too.
	ahead := mainClaims()
	ahead.IssuedAt = started.Add(time.Second)
	if st, _, _ := e.post("/v1/exchange", e.mint(ahead), ""); st != http.StatusServiceUnavailable {
		t.Fatalf("exchange with a token issued %s after the start, by a clock ahead of the broker's: %d, want 503", time.Second, st)
	}
	e.clock.Advance(2*time.Second + idtoken.FutureLeeway)
	e.exchange(mainClaims(), "") // a fresh token: accepted
	if !strings.Contains(metricsText(t, e), `astro_sts_exchanges_total{outcome="unavailable",rule=""} 2`) {
		t.Errorf("the refusal is not counted as unavailable:\n%s", grepLines(metricsText(t, e), "astro_sts_exchanges_total"))
	}

	shared := newEnv(t, envOptions{
		store:     func(now func() time.Time) store.Store { return sharedMemory{store.NewMemory(10, now)} },
		configure: func(c *broker.Config) { c.Started = c.Now().Add(2 * time.Second) },
	})
	shared.exchange(mainClaims(), "")
}

// watchedDelete keeps what the log said when each delete was sent.
type watchedDelete struct {
	broker.Astro
	logs func() string
	// sent receives the log as it was when the delete was sent.
	sent chan string
	fail bool // refuse the delete, as an Astro that cannot be reached
}

func (w watchedDelete) DeleteToken(ctx context.Context, org, id string) error {
	w.sent <- w.logs()
	if w.fail {
		return &astro.APIError{StatusCode: http.StatusServiceUnavailable, Message: "Service Unavailable"}
	}
	return w.Astro.DeleteToken(ctx, org, id)
}

// The record of intent (token, request, why) is in the log before the
// delete of an undelivered token is sent, and the outcome's after it: a
// broker killed between the delete and its outcome's record leaves a gone
// token with a record naming it, not a gone token without one.
func TestUndeliveredIntentIsRecordedBeforeTheDelete(t *testing.T) {
	for _, tt := range []struct {
		name    string
		fail    bool
		outcome string
	}{
		{"delete succeeds", false, "deleted"},
		{"delete fails", true, "delete_failed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var e *testEnv
			w := watchedDelete{logs: func() string { return e.logs.String() }, sent: make(chan string, 1), fail: tt.fail}
			e = newEnv(t, envOptions{
				wrapAstro: func(a broker.Astro) broker.Astro { w.Astro = lostCreate{a}; return w },
				configure: func(c *broker.Config) { c.AstroTimeout = 2 * time.Second },
			})
			if status, b, _ := e.post("/v1/exchange", e.mint(mainClaims()), ""); status != http.StatusBadGateway {
				t.Fatalf("exchange with a lost create answer: %d %s, want 502", status, b)
			}
			before := parseAudit(t, <-w.sent, "undelivered")
			if err := e.broker.Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			exch := auditRecords(t, e, "exchange")
			if len(exch) != 1 {
				t.Fatalf("exchange records: %v", exch)
			}
			if len(before) != 1 || before[0]["outcome"] != "deleting" || before[0]["why"] != "create_outcome_unknown" ||
				before[0]["token_id"] == "" || before[0]["request_id"] != exch[0]["request_id"] {
				t.Fatalf("when the delete was sent, the log's undelivered records were %v; want the intent alone, with the token, why and the exchange's request id %v", before, exch[0]["request_id"])
			}
			var got []string
			for _, rec := range auditRecords(t, e, "undelivered") {
				if rec["token_id"] != before[0]["token_id"] || rec["request_id"] != before[0]["request_id"] {
					t.Errorf("record %v is not of the token and request of the intent", rec)
				}
				got = append(got, rec["outcome"].(string))
			}
			if want := []string{"deleting", tt.outcome}; !slices.Equal(got, want) {
				t.Errorf("undelivered outcomes in the log: %v, want %v", got, want)
			}
			// The metrics count what became of a token, not the intent.
			m := metricsText(t, e)
			if !strings.Contains(m, `astro_sts_undelivered_tokens_total{outcome="`+tt.outcome+`",why="create_outcome_unknown"} 1`) || strings.Contains(m, `outcome="deleting"`) {
				t.Errorf("metrics:\n%s", grepLines(m, "astro_sts_undelivered_tokens_total"))
			}
		})
	}
}
