package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/demo"
)

// TestRunDemo runs `astro-sts demo` in-process, as `go run ./cmd/astro-sts
// demo` does, with no configuration at all.
func TestRunDemo(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantStderr []string // substrings; nil means stderr must stay empty
	}{
		{name: "plain"},
		{name: "verbose", args: []string{"--verbose"}, wantStderr: []string{"audit=exchange", "audit=revoke", "audit=reap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"astro-sts", "demo"}, tt.args...), nil, &stdout, &stderr)
			if code := exitCode(err, io.Discard); code != 0 {
				t.Fatalf("exit %d (%v)\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
			}
			out := stdout.String()
			for _, want := range []string{
				"1. Main step of the action", "| Exported it as ASTRO_API_TOKEN",
				"-> 200 OK, 1 token(s)", "| Revoked Astro token ", "The token now gets 401 Unauthorized.",
				"403 denied, request id ", "1 token(s) deleted", "All steps turned out as expected.",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			// Every token the demo handles (Astro's and GitHub's) is a JWT,
			// and every JWT starts with eyJ: none may be printed or logged.
			if strings.Contains(out, "eyJ") || strings.Contains(stderr.String(), "eyJ") {
				t.Errorf("a JWT-shaped value was printed")
			}
			// Human-readable only: no JSON log lines.
			if strings.Contains(out, `{"time"`) || strings.Contains(stderr.String(), `{"time"`) {
				t.Error("JSON logs in the demo's output")
			}
			if tt.wantStderr == nil && stderr.Len() != 0 {
				t.Errorf("stderr = %q, want empty", stderr.String())
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q", want)
				}
			}
		})
	}
}

func TestRunDemoFlags(t *testing.T) {
	var stdout bytes.Buffer
	err := run(context.Background(), []string{"astro-sts", "demo", "--print-policy"}, nil, &stdout, io.Discard)
	if err != nil {
		t.Fatalf("--print-policy: %v", err)
	}
	if !bytes.Equal(stdout.Bytes(), demo.SamplePolicy()) {
		t.Errorf("--print-policy printed %q, want the sample policy", stdout.String())
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantHelp bool
	}{
		{name: "help", args: []string{"--help"}, wantHelp: true},
		{name: "stray argument", args: []string{"now"}, wantCode: 2},
		{name: "unknown flag", args: []string{"--policy", "x.yaml"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runDemo(t.Context(), tt.args, nil, &stdout, &stderr)
			if tt.wantHelp {
				if !errors.Is(err, errHelp) || !strings.Contains(stderr.String(), "-print-policy") {
					t.Errorf("help: %v, usage %q", err, stderr.String())
				}
				return
			}
			if code := exitCode(err, io.Discard); code != tt.wantCode {
				t.Errorf("exit %d, want %d (%v)", code, tt.wantCode, err)
			}
			if stdout.Len() != 0 {
				t.Errorf("the demo ran despite bad usage:\n%s", stdout.String())
			}
		})
	}
}
