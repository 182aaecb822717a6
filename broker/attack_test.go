package broker_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

// The public endpoint holds against anyone on the internet: any workflow
// on GitHub can get an ID token for the broker's audience and call it.
// Each test here is one attack, over HTTP against the broker with the
// emulator and a signing issuer.

// countingEnv is a broker whose emulator logs every request it serves,
// so that a test can count the Astro calls a request cost.
func countingEnv(t *testing.T, configure func(*broker.Config)) (*testEnv, func() int) {
	t.Helper()
	var astroLog syncbuf.Buffer
	e := newEnv(t, envOptions{
		emulator: emulator.Config{Logger: slog.New(slog.NewJSONHandler(&astroLog, &slog.HandlerOptions{Level: slog.LevelDebug}))},
		// A rotator, so that /v1/rotate decides rather than answer 501;
		// it fails if a rotation ever runs.
		rotator:   failingRotator{},
		configure: configure,
	})
	return e, func() int { return strings.Count(astroLog.String(), `"msg":"astro emulator request"`) }
}

// anotherRun is a run that a rule trusts but that did not mint the token
// under attack: the repository's other workflows, or a later run.
func anotherRun() issuer.Claims {
	c := mainClaims()
	c.RunID = "988"
	return c
}

// stranger is an identity that no rule trusts.
func stranger() issuer.Claims {
	c := mainClaims()
	c.Repository, c.RepositoryID = "evil/dags", "666"
	c.JobWorkflowRef = "evil/dags/.github/workflows/deploy.yml@refs/heads/main"
	return c
}

func revokeBody(id string) string { return fmt.Sprintf(`{"token_id":%q}`, id) }

// Amplifier: a revoke that asked Astro before it spent the ID token or took
// from any budget would let one ID token drive an Astro call per request.
// A stranger's revokes cost Astro nothing, and a trusted run's revokes are
// bounded by its repository's revoke budget, each spending its ID token
// first.
func TestRevokeCostsAsMuchAsAnExchange(t *testing.T) {
	const budget = 5
	e, astroCalls := countingEnv(t, func(c *broker.Config) {
		c.RevokeRateLimit = policy.RateLimit{Rate: budget, Period: time.Hour, Burst: budget}
	})

	// The attack as it was: one ID token of a repository that no rule
	// trusts, 200 revokes of made-up ids.
	before := astroCalls()
	tok := e.mint(stranger())
	for i := range 200 {
		status, body, _ := e.post("/v1/revoke", tok, revokeBody(rand.Text()))
		if status != http.StatusForbidden {
			t.Fatalf("stranger's revoke %d: %d %s, want 403 denied", i, status, body)
		}
	}
	if n := astroCalls() - before; n != 0 {
		t.Errorf("a stranger's 200 revokes made %d Astro calls, want 0", n)
	}

	// A run the policy trusts spends its ID token before Astro hears of
	// the revoke: the same token a second time is a replay.
	before = astroCalls()
	tok = e.mint(anotherRun())
	if status, body, _ := e.post("/v1/revoke", tok, revokeBody(rand.Text())); status != http.StatusNotFound {
		t.Fatalf("revoke: %d %s, want 404", status, body)
	}
	status, body, _ := e.post("/v1/revoke", tok, revokeBody(rand.Text()))
	if eb := errorBody(t, body); status != http.StatusUnauthorized || eb.Reason != brokerapi.ReasonReplayed {
		t.Fatalf("second use of the ID token: %d %s, want 401 replayed", status, body)
	}
	// And its repository's budget bounds what 200 fresh ID tokens cost.
	limited := 0
	for i := range 200 {
		status, body, _ := e.post("/v1/revoke", e.mint(anotherRun()), revokeBody(rand.Text()))
		switch status {
		case http.StatusNotFound:
		case http.StatusTooManyRequests:
			if code, _ := errorCode(t, body); code != brokerapi.CodeRateLimited {
				t.Fatalf("revoke %d: %s", i, body)
			}
			limited++
		default:
			t.Fatalf("revoke %d: %d %s", i, status, body)
		}
	}
	if want := 201 - budget; limited != want {
		t.Errorf("%d of 201 revokes rate limited, want %d", limited, want)
	}
	if n := astroCalls() - before; n > 2*budget {
		t.Errorf("201 revokes of a trusted run made %d Astro calls, want at most %d (two per revoke in its budget)", n, 2*budget)
	}
	// The budget is the revokes', not the exchanges': the repository still
	// gets its tokens.
	e.exchange(mainClaims(), "")
}

