package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// TestRunEmulator runs the subcommand in-process on a free loopback port,
// reads its first line, uses the printed token, then stops it through ctx.
func TestRunEmulator(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := runEmulator(ctx, []string{"--addr", "127.0.0.1:0", "--workspaces", "3", "--seed", "9"}, nil, pw, io.Discard)
		pw.Close()
		errc <- err
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("first line: %v (run: %v)", err, <-errc)
	}
	// The line is exactly the documented object: decode it strictly.
	var info emulatorInfo
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil {
		t.Fatalf("first line %q: %v", line, err)
	}
	if !strings.HasPrefix(info.URL, "http://127.0.0.1:") || !strings.HasSuffix(info.URL, "/v1") ||
		info.OrganizationID == "" || info.OrganizationToken == "" || len(info.WorkspaceIDs) != 3 || len(info.DeploymentIDs) != 3 || info.ClusterID == "" {
		t.Fatalf("info = %+v", info)
	}

	req, _ := http.NewRequestWithContext(t.Context(), "GET", info.URL+"/organizations/"+info.OrganizationID+"/tokens", nil)
	req.Header.Set("Authorization", "Bearer "+info.OrganizationToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page astro.TokensPage
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || page.TotalCount != 1 || page.Tokens[0].Scope != astro.ScopeOrganization {
		t.Fatalf("list: %d %+v %v", resp.StatusCode, page, err)
	}

	req, _ = http.NewRequestWithContext(t.Context(), "GET", info.URL+"/organizations/"+info.OrganizationID+"/deployments", nil)
	req.Header.Set("Authorization", "Bearer "+info.OrganizationToken)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	var deps astro.DeploymentsPage
	err = json.NewDecoder(resp.Body).Decode(&deps)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || deps.TotalCount != 3 || *deps.Deployments[0].ClusterID != info.ClusterID {
		t.Fatalf("list Deployments: %d %+v %v", resp.StatusCode, deps, err)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("runEmulator = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runEmulator did not return after cancel")
	}
	if _, err := http.Get(info.URL + "/organizations"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestRunEmulatorFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int // exitCode of the error; 0 for help
		wantText string
	}{
		{"help", []string{"--help"}, 0, ""},
		{"all interfaces", []string{"--addr", ":8888"}, 2, "--allow-remote"},
		{"unspecified address", []string{"--addr", "0.0.0.0:8888"}, 2, "--allow-remote"},
		{"public address", []string{"--addr", "192.0.2.1:8888"}, 2, "not a loopback"},
		{"no port", []string{"--addr", "127.0.0.1"}, 2, "--addr"},
		{"zero workspaces", []string{"--workspaces", "0"}, 2, "--workspaces"},
		{"error rate", []string{"--error-rate", "1.5"}, 2, "--error-rate"},
		{"error rate NaN", []string{"--error-rate", "NaN"}, 2, "--error-rate"},
		{"negative latency", []string{"--latency", "-1s"}, 2, "--latency"},
		{"negative create delay", []string{"--create-delay", "-1s"}, 2, "--create-delay"},
		{"stray argument", []string{"now"}, 2, "unexpected argument"},
		{"unknown flag", []string{"--port", "1"}, 2, "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			err := runEmulator(t.Context(), tt.args, nil, io.Discard, &stderr)
			if err == nil {
				t.Fatal("runEmulator = nil")
			}
			if tt.wantCode == 0 {
				if !errors.Is(err, errHelp) || !strings.Contains(stderr.String(), "--allow-remote") {
					t.Errorf("help: %v, usage %q", err, stderr.String())
				}
				return
			}
			if code := exitCode(err, io.Discard); code != tt.wantCode {
				t.Errorf("exit code %d, want %d (%v)", code, tt.wantCode, err)
			}
			if !strings.Contains(err.Error()+stderr.String(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}
