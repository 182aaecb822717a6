package imagetest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/action"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/runner"
)

// jobEnv is what the runner gives every step of a job for claims: the
// GITHUB_* variables of the run and, with idToken (the job has
// `permissions: id-token: write`), the ID-token endpoint and its token.
func (w *world) jobEnv(trusted, idToken bool, run int) map[string]string {
	c := w.claims("", trusted, run)
	env := map[string]string{
		"GITHUB_REPOSITORY":     c.Repository,
		"GITHUB_REPOSITORY_ID":  c.RepositoryID,
		"GITHUB_RUN_ID":         c.RunID,
		"GITHUB_RUN_ATTEMPT":    c.RunAttempt,
		"GITHUB_SHA":            c.SHA,
		"GITHUB_WORKFLOW_REF":   c.WorkflowRef,
		"GITHUB_ACTOR":          c.Actor,
		"ACTIONS_RUNTIME_URL":   "https://pipelines.actions.githubusercontent.invalid/",
		"ACTIONS_RUNTIME_TOKEN": "runtime-token",
	}
	if idToken {
		env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = w.iss.RequestURL(c)
		env["ACTIONS_RUNTIME_TOKEN"] = env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] // the runner's one access token
	}
	return env
}

// tokenStatus is the emulator's answer to a request made with value, as
// the astro CLI would make one: listing the Workspace's tokens.
func (w *world) tokenStatus(t *testing.T, value string) int {
	t.Helper()
	c, err := astro.New(astro.Config{BaseURL: w.emuURL, Token: value, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.ListTokens(ctx, w.emu.OrganizationID(), astro.ListTokensOptions{WorkspaceID: w.emu.WorkspaceIDs()[0]})
	var apiErr *astro.APIError
	switch {
	case err == nil:
		return 200
	case errors.As(err, &apiErr):
		return apiErr.StatusCode
	}
	t.Fatalf("list tokens: %v", err)
	return 0
}

// annotations returns the lines of stdout that are workflow commands of
// the kind ("error", "warning").
func annotations(stdout, kind string) []string {
	var out []string
	for _, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(line, "::"+kind) {
			out = append(out, line)
		}
	}
	return out
}

// TestActionAsTheRunnerRunsIt runs the action's main and post steps from
// the image the way GitHub's runner runs a container action, against the
// broker from the same image, and checks what the runner and the job's
// later steps see.
func TestActionAsTheRunnerRunsIt(t *testing.T) {
	e, img := needImage(t)
	m := loadActionManifest(t)
	w := newWorld(t)
	b := w.startBroker(t, e, img)

	job := newRunnerJob(t, m, img.Ref, map[string]string{"broker-url": b.url}, w.jobEnv(true, true, 1))
	main := job.runStep(t, e, false)
	if main.code != 0 || main.stderr != "" {
		t.Fatalf("main: exit %d, stderr %q, stdout:\n%s", main.code, main.stderr, main.stdout)
	}
	value, id := main.env["ASTRO_API_TOKEN"], main.output["token-id"]
	if value == "" || id == "" {
		t.Fatalf("no token exported (%d bytes) or no token-id output (%q)", len(value), id)
	}
	if len(main.env) != 1 {
		t.Errorf("GITHUB_ENV sets %d variables, want ASTRO_API_TOKEN only", len(main.env))
	}
	if diff := cmp.Diff(map[string]string{action.StateTokenID: id}, main.state); diff != "" {
		t.Errorf("GITHUB_STATE (-want +got):\n%s", diff)
	}
	if main.output["token"] != value {
		t.Error("the token output is not the exported value")
	}
	if err := runner.MaskedFirst(main.stdout, value); err != nil {
		t.Errorf("main stdout: %v", err)
	}
	if a := append(annotations(main.stdout, "error"), annotations(main.stdout, "warning")...); len(a) != 0 {
		t.Errorf("main annotations: %q", a)
	}
	if strings.Contains(main.summary, value) {
		t.Error("the step summary shows the token value")
	}
	if status := w.tokenStatus(t, value); status != 200 {
		t.Fatalf("with the exported token the Astro API answers %d, want 200", status)
	}

	post := job.runStep(t, e, true)
	if post.code != 0 || post.stderr != "" || !strings.Contains(post.stdout, "Revoked Astro token "+id+".") {
		t.Fatalf("post: exit %d, stderr %q, stdout:\n%s", post.code, post.stderr, strings.ReplaceAll(post.stdout, value, "<token>"))
	}
	if strings.Contains(post.stdout, value) || len(annotations(post.stdout, "warning")) != 0 {
		t.Errorf("post stdout warns or shows the token:\n%s", strings.ReplaceAll(post.stdout, value, "<token>"))
	}
	if status := w.tokenStatus(t, value); status != 401 {
		t.Errorf("after the post step the token gets %d, want 401", status)
	}
}

// TestActionFailures: a main step that fails exits 1 with one ::error::
// that says what to do and writes no file command; the post step, which
// runs anyway (post-if: always()), then has nothing to revoke. A broker
// gone by the time of the post step makes it warn, not fail.
func TestActionFailures(t *testing.T) {
	t.Parallel() // its cases wait out the action's backoff
	e, img := needImage(t)
	m := loadActionManifest(t)
	if m.Runs.PostIf != "always()" {
		t.Fatalf("action.yml post-if = %q; the cases below assume always()", m.Runs.PostIf)
	}
	w := newWorld(t)
	b := w.startBroker(t, e, img)
	dead := "http://" + freeAddr(t)

	t.Run("main", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name      string
			brokerURL string
			trusted   bool
			idToken   bool
			wantError []string // in the ::error:: line
		}{
			{"broker refuses", b.url, false, true, []string{
				"::error::the broker refused the exchange (403 denied, request id ",
				"): no policy rule allows this identity — no rule of the trust policy trusts this job",
			}},
			{"broker down", dead, true, true, []string{"check broker-url and that the broker is up"}},
			{"no id-token permission", b.url, true, false, []string{"no OIDC token: add `permissions: id-token: write` to the job"}},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel() // "broker down" waits out the action's backoff
				job := newRunnerJob(t, m, img.Ref, map[string]string{"broker-url": tt.brokerURL}, w.jobEnv(tt.trusted, tt.idToken, 10+i))
				main := job.runStep(t, e, false)
				if main.code != 1 || main.stderr != "" {
					t.Errorf("main: exit %d, stderr %q; want 1 and nothing (the error is an annotation)", main.code, main.stderr)
				}
				errs := annotations(main.stdout, "error")
				ok := len(errs) == 1 && strings.HasPrefix(errs[0], "::error::")
				for _, want := range tt.wantError {
					ok = ok && strings.Contains(errs[0], want)
				}
				if !ok {
					t.Errorf("error annotations %q, want one containing %q\nstdout:\n%s", errs, tt.wantError, main.stdout)
				}
				if len(main.env)+len(main.output)+len(main.state) != 0 {
					t.Errorf("a failed main step wrote file commands: env %v, outputs %v, state %v", main.env, main.output, main.state)
				}
				post := job.runStep(t, e, true)
				if post.code != 0 || post.stderr != "" || !strings.Contains(post.stdout, "No Astro token to revoke") {
					t.Errorf("post after a failed main: exit %d, stderr %q, stdout:\n%s", post.code, post.stderr, post.stdout)
				}
			})
		}
	})

	t.Run("broker gone before post", func(t *testing.T) {
		t.Parallel()
		gone := w.startBroker(t, e, img)
		job := newRunnerJob(t, m, img.Ref, map[string]string{"broker-url": gone.url}, w.jobEnv(true, true, 20))
		main := job.runStep(t, e, false)
		id := main.state[action.StateTokenID]
		if main.code != 0 || id == "" {
			t.Fatalf("main: exit %d, state %v\n%s", main.code, main.state, main.stdout)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := e.Output(ctx, "stop", gone.name); err != nil {
			t.Fatal(err)
		}
		post := job.runStep(t, e, true)
		if post.code != 0 || post.stderr != "" {
			t.Errorf("post: exit %d, stderr %q; want 0 and nothing", post.code, post.stderr)
		}
		want := "::warning::Could not revoke Astro token " + id + ": the revoke call to the broker failed"
		if !strings.Contains(post.stdout, want) || !strings.Contains(post.stdout, "The broker's reaper deletes it when it expires.") {
			t.Errorf("post stdout lacks %q and the reaper note:\n%s", want, post.stdout)
		}
		if !w.minted(id) {
			t.Errorf("token %s is gone; want it left for the reaper", id)
		}
	})
}
