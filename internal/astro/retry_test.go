package astro_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// reply is one scripted answer.
type reply struct {
	status int
	header map[string]string
	body   string
	hang   bool // wait until the client gives up
}

// script is a loopback server that answers from a list (the last reply
// repeats) and records what it received.
type script struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	replies []reply
	hits    []*http.Request
	bodies  []string
}

func newScript(t *testing.T, replies ...reply) *script {
	s := &script{t: t, replies: replies}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *script) serve(w http.ResponseWriter, r *http.Request) {
	var body strings.Builder
	if r.Body != nil {
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			body.Write(buf[:n])
			if err != nil {
				break
			}
		}
	}
	s.mu.Lock()
	rp := s.replies[min(len(s.hits), len(s.replies)-1)]
	s.hits = append(s.hits, r)
	s.bodies = append(s.bodies, body.String())
	s.mu.Unlock()
	if rp.hang {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return
	}
	for k, v := range rp.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(rp.status)
	w.Write([]byte(rp.body))
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hits)
}

func (s *script) client(mod func(*astro.Config)) *astro.Client {
	s.t.Helper()
	cfg := fastConfig(s.srv.URL+"/v1", "secret-token-value", nil)
	if mod != nil {
		mod(&cfg)
	}
	c, err := astro.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

const tokenJSON = `{"id":"t1","name":"n","description":"","shortToken":"abc","scope":"ORGANIZATION","startAt":"2026-01-02T03:04:05Z","createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z"}`

var (
	ok200  = reply{status: 200, body: tokenJSON}
	ok204  = reply{status: 204}
	page   = reply{status: 200, body: `{"tokens":[],"limit":100,"offset":0,"totalCount":0}`}
	roles  = reply{status: 200, body: `{"workspaceRoles":[],"deploymentRoles":[]}`}
	s429   = reply{status: 429, header: map[string]string{"Retry-After": "0"}, body: `{"statusCode":429,"message":"slow down","requestId":"r429"}`}
	s500   = reply{status: 500, body: `{"statusCode":500,"message":"boom","requestId":"r500"}`}
	s502   = reply{status: 502, body: `<html>bad gateway</html>`}
	s503   = reply{status: 503, body: `{"statusCode":503,"message":"unavailable","requestId":"r503"}`}
	s504   = reply{status: 504}
	status = func(code int) reply {
		return reply{status: code, body: `{"statusCode":` + strconv.Itoa(code) + `,"message":"no","requestId":"rq"}`}
	}
)

// The calls under test, by name.
var calls = map[string]func(ctx context.Context, c *astro.Client) error{
	"get": func(ctx context.Context, c *astro.Client) error { _, err := c.GetToken(ctx, "o", "t"); return err },
	"list": func(ctx context.Context, c *astro.Client) error {
		_, err := c.ListTokens(ctx, "o", astro.ListTokensOptions{})
		return err
	},
	"update": func(ctx context.Context, c *astro.Client) error {
		_, err := c.UpdateToken(ctx, "o", "t", astro.UpdateTokenRequest{Name: "n"})
		return err
	},
	"set roles": func(ctx context.Context, c *astro.Client) error {
		_, err := c.SetTokenRoles(ctx, "o", "t", []astro.TokenRole{{EntityID: "o", EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember}})
		return err
	},
	"delete": func(ctx context.Context, c *astro.Client) error { return c.DeleteToken(ctx, "o", "t") },
	"create": func(ctx context.Context, c *astro.Client) error {
		_, err := c.CreateToken(ctx, "o", astro.CreateTokenRequest{Name: "n", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
		return err
	},
	"rotate": func(ctx context.Context, c *astro.Client) error { _, err := c.RotateToken(ctx, "o", "t"); return err },
}

// TestRetryPolicy pins which answers each call retries after.
func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		call       string
		replies    []reply
		wantHits   int
		wantStatus int // 0: success
	}{
		// Idempotent calls retry 429, 502, 503, 504 ...
		{"get", []reply{s503, s503, ok200}, 3, 0},
		{"get", []reply{s502, s504, s429, ok200}, 4, 0},
		{"list", []reply{s503, page}, 2, 0},
		{"update", []reply{s503, ok200}, 2, 0},
		{"set roles", []reply{s502, roles}, 2, 0},
		{"delete", []reply{s504, ok204}, 2, 0},
		// ... until MaxAttempts, returning the last answer ...
		{"get", []reply{s503}, 4, 503},
		{"delete", []reply{s429}, 4, 429},
		// ... and never a 4xx other than 429, nor a 500.
		{"get", []reply{status(400)}, 1, 400},
		{"get", []reply{status(401)}, 1, 401},
		{"get", []reply{status(403)}, 1, 403},
		{"get", []reply{status(404)}, 1, 404},
		{"update", []reply{status(409)}, 1, 409},
		{"get", []reply{s500}, 1, 500},
		{"delete", []reply{status(401)}, 1, 401},
		// A 404 on delete means gone: success.
		{"delete", []reply{status(404)}, 1, 0},
		{"delete", []reply{s503, status(404)}, 2, 0},
		// Create and rotate: 429 only; never a blind repeat after a 5xx.
		{"create", []reply{s429, s429, ok200}, 3, 0},
		{"create", []reply{s503}, 1, 503},
		{"create", []reply{s502}, 1, 502},
		{"create", []reply{s504}, 1, 504},
		{"create", []reply{s500}, 1, 500},
		{"create", []reply{status(400)}, 1, 400},
		{"rotate", []reply{s429, ok200}, 2, 0},
		{"rotate", []reply{s503}, 1, 503},
		{"rotate", []reply{s502}, 1, 502},
	}
	for _, tt := range tests {
		var codes []string
		for _, r := range tt.replies {
			codes = append(codes, strconv.Itoa(r.status))
		}
		t.Run(tt.call+" "+strings.Join(codes, ","), func(t *testing.T) {
			s := newScript(t, tt.replies...)
			err := calls[tt.call](t.Context(), s.client(nil))
			if got := s.count(); got != tt.wantHits {
				t.Errorf("%d requests, want %d", got, tt.wantHits)
			}
			if tt.wantStatus == 0 {
				if err != nil {
					t.Errorf("err = %v, want success", err)
				}
				return
			}
			var ae *astro.APIError
			if !errors.As(err, &ae) || ae.StatusCode != tt.wantStatus {
				t.Fatalf("err = %v, want APIError %d", err, tt.wantStatus)
			}
			if strings.Contains(err.Error(), "secret-token-value") {
				t.Error("the error repeats the token")
			}
		})
	}
}

// TestRetryAfter: after a 429 the call is repeated once the server's
// Retry-After (both forms), capped at MaxRetryAfter, or the backoff has
// passed. The exact waits are computed in TestDelayFollowsRetryAfter; here
// the deadline only catches a wait that ignores the cap (minutes or hours).
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		header string
		maxRA  time.Duration
	}{
		{"seconds, capped", "120", 20 * time.Millisecond},
		{"HTTP date, capped", now.Add(time.Hour).Format(http.TimeFormat), 20 * time.Millisecond},
		{"HTTP date in the past: backoff", now.Add(-time.Hour).Format(http.TimeFormat), time.Hour},
		{"garbage: backoff", "soon", time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScript(t, reply{status: 429, header: map[string]string{"Retry-After": tt.header}}, ok200)
			c := s.client(func(c *astro.Config) {
				c.MaxRetryAfter = tt.maxRA
				c.Now = func() time.Time { return now }
			})
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if _, err := c.GetToken(ctx, "o", "t"); err != nil {
				t.Fatal(err)
			}
			if got := s.count(); got != 2 {
				t.Errorf("%d requests, want 2", got)
			}
		})
	}
	t.Run("RetryAfter on the error", func(t *testing.T) {
		s := newScript(t, reply{status: 429, header: map[string]string{"Retry-After": "7"}})
		_, err := s.client(func(c *astro.Config) { c.MaxAttempts = 1 }).GetToken(t.Context(), "o", "t")
		var ae *astro.APIError
		if !errors.As(err, &ae) || ae.RetryAfter != 7*time.Second {
			t.Errorf("err = %#v", err)
		}
	})
}

