package runner

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sethvargo/go-githubactions"
)

func TestParseFileCommands(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    map[string]string
		wantErr bool
	}{
		{name: "empty", text: "", want: map[string]string{}},
		{name: "name=value", text: "A=1\nB=x=y<<z\n", want: map[string]string{"A": "1", "B": "x=y<<z"}},
		{name: "empty value", text: "A=\n", want: map[string]string{"A": ""}},
		{name: "empty lines are skipped", text: "\n\nA=1\n\n", want: map[string]string{"A": "1"}},
		{name: "last wins", text: "A=1\nA=2\n", want: map[string]string{"A": "2"}},
		{name: "heredoc", text: "A<<EOF\nline 1\nline 2\nEOF\nB=2\n", want: map[string]string{"A": "line 1\nline 2", "B": "2"}},
		{name: "heredoc, empty value", text: "A<<EOF\nEOF\n", want: map[string]string{"A": ""}},
		{name: "heredoc keeps = and empty lines", text: "A<<D\nx=1\n\nD\n", want: map[string]string{"A": "x=1\n"}},
		{name: "heredoc before =", text: "A<<D=x\nv\nD=x\n", want: map[string]string{"A": "v"}},
		{name: "heredoc without trailing newline", text: "A<<EOF\nv\nEOF", want: map[string]string{"A": "v"}},
		{name: "delimiter matched exactly, not by prefix", text: "A<<EOF\nEOFX\n EOF\nEOF\r\nEOF\n", want: map[string]string{"A": "EOFX\n EOF\nEOF\r"}},
		{name: "unclosed heredoc", text: "A<<EOF\nv\n", wantErr: true},
		{name: "empty name", text: "=v\n", wantErr: true},
		{name: "empty delimiter", text: "A<<\nv\n", wantErr: true},
		{name: "neither form", text: "just text\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ParseFileCommands(p)
			if tt.wantErr {
				if !errors.Is(err, ErrFileCommand) {
					t.Fatalf("err = %v, want ErrFileCommand", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFileCommandsMissingFile(t *testing.T) {
	got, err := ParseFileCommands(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want empty, nil", got, err)
	}
}

// TestRunnerRoundTrip writes through go-githubactions, as the action does,
// and reads back with the runner's rules.
func TestRunnerRoundTrip(t *testing.T) {
	r, err := NewRunner(t.TempDir(), Options{
		Inputs: map[string]string{"broker-url": "https://sts", "my input": "x"},
		Env:    map[string]string{"GITHUB_REPOSITORY": "octo/repo"},
	})
	if err != nil {
		t.Fatal(err)
	}
	env := r.Env()
	for k, want := range map[string]string{"INPUT_BROKER-URL": "https://sts", "INPUT_MY_INPUT": "x", "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "octo/repo"} {
		if env[k] != want {
			t.Errorf("env[%s] = %q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["ACTIONS_ID_TOKEN_REQUEST_URL"]; ok {
		t.Error("ACTIONS_ID_TOKEN_REQUEST_URL set without IDTokenURL")
	}
	a := githubactions.New(githubactions.WithGetenv(func(k string) string { return env[k] }), githubactions.WithWriter(io.Discard))
	if got := a.GetInput("broker-url"); got != "https://sts" {
		t.Errorf("GetInput = %q", got)
	}
	a.SetEnv("MULTI", "a\nb")
	a.SetOutput("out", "v")
	a.SaveState("TOKEN_ID", "tok_1")
	a.AddPath("/opt/bin")
	a.AddStepSummary("# hi")

	exported, err := r.ExportedEnv()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"MULTI": "a\nb"}, exported); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	outs, _ := r.Outputs()
	if diff := cmp.Diff(map[string]string{"out": "v"}, outs); diff != "" {
		t.Errorf("outputs (-want +got):\n%s", diff)
	}
	paths, _ := r.Paths()
	if diff := cmp.Diff([]string{"/opt/bin"}, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	if s, _ := r.Summary(); s != "# hi\n" {
		t.Errorf("summary = %q", s)
	}

	post, err := r.PostEnv()
	if err != nil {
		t.Fatal(err)
	}
	if post["STATE_TOKEN_ID"] != "tok_1" || post["MULTI"] != "a\nb" || post["INPUT_BROKER-URL"] != "https://sts" {
		t.Errorf("post env lacks state, exported env or inputs: %v", post)
	}
	if post["GITHUB_STATE"] == r.StateFile {
		t.Error("post step shares the main step's state file")
	}
}

func TestIDTokenHandler(t *testing.T) {
	h := &IDTokenHandler{RequestToken: "rt", FailFirst: 1}
	srv := httptest.NewServer(h)
	defer srv.Close()

	get := func(url, auth string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct{ Value string }
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &v)
		return resp.StatusCode, v.Value
	}
	base := srv.URL + "/token?api-version=2.0"
	if code, _ := get(base+"&audience=a", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong request token: %d", code)
	}
	if code, _ := get(srv.URL+"/token?audience=a", "Bearer rt"); code != http.StatusBadRequest {
		t.Errorf("missing api-version: %d", code)
	}
	if code, _ := get(base+"&audience=a", "Bearer rt"); code != http.StatusServiceUnavailable {
		t.Errorf("first request should fail: %d", code)
	}

	// Through go-githubactions, as the action asks for tokens.
	env := map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": base, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "rt"}
	a := githubactions.New(githubactions.WithGetenv(func(k string) string { return env[k] }))
	t1, err := a.GetIDToken(t.Context(), "https://sts.example.com")
	if err != nil {
		t.Fatal(err)
	}
	t2, err := a.GetIDToken(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"https://sts.example.com", "other"}, h.Audiences()); diff != "" {
		t.Errorf("audiences (-want +got):\n%s", diff)
	}
	c1, c2 := claims(t, t1), claims(t, t2)
	if c1["aud"] != "https://sts.example.com" || c1["jti"] == "" || c1["jti"] == c2["jti"] {
		t.Errorf("claims: %v / %v", c1, c2)
	}
	if diff := cmp.Diff([]string{t1, t2}, h.Issued()); diff != "" {
		t.Errorf("issued (-want +got):\n%s", diff)
	}
}

func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not JWT-shaped: %q", tok)
	}
	var c map[string]any
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// FuzzParseFileCommands checks the parser never panics, and that what
// go-githubactions writes (a heredoc with its fixed delimiter) reads back
// unchanged whenever the value does not hold the delimiter line.
func FuzzParseFileCommands(f *testing.F) {
	f.Add("NAME", "value")
	f.Add("A", "multi\nline\n")
	f.Add("B", "x=y<<z")
	f.Add("C", "_GitHubActionsFileCommandDelimeter_")
	p := filepath.Join(f.TempDir(), "env")
	f.Fuzz(func(t *testing.T, name, value string) {
		_, _ = parseFileCommands(name + "=" + value + "\n" + value) // must not panic

		const delim = "_GitHubActionsFileCommandDelimeter_"
		if name == "" || strings.ContainsAny(name, "=\n") || strings.Contains(name, "<<") {
			return
		}
		for _, line := range strings.Split(value, "\n") {
			if line == delim {
				return
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		env := map[string]string{"GITHUB_ENV": p}
		a := githubactions.New(githubactions.WithGetenv(func(k string) string { return env[k] }), githubactions.WithWriter(io.Discard))
		a.SetEnv(name, value)
		got, err := ParseFileCommands(p)
		if err != nil {
			t.Fatalf("SetEnv(%q, %q) then parse: %v", name, value, err)
		}
		if diff := cmp.Diff(map[string]string{name: value}, got); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}
