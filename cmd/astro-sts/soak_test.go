package main

// The soak test of the promise "no token outlives its deadline": the real
// broker binary as a subprocess (so that SIGKILL is real), the Astro
// emulator with faults and latency and the OIDC issuer in the test, all on
// loopback. Many simulated jobs exchange and revoke, 10% never run their
// post step; halfway the broker is killed with SIGKILL and restarted; a
// stretch follows where Astro answers more slowly than the broker's
// timeouts. Then, once the longest TTL and a reaper interval have passed,
// no broker token is left in the organization, every token Astro ever made
// is accounted for in the audit log, and the broker's memory and
// goroutines are back where they were.
//
// docs/reliability.md has the figures of a run and the command.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/runner"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// The soak's settings. The broker's timeouts are scaled down from the
// defaults (10s, 15s, 20s) but keep the chain: an Astro call (1s) < a
// request's deadline (2s) < a job's attempt timeout (3s, the action's 30s
// scaled), and the shutdown grace (3s) > the request's deadline.
const (
	soakTTL          = time.Minute // the policy's minimum: the shortest wait for the reaper
	soakReapInterval = 2 * time.Second
	soakAstroTimeout = time.Second
	soakRequest      = 2 * time.Second
	soakGrace        = 3 * time.Second
	soakAttempt      = 3 * time.Second // a job's per-call timeout
	soakAttempts     = 4               // as the action
	soakLatency      = 20 * time.Millisecond
	soakErrorRate    = 0.05
	soakSkipPost     = 0.10
	soakSlowAnswer   = 1500 * time.Millisecond // longer than the Astro timeout
)

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak waits out the minimum TTL (1m) and a reaper interval; run it without -short")
	}
	load, workers := 40*time.Second, 16
	if os.Getenv("ASTRO_STS_SOAK_LONG") != "" {
		load, workers = 3*time.Minute, 32
	}
	s := newSoak(t)
	s.start()
	warm := s.sample("process 1, after start")

	// The load, with the kill halfway and the slow stretch after it. The
	// sleeps below are the scenario's timeline (how long each stretch of
	// load lasts), not waits for an event.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s.job(ctx)
			}
		}()
	}
	time.Sleep(load / 2)
	replayable := s.lastIDToken()
	s.kill()
	s.start()
	s.checkReplayRefused(replayable)
	time.Sleep(3 * time.Second) // the new process warms up under load
	warm2 := s.sample("process 2, under load")
	time.Sleep(load / 8)
	s.emu.SlowAnswers(soakSlowAnswer)
	slowFrom := time.Now()
	time.Sleep(load / 8)
	s.emu.SlowAnswers(0)
	slowFor := time.Since(slowFrom)
	time.Sleep(load / 4)
	stop()
	wg.Wait()
	loaded := s.sample("process 2, end of load")

	// Every token's deadline passes, then the reaper's next pass.
	deadline := s.lastDeadline()
	testwait.Until(t, time.Until(deadline.Add(2*soakReapInterval+30*time.Second)), "no broker token left", func() bool { return s.markedLeft() == 0 })
	cleared := time.Since(deadline)
	// Idle for two reaper passes, then measure: what is left running is
	// what the check below is about, so there is no event to wait for.
	time.Sleep(2 * soakReapInterval)
	idle := s.sample("process 2, idle after reaping")
	s.terminate()

	s.account()
	s.report(load, workers, slowFor, cleared, []memSample{warm, warm2, loaded, idle})

	if idle.goroutines > warm2.goroutines+5 && idle.goroutines > warm.goroutines+5 {
		t.Errorf("goroutines grew from %.0f (under load) to %.0f (idle): something is left running", warm2.goroutines, idle.goroutines)
	}
	if idle.heapInuse > 4*max(warm2.heapInuse, 8<<20) {
		t.Errorf("heap in use grew from %.0f to %.0f bytes", warm2.heapInuse, idle.heapInuse)
	}
}

// soak is the world of the soak test.
type soak struct {
	t      *testing.T
	emuSrv *emulator.Server
	emu    *emulator.Emulator
	iss    *issuer.Issuer
	addr   string
	url    string
	env    map[string]string
	dir    string

	proc  *exec.Cmd
	procs int
	exit  chan error

	runs atomic.Int64

	mu         sync.Mutex
	lastRaw    string          // the ID token of the last exchange answered 200
	delivered  map[string]bool // token ids the jobs received
	stats      soakStats
	latencies  []time.Duration
	replayCode string
	audit      auditCounts
}

type soakStats struct {
	jobs, exchanged, exchangeFailed, revoked, revokeFailed, skippedPost int
	attempts, retries                                                   int
}

type memSample struct {
	label                    string
	heapInuse, rss           float64
	goroutines               float64
	upstreamInFlight, replay float64
}