// TestTimeoutAfterSending: a request that reached the server and timed out
// is repeated only when it is idempotent.
func TestTimeoutAfterSending(t *testing.T) {
	tests := []struct {
		call     string
		wantHits int
		wantOK   bool
	}{
		{"get", 2, true},
		{"delete", 2, true},
		{"create", 1, false},
		{"rotate", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.call, func(t *testing.T) {
			s := newScript(t, reply{hang: true}, ok200)
			c := s.client(func(c *astro.Config) { c.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} })
			err := calls[tt.call](t.Context(), c)
			if got := s.count(); got != tt.wantHits {
				t.Errorf("%d requests, want %d", got, tt.wantHits)
			}
			if (err == nil) != tt.wantOK {
				t.Errorf("err = %v", err)
			}
		})
	}
}

// TestConnectionRefused: a request that could not even connect was never
// sent, so create and rotate retry it too; every attempt is observed with
// status 0.
func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, name := range []string{"create", "rotate", "get"} {
		t.Run(name, func(t *testing.T) {
			obs := &observed{}
			c, err := astro.New(fastConfig("http://"+addr+"/v1", "secret-token-value", obs))
			if err != nil {
				t.Fatal(err)
			}
			err = calls[name](t.Context(), c)
			var op *net.OpError
			if !errors.As(err, &op) || op.Op != "dial" {
				t.Fatalf("err = %v, want a dial error", err)
			}
			got := obs.take()
			if len(got) != astro.DefaultMaxAttempts || !strings.HasSuffix(got[0], " 0") {
				t.Errorf("observed %v, want %d attempts with status 0", got, astro.DefaultMaxAttempts)
			}
			if strings.Contains(err.Error(), "secret-token-value") {
				t.Error("the error repeats the token")
			}
		})
	}
}

