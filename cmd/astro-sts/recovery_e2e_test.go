package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// TestE2ERecoveryOutlastsASlowAstro: an Astro that makes every token 31 s
// after the create, long after the broker's call (its Astro timeout, 10 s
// by default) gave up. The real action step runs as the runner runs it,
// each of its attempts a create whose outcome the broker does not know;
// the broker's search for those tokens must go on long enough to find
// tokens made a minute late, so that 90 s after the step none of them is
// alive, and each has its audit records of intent and deletion.
//
// It runs with the broker's real defaults, which are what the promise is
// about, and so in real time: about 50 s for the step's four attempts, and
// up to 90 s after it (about 50 s when the search finds them all), 1.5 to
// 2.5 minutes. t.Parallel lets the package's
// other tests run meanwhile.
func TestE2ERecoveryOutlastsASlowAstro(t *testing.T) {
	t.Parallel()
	const (
		late    = 31 * time.Second // each token is made this long after its create arrived
		promise = 90 * time.Second // none is alive this long after the step
	)
	w := newE2EWorldWith(t, emulator.Config{CreateDelay: late, RecordCreates: true})
	job := w.newJob(w.brokerURL, w.trustedClaims(), true)
	// The action's own bound on the main step, well above its four
	// attempts of one Astro timeout each.
	res := e2eRunFor(t, 3*time.Minute, []string{"astro-sts-action"}, job.runner.Env())
	ended := time.Now()
	if res.code != 1 || !strings.Contains(res.stdout, "::error::") {
		t.Fatalf("main: exit %d, want 1 with an error annotation (every create timed out); stderr %q, stdout:\n%s", res.code, res.stderr, res.stdout)
	}

	// Done early once every create the broker sent has made its token
	// and every one of those tokens is deleted with its records; else
	// the promise's time is up.
	var made, alive []string
	var failed int
	var records map[string][]string
	settled := func() bool {
		failed, records = recoveryRecords(t, w.logs.String(), job.claims.RunID)
		made = w.emu.Created()
		live := w.emu.Tokens()
		alive = alive[:0]
		for _, id := range made {
			if slices.ContainsFunc(live, func(tok astro.Token) bool { return tok.ID == id }) {
				alive = append(alive, id)
			}
		}
		if failed == 0 || len(made) < failed || len(alive) > 0 {
			return false
		}
		for _, id := range made {
			if !slices.Contains(records[id], "deleted") {
				return false
			}
		}
		return true
	}
	testwait.For(time.Until(ended.Add(promise)), settled)
	settled()
	t.Logf("%d attempts failed, %d tokens made, %d alive %v after the step", failed, len(made), len(alive), time.Since(ended).Round(time.Second))
	if failed == 0 || len(made) != failed {
		t.Errorf("%d failed exchanges, %d tokens made: want one token for each (the creates are made late, not lost)", failed, len(made))
	}
	if len(alive) > 0 {
		t.Errorf("%d of the %d tokens Astro made late are alive %v after the step: %v", len(alive), len(made), promise, alive)
	}
	for _, id := range made {
		if got := records[id]; !slices.Equal(got, []string{"deleting", "deleted"}) {
			t.Errorf("token %s: undelivered records %v, want [deleting deleted]", id, got)
		}
	}
	if ids := w.mintedFor(job.claims); len(ids) != 0 {
		t.Errorf("tokens of the run alive: %v", ids)
	}
}

// recoveryRecords reads the broker's JSON log: how many exchanges of the
// run failed after sending a create, and the outcomes of the undelivered records of creates with
// an unknown outcome, by token id, in order.
func recoveryRecords(t *testing.T, logs, runID string) (failed int, outcomes map[string][]string) {
	t.Helper()
	outcomes = map[string][]string{}
	for _, line := range strings.Split(logs, "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			Audit   string `json:"audit"`
			Outcome string `json:"outcome"`
			RunID   string `json:"run_id"`
			Why     string `json:"why"`
			TokenID string `json:"token_id"`
			Code    string `json:"code"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a broker log line is not JSON: %v", err)
		}
		if rec.RunID != runID {
			continue
		}
		switch {
		// Only the attempts that sent a create: one refused before it
		// (503 restarted, when the job's ID token predates the broker)
		// made nothing to find.
		case rec.Audit == "exchange" && rec.Outcome == "error" && rec.Code == "upstream_unavailable":
			failed++
		case rec.Audit == "undelivered" && rec.Why == "create_outcome_unknown" && rec.TokenID != "":
			outcomes[rec.TokenID] = append(outcomes[rec.TokenID], rec.Outcome)
		}
	}
	return failed, outcomes
}
