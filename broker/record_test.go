package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
)

// Every operation leaves exactly one audit record and one metric, whatever
// the exit, with the metric's outcome taken from the status the caller got.
// Each test here pins an exit that once recorded nothing, or recorded the
// wrong outcome.

// unreachableAstro fails GetToken or DeleteToken the way an Astro API that
// cannot be reached does; every other call goes through to the emulator.
type unreachableAstro struct {
	broker.Astro
	get, del bool
}

var errUnreachable = errors.New("dial tcp 127.0.0.1:1: connect: connection refused")

func (u unreachableAstro) GetToken(ctx context.Context, org, id string) (*astro.Token, error) {
	if u.get {
		return nil, errUnreachable
	}
	return u.Astro.GetToken(ctx, org, id)
}

func (u unreachableAstro) DeleteToken(ctx context.Context, org, id string) error {
	if u.del {
		return errUnreachable
	}
	return u.Astro.DeleteToken(ctx, org, id)
}

// A revoke that fails upstream, at either of its two Astro calls, is
// audited like every other decision: the record says who asked for which
// token and why it failed.
func TestRevokeUpstreamFailureIsRecorded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		get, del bool
	}{
		{name: "get token fails", get: true},
		{name: "delete token fails", del: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro {
				return unreachableAstro{Astro: a, get: tc.get, del: tc.del}
			}})
			r := e.exchange(mainClaims(), "")
			status, body, _ := e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, r.TokenID))
			if status != http.StatusBadGateway {
				t.Fatalf("revoke: %d %s, want 502", status, body)
			}
			if recs := e.audits("revoke"); len(recs) != 1 {
				t.Errorf("%d revoke audit records, want 1:\n%s", len(recs), e.logs.String())
			} else if rec := recs[0]; rec["outcome"] != "error" || rec["token_id"] != r.TokenID || rec["run_id"] != "987" ||
				!strings.Contains(fmt.Sprint(rec["reason"]), "connection refused") {
				t.Errorf("revoke audit record: %v", rec)
			}
			if want := `astro_sts_revokes_total{outcome="unavailable"} 1`; !strings.Contains(e.metrics(), want) {
				t.Errorf("metrics lack %s", want)
			}
		})
	}
}