// Oracle: if a caller that did not mint a token got 403 not_owner for
// another run's real token and 204 for a made-up id, it could probe which
// token ids exist. Both get the same answer, and only the owner hears 204,
// also when its token is already revoked (the post step retrying a lost
// answer).
func TestRevokeTellsNoOneElseWhetherATokenExists(t *testing.T) {
	e, _ := countingEnv(t, nil)
	r := e.exchange(mainClaims(), "")

	for _, who := range []struct {
		name   string
		claims func() issuer.Claims
		status int
	}{
		{"a run the policy trusts", anotherRun, http.StatusNotFound},
		{"a stranger", stranger, http.StatusForbidden},
	} {
		t.Run(who.name, func(t *testing.T) {
			var answers []string
			for _, id := range []string{r.TokenID, "clmadeup" + strings.ToLower(rand.Text())} {
				status, body, _ := e.post("/v1/revoke", e.mint(who.claims()), revokeBody(id))
				eb := errorBody(t, body)
				answers = append(answers, fmt.Sprintf("%d %s/%s %s", status, eb.Error, eb.Reason, eb.Message))
			}
			if answers[0] != answers[1] {
				t.Errorf("a real token of another run and a made-up id are told apart:\n real: %s\n made up: %s", answers[0], answers[1])
			}
			if !strings.HasPrefix(answers[0], fmt.Sprint(who.status)) {
				t.Errorf("answer %s, want %d", answers[0], who.status)
			}
		})
	}
	if ok, _ := e.tokenWorks(r.Token, e.emu.WorkspaceIDs()[0]); !ok {
		t.Fatal("a refused revoke deleted the token")
	}

	// The owner: revoked, then revoked again, as the post step's retry of
	// an answer it lost would.
	for i := range 2 {
		if status, body, _ := e.post("/v1/revoke", e.mint(mainClaims()), revokeBody(r.TokenID)); status != http.StatusNoContent {
			t.Fatalf("owner's revoke %d: %d %s, want 204", i+1, status, body)
		}
	}
	// Another run still cannot tell the revoked token from a made-up id.
	status, body, _ := e.post("/v1/revoke", e.mint(anotherRun()), revokeBody(r.TokenID))
	if code, _ := errorCode(t, body); status != http.StatusNotFound || code != brokerapi.CodeNotFound {
		t.Errorf("another run's revoke of a revoked token: %d %s, want 404 not_found", status, body)
	}
}

// An identity that may not rotate gets the same 403 for a made-up rotation
// name and for a real one: a 404 for the made-up one would let it list the
// policy's rotations.
func TestRotateTellsNoNames(t *testing.T) {
	e, _ := countingEnv(t, nil)
	var answers []string
	for _, name := range []string{"airflow-ci", "no-such-rotation"} {
		status, body, _ := e.post("/v1/rotate", e.mint(mainClaims()), fmt.Sprintf(`{"name":%q}`, name))
		eb := errorBody(t, body)
		answers = append(answers, fmt.Sprintf("%d %s/%s %s", status, eb.Error, eb.Reason, eb.Message))
	}
	if answers[0] != answers[1] {
		t.Errorf("a real rotation and a made-up name are told apart:\n real: %s\n made up: %s", answers[0], answers[1])
	}
	if want := "403 denied/"; !strings.HasPrefix(answers[0], want) {
		t.Errorf("answer %s, want %s", answers[0], want)
	}
}