func newSoak(t *testing.T) *soak {
	t.Helper()
	esrv, emu, err := emulator.Start(emulator.Config{Latency: soakLatency, ErrorRate: soakErrorRate, RecordCreates: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { esrv.Close() })
	iss, err := issuer.Start(issuer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(e2ePolicy(emu.WorkspaceIDs()[0])), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	url := "http://" + addr
	s := &soak{
		t: t, emuSrv: esrv, emu: emu, iss: iss, addr: addr, url: url, dir: dir,
		delivered: map[string]bool{},
		env: map[string]string{
			"ASTRO_STS_ADDR":            addr,
			"ASTRO_STS_AUDIENCE":        url,
			"ASTRO_STS_ISSUERS":         iss.URL(),
			"ASTRO_STS_POLICY_FILE":     policy,
			"ASTRO_API_URL":             esrv.URL,
			"ASTRO_ORGANIZATION_ID":     emu.OrganizationID(),
			"ASTRO_ORGANIZATION_TOKEN":  emu.OrganizationToken(),
			"ASTRO_STS_REAP_INTERVAL":   soakReapInterval.String(),
			"ASTRO_STS_ASTRO_TIMEOUT":   soakAstroTimeout.String(),
			"ASTRO_STS_REQUEST_TIMEOUT": soakRequest.String(),
			"ASTRO_STS_SHUTDOWN_GRACE":  soakGrace.String(),
			"ASTRO_STS_LOG_LEVEL":       "info",
			"PATH":                      os.Getenv("PATH"),
			"HOME":                      os.Getenv("HOME"),
		},
	}
	t.Cleanup(func() {
		if s.proc != nil && s.proc.ProcessState == nil {
			_ = s.proc.Process.Kill()
			<-s.exit
		}
	})
	return s
}

// logPath is the broker's log (its stdout) of the n-th process.
func (s *soak) logPath(n int) string { return filepath.Join(s.dir, fmt.Sprintf("broker-%d.log", n)) }

// start runs a broker process and waits until it serves.
func (s *soak) start() {
	t := s.t
	t.Helper()
	s.procs++
	out, err := os.Create(s.logPath(s.procs))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(e2eBinDir(t), "astro-sts"), "serve")
	cmd.Env = runner.Environ(s.env)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.proc, s.exit = cmd, make(chan error, 1)
	go func() { s.exit <- cmd.Wait(); out.Close() }()
	// Ready, not only alive: for idtoken.FutureLeeway after its start the
	// broker refuses every ID token as possibly used before a restart.
	testwait.Until(t, 30*time.Second, "the broker to be ready", func() bool {
		resp, err := http.Get(s.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// kill ends the broker with SIGKILL: no shutdown, no clean-up.
func (s *soak) kill() {
	s.t.Helper()
	if err := s.proc.Process.Kill(); err != nil {
		s.t.Fatal(err)
	}
	<-s.exit
}

// terminate ends the broker with SIGTERM, as an orchestrator does, and
// checks that it exits cleanly within its grace and clean-up bound.
func (s *soak) terminate() {
	s.t.Helper()
	if err := s.proc.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case err := <-s.exit:
		if err != nil {
			s.t.Errorf("broker exit after SIGTERM: %v", err)
		}
	case <-time.After(soakGrace + 2*soakAstroTimeout + 10*time.Second):
		s.t.Error("broker did not exit after SIGTERM")
		_ = s.proc.Process.Kill()
		<-s.exit
	}
}

// job is one simulated workflow job: exchange (retrying as the action
// does, a fresh ID token each attempt), use, and, 90% of the time, revoke
// in the post step.
func (s *soak) job(ctx context.Context) {
	claims := issuer.DefaultClaims()
	claims.Audience = s.url
	claims.RepositoryID = e2eRepoID
	claims.RunID = strconv.FormatInt(100000+s.runs.Add(1), 10)
	claims.RunAttempt = "1"

	start := time.Now()
	var tok struct {
		Token   string `json:"token"`
		TokenID string `json:"token_id"`
	}
	status, raw, body, attempts := s.call(ctx, "/v1/exchange", claims, `{"ttl":"1m"}`)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.jobs++
	s.stats.attempts += attempts
	s.stats.retries += attempts - 1
	if status != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.TokenID == "" {
		s.stats.exchangeFailed++
		return
	}
	s.stats.exchanged++
	s.delivered[tok.TokenID] = true
	s.lastRaw = raw
	s.latencies = append(s.latencies, time.Since(start))
	if rand.Float64() < soakSkipPost {
		s.stats.skippedPost++
		return
	}
	s.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond) // the job's own steps
	status, _, _, attempts = s.call(context.WithoutCancel(ctx), "/v1/revoke", claims, fmt.Sprintf(`{"token_id":%q}`, tok.TokenID))
	s.mu.Lock()
	s.stats.attempts += attempts
	s.stats.retries += attempts - 1
	if status == http.StatusNoContent {
		s.stats.revoked++
	} else {
		s.stats.revokeFailed++ // the post step only warns: the reaper is the backstop
	}
}

// call POSTs body with a fresh ID token per attempt, retrying what the
// action retries (no answer, 500, 502, 503, 504) with its backoff and
// number of attempts: a job caught by the restart keeps trying for 7s, so
// its revoke reaches the new process (which answers "already gone" if the
// old one deleted the token just before it was killed, and records that).
func (s *soak) call(ctx context.Context, path string, claims issuer.Claims, body string) (status int, raw string, answer []byte, attempts int) {
	for attempt := 1; ; attempt++ {
		raw, err := s.iss.Mint(claims)
		if err != nil {
			s.t.Error(err)
			return 0, "", nil, attempt
		}
		status, answer, retryAfter := s.once(ctx, path, raw, body)
		switch status {
		case 0, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		default:
			return status, raw, answer, attempt
		}
		if attempt >= soakAttempts || ctx.Err() != nil {
			return status, raw, answer, attempt
		}
		// The action's backoff: 1s, 2s, 4s, or the broker's Retry-After.
		wait := max(retryAfter, time.Second<<(attempt-1))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return status, raw, answer, attempt
		}
	}
}

func (s *soak) once(ctx context.Context, path, raw, body string) (int, []byte, time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, soakAttempt)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, 0
	}
	req.Header.Set("Authorization", "Bearer "+raw)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, 0
	}
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, b, time.Duration(ra) * time.Second
}

