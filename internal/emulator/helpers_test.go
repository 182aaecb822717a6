package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// env is one emulator served over loopback for one test.
type env struct {
	t     *testing.T
	srv   *emulator.Server
	emu   *emulator.Emulator
	clock *clock.Clock
	org   string
	owner string
}

func start(t *testing.T, cfg emulator.Config) *env {
	t.Helper()
	clock := clock.Stopped(time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.UTC))
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	srv, emu, err := emulator.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &env{t: t, srv: srv, emu: emu, clock: clock, org: emu.OrganizationID(), owner: emu.OrganizationToken()}
}

// response is a raw answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %q", err, r.body)
	}
	return m
}

func (r response) errorBody(t *testing.T) astro.ErrorBody {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	var eb astro.ErrorBody
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("not an error body: %v: %q", err, r.body)
	}
	return eb
}

// do sends one request with raw bytes, bypassing the client on purpose:
// these tests pin the wire format.
func (e *env) do(method, path, token string, body []byte) response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) doJSON(method, path, token string, v any) response {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(method, path, token, b)
}

func (e *env) tokensPath() string { return "/organizations/" + e.org + "/tokens" }

// create makes a token as the owner and returns it with its value.
func (e *env) create(req astro.CreateTokenRequest) astro.Token {
	e.t.Helper()
	r := e.doJSON("POST", e.tokensPath(), e.owner, req)
	if r.status != 200 {
		e.t.Fatalf("create %q: %d %s", req.Name, r.status, r.body)
	}
	var tok astro.Token
	if err := json.Unmarshal(r.body, &tok); err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func intp(v int) *int { return &v }