// net/http ignores unknown query parameters and drops a pair holding a
// ';', so a misspelt dry run would be a real exchange. Any query an
// endpoint does not take exactly is a 400, before anything else.
func TestMisspeltDryRunMintsNothing(t *testing.T) {
	e, _ := countingEnv(t, nil)
	minted := func() int { return len(e.emu.Tokens()) }
	start := minted()
	for _, tc := range []struct{ path, query, names string }{
		{"/v1/exchange", "DRY_RUN=true", `"DRY_RUN"`},
		{"/v1/exchange", "dry-run=true", `"dry-run"`},
		{"/v1/exchange", "dryrun=true", `"dryrun"`},
		{"/v1/exchange", "dry_run=true;", "';'"},
		{"/v1/exchange", "x=1;dry_run=true", "';'"},
		{"/v1/exchange", "dry_run=true&dry_run=true", `"dry_run"`},
		{"/v1/exchange", "dry_run=true&x=1", `"x"`},
		{"/v1/exchange", "dry_run=%zz", "URL encoding"},
		{"/v1/exchange", strings.Repeat("d", 5000) + "=true", `"ddd`},
		{"/v1/revoke", "dry_run=true", `"dry_run"`},
		{"/v1/rotate", "dry_run=true", `"dry_run"`},
	} {
		t.Run(tc.path+"?"+tc.query[:min(len(tc.query), 30)], func(t *testing.T) {
			tok := e.mint(mainClaims())
			body := ""
			switch tc.path {
			case "/v1/revoke":
				body = revokeBody("clsometoken")
			case "/v1/rotate":
				body = `{"name":"airflow-ci"}`
			}
			status, answer, _ := e.post(tc.path+"?"+tc.query, tok, body)
			eb := errorBody(t, answer)
			if status != http.StatusBadRequest || eb.Error != brokerapi.CodeBadRequest {
				t.Fatalf("%d %s, want 400 bad_request", status, answer)
			}
			if !strings.Contains(eb.Message, tc.names) || len(eb.Message) > 200 {
				t.Errorf("message %q does not name %s briefly", eb.Message, tc.names)
			}
			if n := minted(); n != start {
				t.Fatalf("%d tokens minted", n-start)
			}
			// Refused before the ID token was looked at: it is unspent.
			if tc.path == "/v1/exchange" {
				if status, answer, _ := e.post("/v1/exchange?dry_run=true", tok, ""); status != http.StatusOK {
					t.Errorf("the refused request spent its ID token: dry run %d %s", status, answer)
				}
			}
		})
	}
	// The one right spelling still works, both ways.
	if status, body, _ := e.post("/v1/exchange?dry_run=true", e.mint(mainClaims()), ""); status != http.StatusOK || minted() != start {
		t.Fatalf("dry run: %d %s", status, body)
	}
	if status, body, _ := e.post("/v1/exchange?dry_run=false", e.mint(mainClaims()), ""); status != http.StatusOK || minted() != start+1 {
		t.Fatalf("exchange: %d %s", status, body)
	}
}

// A 60,000-byte ttl must not come back whole in the answer or the log
// line: every input the broker echoes is cut short, in the answer and in
// every log line of the request.
func TestEchoedInputsAreBounded(t *testing.T) {
	const (
		maxAnswer  = 1024
		maxLogLine = 4096
	)
	e, _ := countingEnv(t, nil)
	long := strings.Repeat("x", 60_000)
	for _, tc := range []struct {
		name, path, query, body string
		header                  http.Header
		bearer                  string
	}{
		{name: "ttl", path: "/v1/exchange", body: fmt.Sprintf(`{"ttl":%q}`, long)},
		{name: "role", path: "/v1/exchange", body: fmt.Sprintf(`{"role":%q}`, long)},
		{name: "workspace_id", path: "/v1/exchange", body: fmt.Sprintf(`{"workspace_id":%q}`, long)},
		{name: "deployment_id", path: "/v1/exchange", body: fmt.Sprintf(`{"deployment_id":%q}`, long)},
		{name: "field name", path: "/v1/exchange", body: fmt.Sprintf(`{%q:1}`, long)},
		{name: "query parameter", path: "/v1/exchange", query: long + "=1"},
		{name: "dry_run value", path: "/v1/exchange", query: "dry_run=" + long},
		{name: "token_id", path: "/v1/revoke", body: revokeBody(long)},
		{name: "rotation name", path: "/v1/rotate", body: fmt.Sprintf(`{"name":%q}`, long)},
		{name: "request id", path: "/v1/exchange", body: `{"ttl":"forever"}`, header: http.Header{brokerapi.RequestIDHeader: {long}}},
		{name: "bearer", path: "/v1/exchange", bearer: long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bearer := tc.bearer
			if bearer == "" {
				bearer = e.mint(mainClaims())
			}
			logged := len(e.logs.String())
			u := e.url + tc.path
			if tc.query != "" {
				u += "?" + tc.query
			}
			req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			req.Header.Set("Authorization", "Bearer "+bearer)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode < 400 {
				t.Fatalf("%d %s, want a refusal", resp.StatusCode, answer)
			}
			if len(answer) > maxAnswer {
				t.Errorf("answer of %d bytes, want at most %d: %.300s...", len(answer), maxAnswer, answer)
			}
			for _, line := range bytes.Split([]byte(e.logs.String()[logged:]), []byte("\n")) {
				if len(line) > maxLogLine {
					t.Errorf("log line of %d bytes, want at most %d: %.300s...", len(line), maxLogLine, line)
				}
			}
		})
	}
}
