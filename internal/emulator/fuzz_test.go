package emulator_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// The fuzz targets drive the handler in-process (no sockets) so that the
// fuzzer gets through many inputs; the loopback tests cover the wire.

func fuzzEmulator(f *testing.F) *emulator.Emulator {
	f.Helper()
	e, err := emulator.New(emulator.Config{Seed: 1, Now: clock.Stopped(time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.UTC)).Now})
	if err != nil {
		f.Fatal(err)
	}
	return e
}

func serve(e *emulator.Emulator, method, target, token string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://emulator"+target, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, req)
	return rec
}

// checkErrorBody fails unless rec is a well-formed error body of its status.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var eb astro.ErrorBody
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("%d without an error body: %v", rec.Code, err)
	}
	if eb.StatusCode != rec.Code || eb.Message == "" || eb.RequestID == "" {
		t.Fatalf("error body %+v for status %d", eb, rec.Code)
	}
}

// FuzzAuthorizationHeader: no header may panic the emulator or be
// accepted unless it carries the owner's value itself. The fuzzer either
// supplies a raw header or damages the valid one (flip a byte, cut the
// tail): small inputs that explore the space next to a valid value, and
// that the fuzzer can minimise quickly.
func FuzzAuthorizationHeader(f *testing.F) {
	e := fuzzEmulator(f)
	owner := e.OrganizationToken()
	f.Add("", uint16(0), byte(0), uint16(0))     // the valid value
	f.Add("", uint16(600), byte(1), uint16(0))   // a flipped signature byte
	f.Add("", uint16(40), byte(0x20), uint16(0)) // a flipped payload byte
	f.Add("", uint16(0), byte(0), uint16(1))     // the last character cut
	f.Add("Bearer ..", uint16(0), byte(0), uint16(0))
	f.Add("Basic dXNlcjpwYXNz", uint16(0), byte(0), uint16(0))
	f.Add("bearer", uint16(0), byte(0), uint16(0))
	f.Fuzz(func(t *testing.T, raw string, pos uint16, flip byte, cut uint16) {
		header := raw
		if raw == "" {
			v := []byte(owner)
			v[int(pos)%len(v)] ^= flip
			v = v[:len(v)-int(cut)%len(v)]
			header = "Bearer " + string(v)
		}
		rec := serve(e, "GET", "/v1/organizations", header, nil)
		scheme, value, _ := strings.Cut(header, " ")
		if rec.Code == http.StatusOK {
			if !strings.EqualFold(scheme, "Bearer") || value != owner {
				t.Fatalf("accepted %q", header)
			}
			return
		}
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d", rec.Code)
		}
		checkErrorBody(t, rec)
	})
}