// TestCancelDuringBackoff: a cancelled ctx ends the wait at once, and the
// error says both why it stopped and what the last answer was.
func TestCancelDuringBackoff(t *testing.T) {
	s := newScript(t, s503)
	c := s.client(func(c *astro.Config) { c.BaseDelay, c.MaxDelay = time.Minute, time.Minute })
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := c.GetToken(ctx, "o", "t")
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !isStatus(err, 503) {
		t.Errorf("err = %v, want DeadlineExceeded and the 503", err)
	}
	if s.count() != 1 {
		t.Errorf("%d requests", s.count())
	}
}

// TestRequestShape: headers, method, path escaping, query and body.
func TestRequestShape(t *testing.T) {
	s := newScript(t, ok200, page)
	c := s.client(func(c *astro.Config) { c.UserAgent = "astro-sts/test" })
	days := 3
	if _, err := c.CreateToken(t.Context(), "org 1", astro.CreateTokenRequest{Name: "n", Role: "R", Scope: astro.ScopeWorkspace, EntityID: "w", TokenExpiryPeriodInDays: &days}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTokensPage(t.Context(), "o/x", astro.ListTokensOptions{WorkspaceID: "w", DeploymentID: "d", IncludeOnlyOrganizationTokens: true, Sorts: []string{"name:asc", "createdAt:desc"}}, 10, 0); err != nil {
		t.Fatal(err)
	}
	create, list := s.hits[0], s.hits[1]
	got := map[string]string{
		"method":        create.Method,
		"path":          create.URL.EscapedPath(),
		"authorization": create.Header.Get("Authorization"),
		"user-agent":    create.Header.Get("User-Agent"),
		"content-type":  create.Header.Get("Content-Type"),
		"accept":        create.Header.Get("Accept"),
		"body":          s.bodies[0],
		"list path":     list.URL.EscapedPath(),
		"list query":    list.URL.RawQuery,
		"list body":     s.bodies[1],
	}
	want := map[string]string{
		"method":        "POST",
		"path":          "/v1/organizations/org%201/tokens",
		"authorization": "Bearer secret-token-value",
		"user-agent":    "astro-sts/test",
		"content-type":  "application/json",
		"accept":        "application/json",
		"body":          `{"name":"n","role":"R","scope":"WORKSPACE","entityId":"w","tokenExpiryPeriodInDays":3}`,
		"list path":     "/v1/organizations/o%2Fx/tokens",
		"list query":    "deploymentId=d&includeOnlyOrganizationTokens=true&limit=100&offset=10&sorts=name%3Aasc&sorts=createdAt%3Adesc&workspaceId=w",
		"list body":     "",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

// TestResponses: answers that are not what the API documents.
func TestResponses(t *testing.T) {
	huge := strings.Repeat("x", astro.MaxResponseBytes+1)
	tests := []struct {
		name  string
		reply reply
		check func(t *testing.T, err error)
	}{
		{"non-JSON error body", reply{status: 502, header: map[string]string{"X-Request-Id": "hdr-id"}, body: "<html>"}, func(t *testing.T, err error) {
			var ae *astro.APIError
			if !errors.As(err, &ae) || ae.Message != "Bad Gateway" || ae.RequestID != "hdr-id" {
				t.Errorf("err = %#v", err)
			}
		}},
		{"error body with field errors", reply{status: 400, body: `{"statusCode":400,"message":"bad","requestId":"r","fieldErrors":[{"code":"c","field":"name","message":"m"}]}`}, func(t *testing.T, err error) {
			var ae *astro.APIError
			want := &astro.APIError{StatusCode: 400, Message: "bad", RequestID: "r", FieldErrors: []astro.FieldError{{Code: "c", Field: "name", Message: "m"}}}
			if !errors.As(err, &ae) || !cmp.Equal(want, ae) {
				t.Errorf("err = %#v", err)
			}
		}},
		{"success body too large", reply{status: 200, body: huge}, func(t *testing.T, err error) {
			if !errors.Is(err, astro.ErrResponseTooLarge) {
				t.Errorf("err = %v", err)
			}
		}},
		{"success body not JSON", reply{status: 200, body: "<html>"}, func(t *testing.T, err error) {
			if !errors.Is(err, astro.ErrMalformedResponse) {
				t.Errorf("err = %v", err)
			}
		}},
		{"unknown fields are tolerated", reply{status: 200, body: `{"id":"t1","brandNew":{"x":1}}`}, func(t *testing.T, err error) {
			if err != nil {
				t.Errorf("err = %v", err)
			}
		}},
		{"redirect is not followed", reply{status: 302, header: map[string]string{"Location": "http://127.0.0.1:1/steal"}}, func(t *testing.T, err error) {
			if !isStatus(err, 302) {
				t.Errorf("err = %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScript(t, tt.reply)
			_, err := s.client(func(c *astro.Config) { c.MaxAttempts = 1 }).GetToken(t.Context(), "o", "t")
			tt.check(t, err)
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		cfg astro.Config
		ok  bool
	}{
		{astro.Config{BaseURL: "https://api.astronomer.io/v1"}, true},
		{astro.Config{BaseURL: "https://api.astronomer.io/v1/"}, true},
		{astro.Config{BaseURL: "http://127.0.0.1:8888/v1"}, true},
		{astro.Config{BaseURL: "http://localhost:8888/v1"}, true},
		{astro.Config{BaseURL: "http://[::1]:8888/v1"}, true},
		{astro.Config{BaseURL: "http://api.astronomer.io/v1"}, false},
		{astro.Config{BaseURL: "http://10.0.0.1/v1"}, false},
		{astro.Config{BaseURL: "ftp://api.astronomer.io/v1"}, false},
		{astro.Config{BaseURL: "/v1"}, false},
		{astro.Config{BaseURL: ""}, false},
		{astro.Config{BaseURL: "https://user:pw@api.astronomer.io/v1"}, false},
		{astro.Config{BaseURL: "https://api.astronomer.io/v1?x=1"}, false},
		{astro.Config{BaseURL: "https://api.astronomer.io/v1", Token: "line\nbreak"}, false},
		{astro.Config{BaseURL: "https://api.astronomer.io/v1", MaxAttempts: -1}, false},
		{astro.Config{BaseURL: "https://api.astronomer.io/v1", BaseDelay: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.cfg.BaseURL, func(t *testing.T) {
			_, err := astro.New(tt.cfg)
			if tt.ok && err != nil {
				t.Errorf("New = %v", err)
			}
			if !tt.ok && !errors.Is(err, astro.ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
			if err != nil && strings.Contains(err.Error(), "line\nbreak") {
				t.Error("the error repeats the token")
			}
		})
	}
}

// TestInvalidArguments: arguments that cannot be right are refused before
// anything is sent.
func TestInvalidArguments(t *testing.T) {
	s := newScript(t, ok200)
	c := s.client(nil)
	ctx := t.Context()
	tests := map[string]func() error{
		"empty org":        func() error { _, err := c.GetToken(ctx, "", "t"); return err },
		"empty token id":   func() error { return c.DeleteToken(ctx, "o", "") },
		"negative page":    func() error { _, err := c.ListTokens(ctx, "o", astro.ListTokensOptions{PageSize: -1}); return err },
		"limit too large":  func() error { _, err := c.ListTokensPage(ctx, "o", astro.ListTokensOptions{}, 0, 1001); return err },
		"negative offset":  func() error { _, err := c.ListTokensPage(ctx, "o", astro.ListTokensOptions{}, -1, 10); return err },
		"empty workspace":  func() error { _, err := c.AddTokenToWorkspace(ctx, "o", "t", "", astro.RoleWorkspaceOwner); return err },
		"not a ws role":    func() error { _, err := c.AddTokenToWorkspace(ctx, "o", "t", "w", "ADMIN"); return err },
		"empty ws, remove": func() error { _, err := c.RemoveTokenFromWorkspace(ctx, "o", "t", ""); return err },
		// A gateway that normalises dot segments would turn these into
		// DELETE /organizations/o (or /organizations/o/tokens).
		"token id ..":      func() error { return c.DeleteToken(ctx, "o", "..") },
		"token id .":       func() error { return c.DeleteToken(ctx, "o", ".") },
		"org id ..":        func() error { _, err := c.ListTokensPage(ctx, "..", astro.ListTokensOptions{}, 0, 10); return err },
		"rotate id ..":     func() error { _, err := c.RotateToken(ctx, "o", ".."); return err },
		"workspaces of ..": func() error { _, err := c.ListWorkspaces(ctx, ".."); return err },
		"bad token bytes": func() error {
			_, err := c.WithToken("tok\r\nX-Evil: 1").GetToken(ctx, "o", "t")
			if err != nil && strings.Contains(err.Error(), "Evil") {
				t.Error("the error repeats the token")
			}
			return err
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, astro.ErrInvalidArgument) {
				t.Errorf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if s.count() != 0 {
		t.Errorf("%d requests were sent", s.count())
	}
}
