package main

// The multi-replica test: three `astro-sts serve` processes (the binary
// the tests build once), one real redis-server, one emulator and one OIDC issuer,
// all on loopback. It checks what sharing the broker's state through Redis
// promises: a token used on one replica is refused on the others, a rate
// limit holds across replicas, one replica reaps per interval, another
// takes over when it is killed, and a Redis outage makes the replicas fail
// closed and recover by themselves, leaking nothing.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

const (
	replicasAudience = "https://astro-sts.example.com" // the load balancer's URL, the same for every replica
	replicasReap     = time.Second                     // ASTRO_STS_REAP_INTERVAL
	limitedRepoID    = "777"
	limitedRate      = 5 // tokens a minute for limitedRepoID
)

// replicasPolicy: acme/dags may get a one-minute token (the shortest TTL,
// so that the tokens the test leaves behind expire while it runs); acme/ci
// is limited to five a minute.
func replicasPolicy(ws string) string {
	return fmt.Sprintf(`rules:
  - name: deploy
    match: {repository_id: "123456", ref: refs/heads/main}
    grant: {workspaces: [%[1]s], max_role: WORKSPACE_AUTHOR, max_ttl: 1m}
  - name: limited
    match: {repository_id: %[2]q}
    grant: {workspaces: [%[1]s], max_role: WORKSPACE_AUTHOR, max_ttl: 1m}
    rate_limit: {rate: %[3]d/m}
`, ws, limitedRepoID, limitedRate)
}

// countingAstro counts the emulator's list and create calls as they arrive.
type countingAstro struct {
	next http.Handler

	mu      sync.Mutex
	lists   []time.Time // first pages of GET /organizations/{org}/tokens
	creates []time.Time // POST /organizations/{org}/tokens
}

func (c *countingAstro) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/tokens") {
		now := time.Now()
		c.mu.Lock()
		switch {
		case r.Method == http.MethodGet && (r.URL.Query().Get("offset") == "" || r.URL.Query().Get("offset") == "0"):
			c.lists = append(c.lists, now)
		case r.Method == http.MethodPost:
			c.creates = append(c.creates, now)
		}
		c.mu.Unlock()
	}
	c.next.ServeHTTP(w, r)
}