func (s *soak) lastIDToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastRaw == "" {
		s.t.Fatal("no exchange succeeded before the kill")
	}
	return s.lastRaw
}

// checkReplayRefused sends, to the restarted broker, an ID token that was
// exchanged before the kill: it must not get a second token.
func (s *soak) checkReplayRefused(raw string) {
	s.t.Helper()
	status, body, _ := s.once(context.Background(), "/v1/exchange", raw, `{"ttl":"1m"}`)
	var eb struct{ Error string }
	_ = json.Unmarshal(body, &eb)
	s.replayCode = fmt.Sprintf("%d %s", status, eb.Error)
	if status == http.StatusOK {
		s.t.Errorf("an ID token exchanged before the restart was exchanged again after it: %s", body)
	}
	if status != http.StatusServiceUnavailable || eb.Error != "restarted" {
		s.t.Errorf("replay after the restart: %d %s, want 503 restarted", status, body)
	}
}

// lastDeadline is the latest deadline of the broker tokens in Astro (the
// load has ended: no more are made).
func (s *soak) lastDeadline() time.Time {
	var last time.Time
	for _, tok := range s.emu.Tokens() {
		if m, ok := broker.ParseMarker(tok.Description); ok && m.Deadline.After(last) {
			last = m.Deadline
		}
	}
	if last.IsZero() {
		last = time.Now()
	}
	return last
}

func (s *soak) markedLeft() int {
	n := 0
	for _, tok := range s.emu.Tokens() {
		if _, ok := broker.ParseMarker(tok.Description); ok {
			n++
		}
	}
	return n
}

// sample reads the running broker's memory and goroutines from /metrics.
func (s *soak) sample(label string) memSample {
	s.t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	m := memSample{label: label}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			m.heapInuse = v
		case "process_resident_memory_bytes":
			m.rss = v
		case "go_goroutines":
			m.goroutines = v
		case "astro_sts_upstream_in_flight":
			m.upstreamInFlight = v
		}
	}
	return m
}

// auditCounts are the audit records of both processes, by kind.
type auditCounts struct {
	exchanged, revoked, reaped, undeliveredDeleted, undeliveredFailed, notFound map[string]int
	// undeliveredIntent are the tokens whose delete the broker was about
	// to send (the record of intent, written before it).
	undeliveredIntent map[string]int
	undeliveredWhy    map[string]int
	records           int
	refusedRestarted  int
}

