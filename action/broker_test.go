package action

import (
	"encoding/json"
	"html"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/loopback"
)

func TestBrokerErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  BrokerError
		want string
	}{
		{
			name: "400 exchange",
			err:  BrokerError{Op: opExchange, Status: 400, Code: "bad_request", Message: "ttl exceeds 1h"},
			want: "the broker refused the exchange (400 bad_request): ttl exceeds 1h — check the inputs workspace-id, deployment-id, role and ttl",
		},
		{
			// Each attempt sends a fresh token: a replay means another
			// party spent this one first. Not the audience.
			name: "401 replayed",
			err: BrokerError{Op: opExchange, Status: 401, Code: "token_invalid", Reason: "replayed", RequestID: "r1",
				Message: "this OIDC token was already used: each request needs a fresh one"},
			want: "the broker refused the exchange (401 token_invalid/replayed, request id r1): this OIDC token was already used: each request needs a fresh one — " +
				"the action fetches a fresh token for each attempt, so another party used this job's token first: re-run the job, and tell your platform team with the request id",
		},
		{
			name: "401 missing run claims",
			err: BrokerError{Op: opExchange, Status: 401, Code: "token_invalid", Reason: "missing_run_claims",
				Message: "the OIDC token has no repository_id or run_id"},
			want: "the broker refused the exchange (401 token_invalid/missing_run_claims): the OIDC token has no repository_id or run_id — " +
				"the token is not what the broker takes from a GitHub Actions job: tell your platform team, with the request id",
		},
		{
			name: "401 without a body",
			err:  BrokerError{Op: opExchange, Status: 401},
			want: "the broker refused the exchange (401): unauthorized — the broker did not accept this job's OIDC token: check that the audience input matches the broker's configured audience",
		},
		{
			name: "403 revoke",
			err:  BrokerError{Op: opRevoke, Status: 403, Code: "denied", Message: "no policy rule allows this identity"},
			want: "the broker refused the revoke (403 denied): no policy rule allows this identity — no rule of the trust policy trusts this job any more, so it may not revoke; the broker's reaper deletes the token when it expires",
		},
		{
			name: "404 revoke",
			err:  BrokerError{Op: opRevoke, Status: 404, Code: "not_found", Message: "this run has no token of that id to revoke"},
			want: "the broker refused the revoke (404 not_found): this run has no token of that id to revoke — this run has no token of that id left: the reaper deleted it (its ttl passed) or someone did by hand",
		},
		{
			name: "403 rotate",
			err:  BrokerError{Op: opRotate, Rotation: "nightly", Status: 403, Code: "denied", Message: "no rotation of that name allows this identity"},
			want: `the broker refused rotation "nightly" (403 denied): no rotation of that name allows this identity — check the rotation input against the broker's rotation config, and ask your platform team to allow this workflow to run the rotation`,
		},
		{
			name: "404 rotate",
			err:  BrokerError{Op: opRotate, Rotation: "nightly", Status: 404, Code: "not_found", Message: "no rotation nightly"},
			want: `the broker refused rotation "nightly" (404 not_found): no rotation nightly — check the rotation input against the broker's rotation config, and broker-url`,
		},
		{
			name: "429 with Retry-After",
			err:  BrokerError{Op: opExchange, Status: 429, Code: "rate_limited", Message: "slow down", RetryAfter: 7 * time.Second},
			want: "the broker refused the exchange (429 rate_limited): slow down — " +
				"re-run the job after 7s: the action does not wait out a rate limit, so that a runaway job stops here",
		},
		{
			name: "429 without Retry-After",
			err:  BrokerError{Op: opExchange, Status: 429, Code: "rate_limited", Message: "slow down"},
			want: "the broker refused the exchange (429 rate_limited): slow down — " +
				"re-run the job later: the action does not wait out a rate limit, so that a runaway job stops here",
		},
		{
			// Astro throttles the broker, not this repository: its limit
			// is not the policy's, and waiting on this job will not help.
			name: "429 upstream: Astro throttles the broker",
			err: BrokerError{Op: opExchange, Status: 429, Code: "upstream_unavailable", Reason: "astro_rate_limited",
				Message: "the Astro API is rate limiting; try again later", RetryAfter: 20 * time.Second},
			want: "the broker refused the exchange (429 upstream_unavailable/astro_rate_limited): the Astro API is rate limiting; try again later — " +
				"the Astro API is throttling the broker, for the whole organization: re-run the job after 20s, and tell your platform team if it persists",
		},
		{
			name: "503 store_unavailable after retries",
			err: BrokerError{Op: opExchange, Status: 503, Code: "store_unavailable", Attempts: 4,
				Message: "the broker cannot reach its shared state; try again"},
			want: "the broker failed the exchange (503 store_unavailable): the broker cannot reach its shared state; try again — " +
				"the broker cannot reach its shared store (Redis), and does nothing without its replay check: gave up after 4 attempts; re-run the job, and tell your platform team if it persists",
		},
		{
			name: "503 after retries",
			err:  BrokerError{Op: opRevoke, Status: 503, Attempts: 4},
			want: "the broker failed the revoke (503): service unavailable — gave up after 4 attempts: re-run the job, and tell your platform team if it persists",
		},
		{
			name: "rotate with failed sinks",
			err:  BrokerError{Op: opRotate, Rotation: "r", Status: 502, Code: "sink_failed", Message: "1 of 2 sinks failed", Sinks: []SinkResult{{Kind: "vault"}}},
			want: `the broker failed rotation "r" (502 sink_failed): 1 of 2 sinks failed — see the step summary for each sink; fix the failing sink and re-run`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.err.Error()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestBrokerErrorFromBody(t *testing.T) {
	c := &brokerClient{now: func() time.Time { return testNow }}
	tests := []struct {
		name string
		r    reply
		want BrokerError
	}{
		{
			name: "contract body",
			r:    reply{status: 403, header: http.Header{}, body: []byte(`{"error":"forbidden","message":"no rule matches"}`), attempts: 1},
			want: BrokerError{Op: opExchange, Status: 403, Code: "forbidden", Message: "no rule matches", Attempts: 1},
		},
		{
			name: "control characters and workflow commands are flattened",
			r:    reply{status: 400, header: http.Header{}, body: []byte(`{"error":"bad","message":"line1\n::set-env name=X::y\r\u0007end"}`)},
			want: BrokerError{Op: opExchange, Status: 400, Code: "bad", Message: "line1 ::set-env name=X::y end"},
		},
		{
			name: "HTML from a proxy is dropped",
			r:    reply{status: 502, header: http.Header{"Retry-After": {"12"}}, body: []byte("<html>bad gateway</html>")},
			want: BrokerError{Op: opExchange, Status: 502, RetryAfter: 12 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.brokerError(opExchange, &tt.r)
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSinkResultVersion(t *testing.T) {
	var got []SinkResult
	in := `[{"kind":"vault","target":"a","version":3},{"kind":"github","target":"b","version":"v2"},{"kind":"x","target":"c","version":null},{"kind":"y","target":"d"}]`
	if err := json.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := []SinkResult{{Kind: "vault", Target: "a", Version: "3"}, {Kind: "github", Target: "b", Version: "v2"}, {Kind: "x", Target: "c"}, {Kind: "y", Target: "d"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := json.Unmarshal([]byte(`{"version":{"a":1}}`), new(SinkResult)); err == nil {
		t.Error("an object version was accepted")
	}
}

func TestExchangedStringHidesToken(t *testing.T) {
	x := exchanged{Token: astroToken, TokenID: "tok_1", Role: "WORKSPACE_AUTHOR"}
	for _, s := range []string{x.String(), x.GoString()} {
		if strings.Contains(s, astroToken) || !strings.Contains(s, "tok_1") {
			t.Errorf("String = %q", s)
		}
	}
}

func TestParseBrokerURL(t *testing.T) {
	tests := []struct {
		in     string
		wantOK bool
	}{
		{"https://sts.example.com", true},
		{"https://sts.example.com/prefix/", true},
		{"http://127.0.0.1:8080", true},
		{"http://localhost:8080/sts", true},
		{"http://[::1]:8080", true},
		{"http://sts.example.com", false},
		{"http://127.0.0.1.example.com", false},
		{"https://user@sts.example.com", false},
		{"https://sts.example.com/?x=1", false},
		{"https://sts.example.com/#frag", false},
		{"sts.example.com", false},
		{"https:sts.example.com", false},
		{"ftp://127.0.0.1", false},
		{"://", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := parseBrokerURL(tt.in)
			if (err == nil) != tt.wantOK {
				t.Errorf("parseBrokerURL(%q) err = %v, want ok %v", tt.in, err, tt.wantOK)
			}
		})
	}
}

func FuzzParseBrokerURL(f *testing.F) {
	for _, s := range []string{"https://sts.example.com/p/", "http://127.0.0.1:1", "http://localhost", "http://10.0.0.1", "https://u:p@h", "http://[::1]/x?y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := parseBrokerURL(raw)
		if err != nil {
			return
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Host == "" {
			t.Fatalf("accepted %q with credentials, query, fragment or no host", raw)
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && loopback.IsHost(u.Hostname())) {
			t.Fatalf("accepted %q: clear text to a non-loopback host", raw)
		}
		if got := u.JoinPath("v1/exchange").String(); !strings.HasSuffix(got, "/v1/exchange") || strings.Contains(got, "//v1") {
			t.Fatalf("JoinPath(%q) = %q", raw, got)
		}
	})
}

// FuzzBrokerErrorBody feeds arbitrary bodies to the error path: whatever
// the broker sends, the error stays one line without control characters.
func FuzzBrokerErrorBody(f *testing.F) {
	f.Add(503, []byte(`{"error":"unavailable","message":"x"}`), "3")
	f.Add(403, []byte("{\"error\":\"a\\nb\",\"message\":\"\\u2028::error::x\"}"), "")
	f.Add(502, []byte("<html>"), "Wed, 21 Oct 2015 07:28:00 GMT")
	c := &brokerClient{now: func() time.Time { return testNow }}
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		r := &reply{status: status, header: http.Header{"Retry-After": {retryAfter}}, body: body}
		for _, op := range []string{opExchange, opRevoke, opRotate} {
			e := c.brokerError(op, r)
			msg := e.Error()
			for _, ch := range msg {
				if unicode.IsControl(ch) || ch == '\u2028' || ch == '\u2029' {
					t.Fatalf("control character %U in %q", ch, msg)
				}
			}
			if len([]rune(e.Message)) > 301 || len([]rune(e.Code)) > 65 {
				t.Fatalf("message or code not shortened: %d, %d runes", len([]rune(e.Message)), len([]rune(e.Code)))
			}
			if e.RetryAfter < 0 || e.RetryAfter > 24*time.Hour {
				t.Fatalf("RetryAfter = %v", e.RetryAfter)
			}
		}
	})
}

// FuzzMarkdownCell checks that broker text reaches the step summary as
// one code element that reads back as the cleaned text, and that its source
// holds nothing but letters, digits, spaces and character references: no
// "|" to end a cell, no line break to end a row, no markup or HTML, and
// none of the characters an autolink, an e-mail link or an @mention starts
// from.
func FuzzMarkdownCell(f *testing.F) {
	for _, s := range []string{"a|b", "x\ny", "<script>", "`code`", "\\|", "[l](u)", "see https://evil.example or www.evil.example", "a@b.example @octocat #1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := md(s)
		want := cleanText(s, 500)
		if want == "" {
			if got != "–" {
				t.Fatalf("md(%q) = %q, want –", s, got)
			}
			return
		}
		inner, ok := strings.CutPrefix(got, "<code>")
		if inner, ok = strings.CutSuffix(inner, "</code>"); !ok {
			t.Fatalf("md(%q) = %q is not one code element", s, got)
		}
		if i := strings.IndexFunc(inner, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == ' ' || r == '&' || r == '#' || r == ';')
		}); i >= 0 {
			t.Fatalf("md(%q) = %q holds %q", s, got, inner[i:])
		}
		if back := html.UnescapeString(inner); back != want {
			t.Fatalf("md(%q) reads back as %q, want %q", s, back, want)
		}
	})
}

// FuzzExchangeReply decodes arbitrary 200 answers: the client either
// refuses them or returns a complete, single-line result.
func FuzzExchangeReply(f *testing.F) {
	good, _ := json.Marshal(map[string]string{"token": "t", "token_id": "i", "expires_at": "2030-01-02T03:04:05Z"})
	f.Add(good)
	f.Add([]byte(`{"token":"a\nb","token_id":"i","expires_at":"2030-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"token":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var w exchangeReply
		if json.Unmarshal(body, &w) != nil {
			return
		}
		_, err := time.Parse(time.RFC3339, w.ExpiresAt)
		complete := w.Token != "" && w.TokenID != "" && err == nil
		oneLine := !strings.ContainsAny(w.Token+w.TokenID+w.OrganizationID+w.WorkspaceID+w.DeploymentID+w.Role+w.Rule, "\r\n")
		got, gotErr := validateExchange(w)
		if (gotErr == nil) != (complete && oneLine) {
			t.Fatalf("validateExchange(%s) err = %v, want ok %v", body, gotErr, complete && oneLine)
		}
		if gotErr == nil && got.Token != w.Token {
			t.Fatalf("token changed")
		}
	})
}