// A broker without rotation refuses POST /v1/rotate with 501; that refusal
// is a decision like any other, with an audit record and a metric.
func TestRotateNotConfiguredIsRecorded(t *testing.T) {
	e := newEnv(t, envOptions{})
	status, body, _ := e.post("/v1/rotate", e.mint(scheduleClaims()), `{"name":"airflow-ci"}`)
	if status != http.StatusNotImplemented {
		t.Fatalf("status %d %s, want 501", status, body)
	}
	if recs := e.audits("rotate"); len(recs) != 1 {
		t.Errorf("%d rotate audit records, want 1:\n%s", len(recs), e.logs.String())
	} else if rec := recs[0]; rec["outcome"] != "error" || rec["repository_id"] != "123456" || rec["reason"] == nil {
		t.Errorf("rotate audit record: %v", rec)
	}
	if want := `astro_sts_rotations_total{name="",outcome="not_configured"} 1`; !strings.Contains(e.metrics(), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// A full replay cache is the broker's state, not the caller's fault: the
// answer is 503 "busy", and revoke and rotate count it as the exchange
// does, "unavailable", never "unauthorized".
func TestReplayCacheFullIsUnavailable(t *testing.T) {
	// One place in the replay cache, taken by the exchange.
	e := newEnv(t, envOptions{replaySize: 1, rotator: failingRotator{}})
	r := e.exchange(mainClaims(), "")

	status, body, _ := e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, r.TokenID))
	if code, _ := errorCode(t, body); status != http.StatusServiceUnavailable || code != "busy" {
		t.Fatalf("revoke: %d %s, want 503 busy", status, body)
	}
	status, body, _ = e.post("/v1/rotate", e.mint(scheduleClaims()), `{"name":"airflow-ci"}`)
	if code, _ := errorCode(t, body); status != http.StatusServiceUnavailable || code != "busy" {
		t.Fatalf("rotate: %d %s, want 503 busy", status, body)
	}
	m := e.metrics()
	for _, want := range []string{
		`astro_sts_revokes_total{outcome="unavailable"} 1`,
		`astro_sts_rotations_total{name="airflow-ci",outcome="unavailable"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, line := range strings.Split(m, "\n") {
		if strings.Contains(line, `outcome="unauthorized"`) {
			t.Errorf("a full replay cache was counted as unauthorized: %s", line)
		}
	}
}

// Each revoke, whichever way it ends, is one audit record and one count
// under the outcome its answer says: a malformed request as much as a
// revoke that deletes.
func TestEveryRevokeIsRecordedOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.exchange(mainClaims(), "")
	other := mainClaims()
	other.RunID = "988"
	for _, tc := range []struct {
		bearer, body string
		status       int
	}{
		{e.mint(mainClaims()), `{"token_id":".."}`, http.StatusBadRequest},
		{"", fmt.Sprintf(`{"token_id":%q}`, r.TokenID), http.StatusUnauthorized},
		{e.mint(other), fmt.Sprintf(`{"token_id":%q}`, r.TokenID), http.StatusNotFound},
		{e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, r.TokenID), http.StatusNoContent},
		{e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, r.TokenID), http.StatusNoContent},
	} {
		if status, body, _ := e.post("/v1/revoke", tc.bearer, tc.body); status != tc.status {
			t.Fatalf("revoke %s: %d %s, want %d", tc.body, status, body, tc.status)
		}
	}
	var got []string
	for _, rec := range e.audits("revoke") {
		got = append(got, fmt.Sprint(rec["outcome"]))
	}
	if d := cmp.Diff([]string{"deny", "deny", "deny", "allow", "allow"}, got); d != "" {
		t.Errorf("revoke audit outcomes (-want +got):\n%s", d)
	}
	counts := map[string]string{}
	for _, line := range strings.Split(e.metrics(), "\n") {
		if rest, ok := strings.CutPrefix(line, `astro_sts_revokes_total{outcome="`); ok {
			label, n, _ := strings.Cut(rest, `"} `)
			counts[label] = n
		}
	}
	want := map[string]string{"bad_request": "1", "unauthorized": "1", "not_found": "1", "revoked": "1", "gone": "1"}
	if d := cmp.Diff(want, counts); d != "" {
		t.Errorf("astro_sts_revokes_total (-want +got):\n%s", d)
	}
}

// Every claim in an exchange, revoke or rotate record is cut to a bounded
// length, and the cut is marked: a claim is signed by GitHub, but its value
// is whoever runs the workflow's to choose.
func TestAuditCutsLongClaims(t *testing.T) {
	e := newEnv(t, envOptions{})
	long := func(prefix string) string { return prefix + strings.Repeat("Z", 2000) }
	c := mainClaims()
	c.Ref, c.Actor, c.JobWorkflowRef, c.CheckRunID = long("refs/heads/"), long("a"), long("acme/dags/.github/workflows/x.yml@"), long("1")
	// The check_run_id is refused (bad_claims) once verified: its record
	// still has the claims, cut.
	if status, body, _ := e.post("/v1/exchange", e.mint(c), ""); status != http.StatusUnauthorized {
		t.Fatalf("exchange: %d %s, want 401", status, body)
	}
	if status, body, _ := e.post("/v1/revoke", e.mint(c), `{"token_id":"clxxxxxxxxxxxxxxxxxxxxxxx"}`); status < 400 {
		t.Fatalf("revoke: %d %s, want a refusal", status, body)
	}
	if status, body, _ := e.post("/v1/rotate", e.mint(c), `{"name":"airflow-ci"}`); status < 400 {
		t.Fatalf("rotate: %d %s, want a refusal", status, body)
	}
	for _, op := range []string{"exchange", "revoke", "rotate"} {
		recs := e.audits(op)
		if len(recs) != 1 {
			t.Fatalf("%d %s audit records, want 1", len(recs), op)
		}
		for _, k := range []string{"ref", "actor", "workflow_ref", "check_run_id"} {
			v, _ := recs[0][k].(string)
			if len(v) > 300 || !strings.HasSuffix(v, "ZZZ... (cut)") {
				t.Errorf("%s record: %s is %d bytes (%.40q...), want it cut to 256 and marked", op, k, len(v), v)
			}
		}
	}
}
