package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// astroGate stands between the broker and the emulator: it counts the
// calls in flight, keeps the most it saw and the order they came in, and
// can hold the first call that matches until it is released.
type astroGate struct {
	next http.Handler

	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	arrived     []string // "METHOD path", in order of arrival
	hold        func(*http.Request) bool
	held        chan struct{} // receives once the held call is in
	release     chan struct{} // closed to let it go on
}

func (g *astroGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.inFlight++
	g.maxInFlight = max(g.maxInFlight, g.inFlight)
	g.arrived = append(g.arrived, r.Method+" "+r.URL.Path)
	hold := g.hold != nil && g.hold(r)
	if hold {
		g.hold = nil
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inFlight--
		g.mu.Unlock()
	}()
	if hold {
		g.held <- struct{}{}
		<-g.release
	}
	g.next.ServeHTTP(w, r)
}

func (g *astroGate) seen() (arrived []string, maxInFlight int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.arrived...), g.maxInFlight
}

// TestRotationWaitsForTheAstroBound: serve puts the rotator's Astro calls
// behind the broker's bound (ASTRO_STS_ASTRO_CONCURRENCY). With a bound of
// one, and the one slot taken by an exchange whose create Astro holds, a
// rotation triggered through POST /v1/rotate queues in the broker (the
// queued gauge says so) and sends nothing to Astro; once the create is let
// go, the rotation runs and succeeds, and Astro never saw two calls at once.
func TestRotationWaitsForTheAstroBound(t *testing.T) {
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	gate := &astroGate{next: emu.Handler(), held: make(chan struct{}, 1), release: make(chan struct{})}
	asrv := httptest.NewServer(gate)
	defer asrv.Close()
	// Before the server closes, which waits for a held call.
	released := sync.OnceFunc(func() { close(gate.release) })
	defer released()
	astroURL := asrv.URL + "/v1"
	iss, err := issuer.Start(issuer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	gh, err := githubtest.Start(githubtest.Config{Tokens: []string{rotateGitHubToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer gh.Close()
	gh.AddRepository("acme/dags")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ac, err := astro.New(astro.Config{BaseURL: astroURL, Token: emu.OrganizationToken()})
	if err != nil {
		t.Fatal(err)
	}
	ws := emu.WorkspaceIDs()[0]
	managed, err := ac.CreateToken(ctx, emu.OrganizationID(), astro.CreateTokenRequest{
		Name: "airflow-ci", Scope: astro.ScopeWorkspace, Role: astro.RoleWorkspaceAuthor, EntityID: ws})
	if err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(t.TempDir(), "policy.yaml")
	pol := e2ePolicy(ws) + fmt.Sprintf(`rotations:
  - name: airflow-ci
    token_id: %s
    strategy: rotate
    allow: {repository_id: %q, event_name: [push]}
    github:
      - {repository: acme/dags, secret: ASTRO_API_TOKEN}
`, managed.ID, e2eRepoID)
	if err := os.WriteFile(policyPath, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	url, _, _ := startServe(t, func(url string) map[string]string {
		return map[string]string{
			"ASTRO_STS_AUDIENCE":          url,
			"ASTRO_STS_ISSUERS":           iss.URL(),
			"ASTRO_STS_POLICY_FILE":       policyPath,
			"ASTRO_API_URL":               astroURL,
			"ASTRO_ORGANIZATION_ID":       emu.OrganizationID(),
			"ASTRO_ORGANIZATION_TOKEN":    emu.OrganizationToken(),
			"ASTRO_STS_ASTRO_CONCURRENCY": "1",
			"ASTRO_STS_REAP_CONCURRENCY":  "1",
			"ASTRO_STS_REAP_INTERVAL":     "1h", // no sweep in the way
			"GITHUB_TOKEN":                rotateGitHubToken,
			"GITHUB_API_URL":              gh.URL(),
		}
	})
	waitServing(t, url)
	idToken := func(run int) string {
		c := issuer.DefaultClaims()
		c.Audience, c.RunID = url, strconv.Itoa(run)
		tok, err := iss.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	// The exchange takes the one slot; Astro holds its create.
	before, _ := gate.seen()
	gate.mu.Lock()
	gate.hold = func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/organizations/"+emu.OrganizationID()+"/tokens")
	}
	gate.mu.Unlock()
	exchanged := make(chan answer, 1)
	exchangeToken := idToken(1)
	go func() { exchanged <- post(url+"/v1/exchange", exchangeToken, "") }()
	select {
	case <-gate.held:
	case <-ctx.Done():
		t.Fatal("the exchange's create never reached Astro")
	}

	rotated := make(chan answer, 1)
	rotateToken := idToken(2)
	go func() { rotated <- post(url+"/v1/rotate", rotateToken, `{"name": "airflow-ci"}`) }()
	// The rotation has verified its caller, checked its sinks, and waits
	// for the slot: it has sent Astro nothing.
	testwait.Until(t, 30*time.Second, "the rotation to queue for the bound", func() bool {
		select {
		case a := <-rotated:
			t.Fatalf("the rotation answered %d %s while the bound was full", a.status, a.body)
		default:
		}
		return metricValue(t, url, "astro_sts_upstream_queued") == 1
	})
	arrived, most := gate.seen()
	if got := arrived[len(before):]; len(got) != 1 || most != 1 {
		t.Fatalf("with the bound full, Astro saw %v (at most %d at once); want the held create only", got, most)
	}

	released()
	if a := <-exchanged; a.status != http.StatusOK {
		t.Errorf("exchange: %d %s", a.status, a.body)
	}
	a := <-rotated
	if a.status != http.StatusOK {
		t.Fatalf("rotation: %d %s", a.status, a.body)
	}
	var res rotation.Result
	if err := json.Unmarshal(a.body, &res); err != nil || res.TokenID != managed.ID {
		t.Errorf("rotation result %s: %v", a.body, err)
	}
	arrived, most = gate.seen()
	if most != 1 {
		t.Errorf("Astro saw %d calls at once, beyond the bound of 1: %v", most, arrived[len(before):])
	}
	rotateCall := "POST /v1/organizations/" + emu.OrganizationID() + "/tokens/" + managed.ID + "/rotate"
	if !slices.Contains(arrived[len(before)+1:], rotateCall) {
		t.Errorf("the rotation's calls did not reach Astro after the create: %v", arrived[len(before):])
	}
	if got := metricValue(t, url, "astro_sts_upstream_queued"); got != 0 {
		t.Errorf("astro_sts_upstream_queued = %v after the rotation", got)
	}
}

// answer is a broker's answer, from a goroutine of the test.
type answer struct {
	status int // 0: no answer, body says why
	body   []byte
}

func post(url, idToken, body string) answer {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return answer{0, []byte(err.Error())}
	}
	req.Header.Set("Authorization", "Bearer "+idToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{0, []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, b}
}

// metricValue reads one sample of the broker's /metrics (0 if absent).
func metricValue(t *testing.T, brokerURL, sample string) float64 {
	t.Helper()
	resp, err := http.Get(brokerURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(page)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