// account checks that every token Astro made is accounted for in the audit
// log, and that every token a job received was recorded as minted.
func (s *soak) account() {
	t := s.t
	t.Helper()
	var a auditCounts
	a.exchanged, a.revoked, a.reaped = map[string]int{}, map[string]int{}, map[string]int{}
	a.undeliveredDeleted, a.undeliveredFailed, a.notFound, a.undeliveredWhy = map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	a.undeliveredIntent = map[string]int{}
	for n := 1; n <= s.procs; n++ {
		f, err := os.Open(s.logPath(n))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) != nil {
				continue
			}
			audit, _ := rec["audit"].(string)
			outcome, _ := rec["outcome"].(string)
			id, _ := rec["token_id"].(string)
			if audit == "" {
				continue
			}
			a.records++
			switch {
			case audit == "exchange" && outcome == "allow":
				a.exchanged[id]++
			case audit == "exchange" && strings.Contains(fmt.Sprint(rec["reason"]), "before this broker started"):
				a.refusedRestarted++
			case audit == "revoke" && outcome == "allow":
				a.revoked[id]++
			case audit == "reap":
				a.reaped[id]++
			case audit == "undelivered" && outcome == "deleting":
				a.undeliveredIntent[id]++
			case audit == "undelivered":
				a.undeliveredWhy[fmt.Sprint(rec["why"], "/", outcome)]++
				switch outcome {
				case "deleted":
					a.undeliveredDeleted[id]++
				case "delete_failed":
					a.undeliveredFailed[id]++
				case "not_found":
					a.notFound[fmt.Sprint(rec["run_id"])]++
				}
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	s.audit = a

	created := s.emu.Created()
	unaccounted, intentOnly := 0, 0
	for _, id := range created {
		switch {
		case a.revoked[id] > 0 || a.reaped[id] > 0 || a.undeliveredDeleted[id] > 0:
		case a.undeliveredIntent[id] > 0:
			// A broker killed between the delete and its outcome's
			// record: the intent, written before the delete, names the
			// token, which is gone (no broker token is left, below).
			intentOnly++
		default:
			unaccounted++
			if unaccounted <= 5 {
				t.Errorf("token %s was made and is in no revoke, reap or undelivered record (exchange records: %d); its log lines:\n%s", id, a.exchanged[id], s.grepLogs(id))
			}
		}
	}
	if intentOnly > 0 {
		t.Logf("%d tokens deleted as undelivered have the record of intent only (the broker was killed before the outcome's)", intentOnly)
	}
	if unaccounted > 0 {
		t.Errorf("%d of %d tokens made are not accounted for", unaccounted, len(created))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.delivered {
		if a.exchanged[id] == 0 {
			t.Errorf("token %s was delivered to a job without an exchange audit record", id)
		}
	}
	if left := s.markedLeft(); left != 0 {
		t.Errorf("%d broker tokens left in the organization", left)
	}
	if len(created) == 0 || s.stats.exchanged == 0 {
		t.Fatal("the soak minted nothing")
	}
}

func (s *soak) report(load time.Duration, workers int, slowFor, cleared time.Duration, mem []memSample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.audit
	sort.Slice(s.latencies, func(i, j int) bool { return s.latencies[i] < s.latencies[j] })
	pct := func(p float64) time.Duration {
		if len(s.latencies) == 0 {
			return 0
		}
		return s.latencies[int(p*float64(len(s.latencies)-1))].Round(time.Millisecond)
	}
	sum := func(m map[string]int) int { return len(m) }
	var b strings.Builder
	fmt.Fprintf(&b, "load %v, %d workers, emulator %v latency and %.0f%% errors, SIGKILL and restart halfway, Astro answers after %v (Astro timeout %v) for %v\n",
		load, workers, soakLatency, soakErrorRate*100, soakSlowAnswer, soakAstroTimeout, slowFor.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "jobs %d: exchanged %d (p50 %v, p99 %v), failed after %d attempts %d; post step skipped %d, revoked %d, revoke failed %d; attempts %d (retries %d)\n",
		s.stats.jobs, s.stats.exchanged, pct(0.5), pct(0.99), soakAttempts, s.stats.exchangeFailed, s.stats.skippedPost, s.stats.revoked, s.stats.revokeFailed, s.stats.attempts, s.stats.retries)
	fmt.Fprintf(&b, "tokens made by Astro %d: revoked %d, reaped %d, deleted as undelivered %d (%v); not found after an unknown create %d; left 0\n",
		len(s.emu.Created()), sum(a.revoked), sum(a.reaped), sum(a.undeliveredDeleted), a.undeliveredWhy, sum(a.notFound))
	fmt.Fprintf(&b, "replay of a pre-restart ID token: %s; exchanges refused as issued before the restart: %d; audit records %d\n",
		s.replayCode, a.refusedRestarted, a.records)
	fmt.Fprintf(&b, "all broker tokens gone %v after the last deadline\n", cleared.Round(100*time.Millisecond))
	for _, m := range mem {
		fmt.Fprintf(&b, "memory %-32s heap in use %5.1f MB, RSS %5.1f MB, goroutines %3.0f\n", m.label+":", m.heapInuse/(1<<20), m.rss/(1<<20), m.goroutines)
	}
	s.t.Log("soak figures:\n" + b.String())
}

// grepLogs returns the broker's log lines, of every process, that mention
// substr.
func (s *soak) grepLogs(substr string) string {
	var out []string
	for n := 1; n <= s.procs; n++ {
		b, err := os.ReadFile(s.logPath(n))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, substr) {
				out = append(out, fmt.Sprintf("process %d: %s", n, l))
			}
		}
	}
	return strings.Join(out, "\n")
}