// FuzzCreateBody: any body gets 200 with a valid token, or a documented
// error; what is created always satisfies the validation rules.
func FuzzCreateBody(f *testing.F) {
	e := fuzzEmulator(f)
	bearer := "Bearer " + e.OrganizationToken()
	path := "/v1/organizations/" + e.OrganizationID() + "/tokens"
	ws := e.WorkspaceIDs()[0]
	f.Add([]byte(`{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION"}`))
	f.Add([]byte(`{"name":"a","role":"WORKSPACE_OWNER","scope":"WORKSPACE","entityId":"` + ws + `","tokenExpiryPeriodInDays":3650}`))
	f.Add([]byte(`{"name":"a","role":"DEPLOYMENT_ADMIN","scope":"DEPLOYMENT","entityId":"` + e.DeploymentIDs()[0] + `"}`))
	f.Add([]byte(`{"name":"","tokenExpiryPeriodInDays":-1}`))
	f.Add([]byte(`{"name":"a","extra":true}`))
	f.Add([]byte(`{"name":"a"`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := serve(e, "POST", path, bearer, body)
		switch rec.Code {
		case http.StatusOK:
			var tok astro.Token
			if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil {
				t.Fatal(err)
			}
			if n := utf8.RuneCountInString(tok.Name); n < 1 || n > emulator.MaxNameLen || tok.Token == "" || len(tok.Roles) != 1 ||
				!astro.ValidRole(tok.Roles[0].EntityType, tok.Roles[0].Role) {
				t.Fatalf("created an invalid token %+v from %q", tok, body)
			}
			if d := tok.ExpiryPeriodInDays; d != nil && (*d < astro.MinExpiryDays || *d > astro.MaxExpiryDays) {
				t.Fatalf("created a token with expiry %d", *d)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			checkErrorBody(t, rec)
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}

// FuzzSetRolesBody: any roles body gets 200 or 400, and an Organization
// token always keeps exactly one organization role.
func FuzzSetRolesBody(f *testing.F) {
	e := fuzzEmulator(f)
	bearer := "Bearer " + e.OrganizationToken()
	base := "/v1/organizations/" + e.OrganizationID() + "/tokens"
	rec := serve(e, "POST", base, bearer, []byte(`{"name":"t","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION"}`))
	var tok astro.Token
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil {
		f.Fatal(err)
	}
	org, ws := e.OrganizationID(), e.WorkspaceIDs()[0]
	f.Add([]byte(`{"roles":[{"entityId":"` + org + `","entityType":"ORGANIZATION","role":"ORGANIZATION_MEMBER"},{"entityId":"` + ws + `","entityType":"WORKSPACE","role":"WORKSPACE_OWNER"}]}`))
	f.Add([]byte(`{"roles":[]}`))
	f.Add([]byte(`{"roles":[{"entityId":"` + ws + `","entityType":"WORKSPACE","role":"WORKSPACE_OWNER"}]}`))
	f.Add([]byte(`{"roles":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := serve(e, "POST", base+"/"+tok.ID+"/roles", bearer, body)
		switch rec.Code {
		case http.StatusOK:
			var sr astro.SubjectRoles
			if err := json.Unmarshal(rec.Body.Bytes(), &sr); err != nil {
				t.Fatal(err)
			}
			if !astro.ValidRole(astro.EntityOrganization, sr.OrganizationRole) {
				t.Fatalf("organization role %q after %q", sr.OrganizationRole, body)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			checkErrorBody(t, rec)
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}

// FuzzListQuery: any query string gets 200 with a consistent page or 400.
func FuzzListQuery(f *testing.F) {
	e := fuzzEmulator(f)
	bearer := "Bearer " + e.OrganizationToken()
	path := "/v1/organizations/" + e.OrganizationID() + "/tokens"
	for _, q := range []string{"", "limit=1000&offset=0", "limit=0", "offset=-1", "limit=99999999999999999999",
		"sorts=name:asc&sorts=createdAt:desc", "sorts=", "workspaceId=" + e.WorkspaceIDs()[0], "includeOnlyOrganizationTokens=true", "%zz", "limit=1&limit=1"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		// Set the raw query directly: a client can send bytes that
		// httptest.NewRequest would refuse to parse.
		req := httptest.NewRequest("GET", "http://emulator"+path, nil)
		req.URL.RawQuery = q
		req.Header.Set("Authorization", bearer)
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var page astro.TokensPage
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
				t.Fatal(err)
			}
			if page.Limit < 1 || page.Limit > emulator.MaxLimit || page.Offset < 0 || len(page.Tokens) > page.Limit || page.Tokens == nil {
				t.Fatalf("inconsistent page %+v for %q", page, q)
			}
		case http.StatusBadRequest:
			checkErrorBody(t, rec)
		default:
			t.Fatalf("status %d for %q", rec.Code, q)
		}
	})
}

// FuzzParseClaims: decoding claims without verification never panics.
func FuzzParseClaims(f *testing.F) {
	e := fuzzEmulator(f)
	f.Add(e.OrganizationToken())
	f.Add("a.b.c")
	f.Add("a.e30.c")
	f.Fuzz(func(t *testing.T, v string) {
		c, err := emulator.ParseClaims(v)
		if err == nil && strings.Count(v, ".") != 2 {
			t.Fatalf("parsed %q into %+v", v, c)
		}
	})
}

// FuzzCreateDeploymentBody: any body gets 200 with a Deployment that keeps
// the rules create enforces, or a documented error.
func FuzzCreateDeploymentBody(f *testing.F) {
	e := fuzzEmulator(f)
	bearer := "Bearer " + e.OrganizationToken()
	path := "/v1/organizations/" + e.OrganizationID() + "/deployments"
	ws := e.WorkspaceIDs()[0]
	valid := `{"type":"STANDARD","name":"p","workspaceId":"` + ws + `","cloudProvider":"AWS","region":"us-east-1",` +
		`"astroRuntimeVersion":"12.4.0","executor":"CELERY","schedulerSize":"SMALL","isCicdEnforced":false,` +
		`"isDagDeployEnabled":true,"isHighAvailability":false,"defaultTaskPodCpu":"1","defaultTaskPodMemory":"2Gi",` +
		`"resourceQuotaCpu":"10","resourceQuotaMemory":"20Gi","workerQueues":[{"name":"default","isDefault":true,` +
		`"astroMachine":"A5","minWorkerCount":0,"maxWorkerCount":10,"workerConcurrency":5}]}`
	f.Add([]byte(valid))
	f.Add([]byte(strings.Replace(valid, `"STANDARD"`, `"DEDICATED"`, 1)))
	f.Add([]byte(strings.Replace(valid, `"CELERY"`, `"KUBERNETES"`, 1)))
	f.Add([]byte(`{"type":"HYBRID","scheduler":{"au":5,"replicas":1}}`))
	f.Add([]byte(`{"workerQueues":[{"name":"default","minWorkerCount":-1}],"scalingSpec":null}`))
	f.Add([]byte(`{"defaultTaskPodCpu":"99999.999","defaultTaskPodMemory":"199999.998Gi"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := serve(e, "POST", path, bearer, body)
		switch rec.Code {
		case http.StatusOK:
			var d astro.Deployment
			if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
				t.Fatal(err)
			}
			if n := utf8.RuneCountInString(d.Name); n < 1 || n > emulator.MaxNameLen || d.WorkspaceID == "" || d.Type == nil ||
				d.Executor == nil || d.WorkerQueues == nil || (*d.Executor != astro.ExecutorKubernetes && !hasDefaultQueue(*d.WorkerQueues)) {
				t.Fatalf("created an invalid Deployment %+v from %q", d, body)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			checkErrorBody(t, rec)
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}

func hasDefaultQueue(qs []astro.WorkerQueue) bool {
	for _, q := range qs {
		if q.Name == "default" && q.IsDefault {
			return true
		}
	}
	return false
}

// FuzzDeploymentListQuery: any query string gets 200 with a consistent
// page or 400.
func FuzzDeploymentListQuery(f *testing.F) {
	e := fuzzEmulator(f)
	bearer := "Bearer " + e.OrganizationToken()
	path := "/v1/organizations/" + e.OrganizationID() + "/deployments"
	ws := e.WorkspaceIDs()
	for _, q := range []string{"", "limit=1000", "workspaceIds=" + ws[0] + "," + ws[1], "workspaceIds=" + ws[0] + "&workspaceIds=,",
		"names=deployment-1&names=a%2Cb", "deploymentIds=" + e.DeploymentIDs()[1], "sorts=updatedAt:desc", "sorts=name:up", "%zz"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		req := httptest.NewRequest("GET", "http://emulator"+path, nil)
		req.URL.RawQuery = q
		req.Header.Set("Authorization", bearer)
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var page astro.DeploymentsPage
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
				t.Fatal(err)
			}
			if page.Limit < 1 || page.Limit > emulator.MaxLimit || page.Offset < 0 || len(page.Deployments) > page.Limit ||
				page.Deployments == nil || page.TotalCount > 2 {
				t.Fatalf("inconsistent page %+v for %q", page, q)
			}
		case http.StatusBadRequest:
			checkErrorBody(t, rec)
		default:
			t.Fatalf("status %d for %q", rec.Code, q)
		}
	})
}
