package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/runner"
)

// actionBroker is a minimal broker stand-in: exchange answers with
// exchangeStatus, revoke with revokeStatus, and the paths are recorded.
type actionBroker struct {
	exchangeStatus, revokeStatus int
	mu                           sync.Mutex
	paths                        []string
}

func (b *actionBroker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.paths = append(b.paths, r.URL.Path)
	b.mu.Unlock()
	w.Header().Set("X-Request-Id", "stub-1")
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/v1/exchange":
		w.WriteHeader(b.exchangeStatus)
		if b.exchangeStatus == http.StatusOK {
			_ = json.NewEncoder(w).Encode(map[string]string{
				"token": "the-astro-token", "token_id": "tok_1", "workspace_id": "ws_1",
				"role": "WORKSPACE_AUTHOR", "expires_at": "2030-01-02T03:04:05Z", "rule": "r",
			})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "forbidden", "message": "no rule matches"})
	case "/v1/revoke":
		w.WriteHeader(b.revokeStatus)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (b *actionBroker) Paths() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.paths...)
}

func newActionRunner(t *testing.T, b *actionBroker) *runner.Runner {
	t.Helper()
	bs := httptest.NewServer(b)
	t.Cleanup(bs.Close)
	ids := httptest.NewServer(&runner.IDTokenHandler{RequestToken: "rt"})
	t.Cleanup(ids.Close)
	r, err := runner.NewRunner(t.TempDir(), runner.Options{
		Inputs: map[string]string{
			"broker-url": bs.URL, "audience": "", "mode": "exchange", "rotation": "",
			"workspace-id": "", "deployment-id": "", "role": "", "ttl": "",
			"env-name": "ASTRO_API_TOKEN", "export-env": "true", "revoke": "true",
		},
		IDTokenURL:          ids.URL + "/token?api-version=2.0",
		IDTokenRequestToken: "rt",
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestActionEntrypoints runs the binary's entry as the image does (by
// executable name) and as subcommands, and checks exit codes and output.
func TestActionEntrypoints(t *testing.T) {
	tests := []struct {
		name           string
		mainArgs       []string
		postArgs       []string
		exchangeStatus int
		revokeStatus   int
		wantMainCode   int
		wantPaths      []string
		wantStdout     []string // substrings of the combined stdout
	}{
		{
			name:           "image entrypoints",
			mainArgs:       []string{"/usr/local/bin/astro-sts-action"},
			postArgs:       []string{"/usr/local/bin/astro-sts-post"},
			exchangeStatus: 200, revokeStatus: 204,
			wantPaths:  []string{"/v1/exchange", "/v1/revoke"},
			wantStdout: []string{"::add-mask::the-astro-token\n", "Revoked Astro token tok_1."},
		},
		{
			name:           "subcommands",
			mainArgs:       []string{"astro-sts", "action"},
			postArgs:       []string{"astro-sts", "post"},
			exchangeStatus: 200, revokeStatus: 204,
			wantPaths:  []string{"/v1/exchange", "/v1/revoke"},
			wantStdout: []string{"::add-mask::the-astro-token\n", "Revoked Astro token tok_1."},
		},
		{
			name:           "refused exchange: one annotation, exit 1",
			mainArgs:       []string{"/usr/local/bin/astro-sts-action"},
			postArgs:       []string{"/usr/local/bin/astro-sts-post"},
			exchangeStatus: 403,
			wantMainCode:   1,
			wantPaths:      []string{"/v1/exchange"},
			wantStdout:     []string{"::error::the broker refused the exchange (403 forbidden, request id stub-1): no rule matches — ask your platform team"},
		},
		{
			name:           "failed revoke: warning, exit 0",
			mainArgs:       []string{"/usr/local/bin/astro-sts-action"},
			postArgs:       []string{"/usr/local/bin/astro-sts-post"},
			exchangeStatus: 200, revokeStatus: 403,
			wantPaths:  []string{"/v1/exchange", "/v1/revoke"},
			wantStdout: []string{"::warning::Could not revoke Astro token tok_1: the broker refused the revoke (403, request id stub-1)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &actionBroker{exchangeStatus: tt.exchangeStatus, revokeStatus: tt.revokeStatus}
			r := newActionRunner(t, b)
			var stdout, stderr bytes.Buffer

			err := run(context.Background(), tt.mainArgs, r.Environ(), &stdout, &stderr)
			if code := exitCode(err, &stderr); code != tt.wantMainCode {
				t.Errorf("main exit code = %d, want %d (err %v)", code, tt.wantMainCode, err)
			}
			postEnv, perr := r.PostEnv()
			if perr != nil {
				t.Fatal(perr)
			}
			err = run(context.Background(), tt.postArgs, runner.Environ(postEnv), &stdout, &stderr)
			if code := exitCode(err, &stderr); code != 0 {
				t.Errorf("post exit code = %d, want 0 (err %v)", code, err)
			}

			if diff := cmp.Diff(tt.wantPaths, b.Paths()); diff != "" {
				t.Errorf("broker paths (-want +got):\n%s", diff)
			}
			for _, want := range tt.wantStdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			if n := strings.Count(stdout.String(), "::error::"); n != min(tt.wantMainCode, 1) {
				t.Errorf("%d error annotations, want %d", n, min(tt.wantMainCode, 1))
			}
			// Errors are reported once, as an annotation: nothing on stderr.
			if stderr.Len() != 0 {
				t.Errorf("stderr = %q, want empty", stderr.String())
			}
			for i, line := range strings.Split(stdout.String(), "\n") {
				if strings.Contains(line, "the-astro-token") && !strings.HasPrefix(line, "::add-mask::") {
					t.Errorf("stdout line %d shows the token: %q", i+1, line)
				}
			}
		})
	}
}

func TestActionUsage(t *testing.T) {
	for _, args := range [][]string{{"astro-sts", "action", "--help"}, {"astro-sts", "post", "-h"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, nil, &stdout, &stderr)
		if code := exitCode(err, io.Discard); code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
		if !strings.Contains(stderr.String(), "Usage: astro-sts "+args[1]) {
			t.Errorf("%v: usage = %q", args, stderr.String())
		}
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"/usr/local/bin/astro-sts-action", "extra"}, nil, io.Discard, &stderr)
	if code := exitCode(err, io.Discard); code != 2 {
		t.Errorf("stray argument: exit %d, want 2", code)
	}
}