// count is the number of times in ts within [from, to).
func (c *countingAstro) count(ts *[]time.Time, from, to time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range *ts {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// replica is one broker process.
type replica struct {
	name string
	url  string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
}

type replicaWorld struct {
	t        *testing.T
	redis    *redistest.Server
	emu      *emulator.Emulator
	astro    *countingAstro
	astroURL string
	iss      *issuer.Issuer
	replicas []*replica
	runs     atomic.Int64
	http     *http.Client
}

func TestReplicas(t *testing.T) {
	redisBin, ok := redistest.Binary()
	if !ok {
		if redistest.Required() {
			t.Fatalf("CI=true but %s (looked for %s)", redistest.InstallHint, redisBin)
		}
		t.Skipf("%s (looked for %s)", redistest.InstallHint, redisBin)
	}
	w := newReplicaWorld(t, redisBin)
	a, b, c := w.replicas[0], w.replicas[1], w.replicas[2]

	// First the outage, so that the tokens it leaves to the reaper reach
	// their deadline while the rest runs.
	left := w.redisOutage()

	t.Run("replay refused on the other replicas", func(t *testing.T) {
		tok := w.mint(w.claims("123456"))
		if st, code, _ := w.exchange(a, tok); st != http.StatusOK {
			t.Fatalf("first use on %s: %d %s", a.name, st, code)
		}
		for _, r := range []*replica{b, c} {
			if st, code, _ := w.exchange(r, tok); st != http.StatusUnauthorized || code != brokerapi.CodeTokenInvalid {
				t.Errorf("replay on %s: %d %s, want 401", r.name, st, code)
			}
		}
		t.Logf("FIGURE replay: used on %s, refused on %s and %s", a.name, b.name, c.name)
	})

	t.Run("rate limit across replicas", func(t *testing.T) {
		const requests = 3 * limitedRate
		type answer struct {
			status     int
			retryAfter string
		}
		answers := make(chan answer, requests)
		var wg sync.WaitGroup
		for i := range requests {
			r := w.replicas[i%3]
			tok := w.mint(w.claims(limitedRepoID))
			wg.Go(func() {
				st, _, h := w.exchange(r, tok)
				answers <- answer{st, h.Get("Retry-After")}
			})
		}
		wg.Wait()
		close(answers)
		byStatus := map[int]int{}
		for a := range answers {
			byStatus[a.status]++
			if a.status == http.StatusTooManyRequests && a.retryAfter == "" {
				t.Error("a 429 without Retry-After")
			}
		}
		if byStatus[http.StatusOK] != limitedRate || byStatus[http.StatusTooManyRequests] != requests-limitedRate {
			t.Errorf("answers %v, want exactly %d allowed and %d refused with 429", byStatus, limitedRate, requests-limitedRate)
		}
		var refused int
		for _, r := range w.replicas {
			refused += int(w.metric(r, `astro_sts_rate_limited_total{rule="limited"}`))
		}
		if refused != requests-limitedRate {
			t.Errorf("astro_sts_rate_limited_total summed over the replicas = %d, want %d", refused, requests-limitedRate)
		}
		t.Logf("FIGURE rate limit %d/m: %d requests spread over 3 replicas: %d allowed, %d refused with 429",
			limitedRate, requests, byStatus[http.StatusOK], byStatus[http.StatusTooManyRequests])
	})

	t.Run("one replica lists per interval", func(t *testing.T) {
		const intervals = 6
		from := time.Now()
		// The scenario is a stretch of time: the replicas' reapers tick
		// on their own, and the test counts the listings in it.
		time.Sleep(intervals * replicasReap)
		lists := w.astro.count(&w.astro.lists, from, time.Now())
		// Passes are at least one lease apart (the lease lasts one
		// interval), give or take a tick: without the lease the three
		// replicas would list 3*intervals times.
		if lists > intervals+1 || lists < intervals/2 {
			t.Errorf("%d list calls in %d intervals, want about %d (one replica per interval)", lists, intervals, intervals)
		}
		if h := w.holders(); len(h) != 1 {
			t.Errorf("lease held by %v, want exactly one replica", h)
		}
		t.Logf("FIGURE reaper: %d list calls in %d intervals of %s from 3 replicas (without the lease: %d)", lists, intervals, replicasReap, 3*intervals)
	})

	t.Run("kill -9 of the lease holder", func(t *testing.T) {
		holders := w.holders()
		if len(holders) != 1 {
			t.Fatalf("lease held by %v, want one replica", holders)
		}
		holder := holders[0]
		killed := time.Now()
		if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-holder.done
		// A token whose post step never ran, already past its deadline:
		// only a surviving replica can reap it now.
		id := w.plantExpired()
		if !testwait.For(time.Until(killed.Add(10*replicasReap)), func() bool { return !w.hasToken(id) }) {
			t.Fatalf("the expired token is still there %s after the holder was killed", time.Since(killed))
		}
		took := time.Since(killed)
		// The lease outlives its holder by at most one interval, and the
		// next replica's tick comes at most one interval later.
		if took > 2*replicasReap+500*time.Millisecond {
			t.Errorf("another replica reaped %s after the holder was killed, want within two intervals (%s)", took.Round(time.Millisecond), 2*replicasReap)
		}
		survivors := w.holders()
		if len(survivors) != 1 || survivors[0] == holder {
			t.Errorf("lease held by %v after the kill, want one surviving replica", survivors)
		}
		t.Logf("FIGURE takeover: %s killed with SIGKILL; the expired token reaped by %v %s later (bound: two intervals, %s)",
			holder.name, names(survivors), took.Round(time.Millisecond), 2*replicasReap)
	})

	t.Run("nothing leaked after the reaper has run", func(t *testing.T) {
		// Every token the outage phase left behind has a one-minute
		// deadline; the reaper deletes it within two intervals after it.
		// Wait until no token is left whose deadline is the latest of
		// theirs or earlier, for at most that long; the checks below then
		// see what the reaper did within its bound.
		expired := func() bool {
			for _, tok := range w.emu.Tokens() {
				if m, ok := broker.ParseMarker(tok.Description); ok && !m.Deadline.After(left.lastDeadline) {
					return true
				}
			}
			return false
		}
		testwait.For(time.Until(left.lastDeadline.Add(2*replicasReap+time.Second)), func() bool { return !expired() })
		var leaked []string
		for _, tok := range w.emu.Tokens() {
			if m, ok := broker.ParseMarker(tok.Description); ok && time.Since(m.Deadline) > 2*replicasReap {
				leaked = append(leaked, tok.ID)
			}
		}
		if len(leaked) > 0 {
			t.Errorf("%d tokens past their deadline are still in the organization: %v", len(leaked), leaked)
		}
		for _, id := range left.ids {
			if w.hasToken(id) {
				t.Errorf("token %s from the outage phase is still there", id)
			}
		}
		t.Logf("FIGURE leaks: %d tokens left to the reaper during the outage phase, %d remaining after their deadline", len(left.ids), len(leaked))
	})
}

// outcome is what the outage phase left: the tokens it did not revoke and
// the latest of their deadlines.
type outcome struct {
	ids          []string
	lastDeadline time.Time
}

// redisOutage runs exchanges across the replicas, stops Redis under load,
// and brings it back.
func (w *replicaWorld) redisOutage() outcome {
	t := w.t
	type result struct {
		start, end time.Time
		replica    *replica
		status     int
		code       string
		retryAfter string
		tokenID    string
		runID      string
	}
	var (
		mu      sync.Mutex
		results []result
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				r := w.replicas[(i+n)%3]
				claims := w.claims("123456")
				tok := w.mint(claims)
				res := result{start: time.Now(), replica: r, runID: claims.RunID}
				var body []byte
				res.status, body, res.retryAfter = w.post(r, "/v1/exchange", tok, "")
				res.end = time.Now()
				if res.status == http.StatusOK {
					var er brokerapi.ExchangeResponse
					if err := json.Unmarshal(body, &er); err != nil {
						t.Error(err)
					}
					res.tokenID = er.TokenID
				} else {
					res.code = errorCodeOf(body)
				}
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // a steady load, not a flood
			}
		})
	}
	count := func(ok func(result) bool) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if ok(r) {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if !testwait.For(30*time.Second, cond) {
			close(stop)
			wg.Wait()
			t.Fatalf("timed out waiting for %s", what)
		}
	}

	waitFor("exchanges to succeed", func() bool { return count(func(r result) bool { return r.status == 200 }) >= 15 })
	w.redis.Stop()
	down := time.Now()
	// The outage lasts until every replica says so on /readyz and some
	// exchanges have been refused meanwhile: the checks below look at
	// what was answered while Redis was down.
	waitFor("every replica to be unready with Redis down", func() bool {
		for _, r := range w.replicas {
			if st, body := w.get(r, "/readyz"); st != http.StatusServiceUnavailable || !strings.Contains(body, "shared store unreachable") {
				return false
			}
		}
		return true
	})
	waitFor("exchanges to be refused with Redis down", func() bool {
		return count(func(r result) bool { return r.start.After(down) && r.code == "store_unavailable" }) >= 3
	})
	// Redis serves again before Restart returns: what ended before
	// Restart was called is surely an answer given with Redis down.
	restarting := time.Now()
	if err := w.redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	waitFor("every replica to be ready again", func() bool {
		for _, r := range w.replicas {
			if st, _ := w.get(r, "/readyz"); st != http.StatusOK {
				return false
			}
		}
		return true
	})
	ready := time.Since(up)
	waitFor("exchanges to succeed on every replica again", func() bool {
		for _, rep := range w.replicas {
			if count(func(r result) bool { return r.replica == rep && r.start.After(up) && r.status == 200 }) == 0 {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()

	var ok, unavailable, downOK, downOther, afterOK int
	var firstBack time.Duration = -1
	for _, r := range results {
		during := r.start.After(down) && r.end.Before(restarting)
		switch {
		case during && r.status == http.StatusServiceUnavailable && r.code == "store_unavailable" && r.retryAfter != "":
			unavailable++
		case during && r.status == http.StatusOK:
			downOK++
		case during:
			downOther++
			t.Errorf("with Redis down %s answered %d %s (Retry-After %q), want 503 store_unavailable with Retry-After", r.replica.name, r.status, r.code, r.retryAfter)
		}
		if r.status == http.StatusOK {
			ok++
			if r.start.After(up) {
				afterOK++
				if d := r.end.Sub(up); firstBack < 0 || d < firstBack {
					firstBack = d
				}
			}
		}
	}
	if downOK > 0 {
		t.Errorf("%d exchanges minted a token with Redis down", downOK)
	}
	if unavailable == 0 {
		t.Error("no exchange was tried while Redis was down")
	}
	// Every create the emulator saw is a token some exchange delivered:
	// none was minted and then refused, and none while Redis was down.
	creates := w.astro.count(&w.astro.creates, time.Time{}, time.Now())
	if creates != ok {
		t.Errorf("the emulator saw %d creates for %d successful exchanges", creates, ok)
	}
	if n := w.astro.count(&w.astro.creates, down.Add(time.Second), up); n != 0 {
		t.Errorf("%d tokens created while Redis was down", n)
	}

	// The post step of every other job revokes its token; the rest are
	// left to the reaper.
	var left outcome
	revoked := 0
	mu.Lock()
	defer mu.Unlock()
	for i, r := range results {
		if r.status != http.StatusOK {
			continue
		}
		if i%2 == 0 {
			claims := w.claims("123456")
			claims.RunID = r.runID
			st, body, _ := w.post(w.replicas[i%3], "/v1/revoke", w.mint(claims), fmt.Sprintf(`{"token_id": %q}`, r.tokenID))
			if st != http.StatusNoContent {
				t.Errorf("revoke of %s: %d %s", r.tokenID, st, body)
			}
			revoked++
			continue
		}
		left.ids = append(left.ids, r.tokenID)
		if d := r.end.Add(time.Minute); d.After(left.lastDeadline) {
			left.lastDeadline = d
		}
	}
	t.Logf("FIGURE outage: %d exchanges, %d minted (%d before the outage, %d after); Redis down %s: %d answered 503 store_unavailable with Retry-After, 0 minted; every replica ready %s after Redis was back, first token %s after; %d revoked, %d left to the reaper",
		len(results), ok, ok-afterOK, afterOK, up.Sub(down).Round(time.Millisecond), unavailable, ready.Round(time.Millisecond), firstBack.Round(time.Millisecond), revoked, len(left.ids))
	return left
}

func newReplicaWorld(t *testing.T, redisBin string) *replicaWorld {
	counting := &countingAstro{}
	w := startWorld(t, redisBin, func(emu http.Handler) http.Handler {
		counting.next = emu
		return counting
	}, "A", "B", "C")
	w.astro = counting
	return w
}

// startWorld starts Redis, the emulator behind front (which wraps the
// emulator's handler and so sees every call the replicas make to Astro),
// the OIDC issuer, and one broker replica per name, and waits until each
// replica is ready.
func startWorld(t *testing.T, redisBin string, front func(http.Handler) http.Handler, names ...string) *replicaWorld {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := redistest.Start(ctx, redisBin, redistest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })

	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	esrv := &http.Server{Handler: front(emu.Handler()), ReadHeaderTimeout: 5 * time.Second}
	go esrv.Serve(ln)
	t.Cleanup(func() { esrv.Close() })

	iss, err := issuer.Start(issuer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })

	w := &replicaWorld{
		t: t, redis: rs, emu: emu, astroURL: "http://" + ln.Addr().String() + "/v1",
		iss: iss, http: &http.Client{Timeout: 10 * time.Second},
	}
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	tokenFile := filepath.Join(dir, "org-token")
	if err := os.WriteFile(policy, []byte(replicasPolicy(emu.WorkspaceIDs()[0])), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(emu.OrganizationToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		w.replicas = append(w.replicas, w.startReplica(name, policy, tokenFile))
	}
	for _, r := range w.replicas {
		w.waitReady(r)
	}
	return w
}

func (w *replicaWorld) startReplica(name, policy, tokenFile string) *replica {
	t := w.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &replica{name: name, url: "http://" + addr, out: &syncbuf.Buffer{Limit: 4 << 20}, done: make(chan struct{})}
	r.cmd = exec.Command(filepath.Join(e2eBinDir(t), "astro-sts"), "serve")
	r.cmd.Env = []string{
		"HOME=" + t.TempDir(),
		"ASTRO_STS_ADDR=" + addr,
		"ASTRO_STS_AUDIENCE=" + replicasAudience,
		"ASTRO_STS_ISSUERS=" + w.iss.URL(),
		"ASTRO_STS_POLICY_FILE=" + policy,
		"ASTRO_API_URL=" + w.astroURL,
		"ASTRO_ORGANIZATION_ID=" + w.emu.OrganizationID(),
		"ASTRO_ORGANIZATION_TOKEN_FILE=" + tokenFile,
		"ASTRO_STS_REAP_INTERVAL=" + replicasReap.String(),
		"ASTRO_STS_REDIS_URL=" + w.redis.URL(),
	}
	r.cmd.Stdout = r.out
	r.cmd.Stderr = r.out
	dieWithTest(r.cmd)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("replica %s (%s) output:\n%s", r.name, r.url, r.out.String())
		}
	})
	return r
}

func (w *replicaWorld) waitReady(r *replica) {
	w.t.Helper()
	ready := testwait.For(30*time.Second, func() bool {
		if st, _ := w.get(r, "/readyz"); st == http.StatusOK {
			return true
		}
		select {
		case <-r.done:
			w.t.Fatalf("replica %s exited: %v\n%s", r.name, r.cmd.ProcessState, r.out.String())
		default:
		}
		return false
	})
	if !ready {
		w.t.Fatalf("replica %s not ready:\n%s", r.name, r.out.String())
	}
}

// claims are those of a push to main of the repository, in a run of its
// own.
func (w *replicaWorld) claims(repositoryID string) issuer.Claims {
	c := issuer.DefaultClaims()
	c.Audience = replicasAudience
	c.RepositoryID = repositoryID
	c.RunID = strconv.FormatInt(7000+w.runs.Add(1), 10)
	return c
}

func (w *replicaWorld) mint(c issuer.Claims) string {
	tok, err := w.iss.Mint(c)
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

func (w *replicaWorld) exchange(r *replica, idToken string) (int, string, http.Header) {
	req, err := http.NewRequest(http.MethodPost, r.url+"/v1/exchange", nil)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+idToken)
	resp, err := w.http.Do(req)
	if err != nil {
		w.t.Error(err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, errorCodeOf(body), resp.Header
}

func (w *replicaWorld) post(r *replica, path, idToken, body string) (int, []byte, string) {
	req, err := http.NewRequest(http.MethodPost, r.url+path, strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+idToken)
	resp, err := w.http.Do(req)
	if err != nil {
		w.t.Error(err)
		return 0, nil, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header.Get("Retry-After")
}

func (w *replicaWorld) get(r *replica, path string) (int, string) {
	resp, err := w.http.Get(r.url + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads one sample from a replica's /metrics (0 if absent).
func (w *replicaWorld) metric(r *replica, sample string) float64 {
	_, page := w.get(r, "/metrics")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	m := re.FindStringSubmatch(page)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// holders are the live replicas whose metrics say they hold the lease.
func (w *replicaWorld) holders() []*replica {
	var out []*replica
	for _, r := range w.replicas {
		select {
		case <-r.done:
			continue
		default:
		}
		if w.metric(r, "astro_sts_reaper_lease_held") == 1 {
			out = append(out, r)
		}
	}
	return out
}

// plantExpired creates, as the broker would have, a token whose deadline
// has passed.
func (w *replicaWorld) plantExpired() string {
	ac, err := astro.New(astro.Config{BaseURL: w.astroURL, Token: w.emu.OrganizationToken()})
	if err != nil {
		w.t.Fatal(err)
	}
	m := broker.Marker{Deadline: time.Now().Add(-time.Minute).UTC().Truncate(time.Second), RepositoryID: "123456", RunID: "1", RunAttempt: "1", Rule: "deploy"}
	days := 1
	tok, err := ac.CreateToken(context.Background(), w.emu.OrganizationID(), astro.CreateTokenRequest{
		Name: "astro-sts planted", Description: m.Description("planted by the test"),
		Scope: astro.ScopeWorkspace, EntityID: w.emu.WorkspaceIDs()[0], Role: astro.RoleWorkspaceAuthor,
		TokenExpiryPeriodInDays: &days,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return tok.ID
}

func (w *replicaWorld) hasToken(id string) bool {
	for _, t := range w.emu.Tokens() {
		if t.ID == id {
			return true
		}
	}
	return false
}

func errorCodeOf(body []byte) string {
	var eb struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(bytes.NewReader(body)).Decode(&eb)
	return eb.Error
}

func names(rs []*replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.name)
	}
	return out
}
