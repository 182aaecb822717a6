package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/demo"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// This file tests the documented workflows of docs/examples/ (linked from
// docs/action.md) against their policy, docs/examples/policy.yaml, the way
// a platform team would check them in CI: `astro-sts policy validate`, then
// `astro-sts policy check` with the claims GitHub sends for each event the
// workflows run on, and the preview naming step run by bash for branches
// with and without a '/'.

const examplesDir = "../../docs/examples"

// exampleWorkflow is the part of a workflow file the test reads.
type exampleWorkflow struct {
	On map[string]*struct {
		Types    []string `yaml:"types"`
		Branches []string `yaml:"branches"`
	} `yaml:"on"`
	Env  map[string]string `yaml:"env"`
	Jobs map[string]struct {
		If    string        `yaml:"if"`
		Steps []exampleStep `yaml:"steps"`
	} `yaml:"jobs"`
}

type exampleStep struct {
	ID   string            `yaml:"id"`
	Uses string            `yaml:"uses"`
	Run  string            `yaml:"run"`
	Env  map[string]string `yaml:"env"`
	With map[string]string `yaml:"with"`
}

func readWorkflow(t *testing.T, name string) exampleWorkflow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examplesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var w exampleWorkflow
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return w
}

// ghEvent is one run GitHub starts: the event, its activity type, and the
// branch it concerns (pushed, proposed, or deleted).
type ghEvent struct {
	name, action, branch string
}

// ghClaims are the OIDC claims GitHub sends for a run of workflow file
// (in acme/dags, as .github/workflows/<file>) for ev. Per event:
//   - push: ref is the pushed branch; sub repo:ORG/REPO:ref:<ref>.
//   - pull_request: ref is the merge ref refs/pull/<n>/merge, head_ref the
//     branch, base_ref the branch it merges into; sub
//     repo:ORG/REPO:pull_request; the workflow runs as in the merge commit.
//   - delete: the workflow runs from the default branch, so ref is
//     refs/heads/main and sub names it; the deleted branch is only in the
//     event payload (github.event.ref), never in the token.
func ghClaims(file string, ev ghEvent) map[string]any {
	c := map[string]any{
		"iss": "https://token.actions.githubusercontent.com", "aud": "https://astro-sts.example.com",
		"repository": "acme/dags", "repository_id": "123456", "repository_owner": "acme", "repository_owner_id": "65",
		"repository_visibility": "private", "actor": "octocat", "actor_id": "583231", "run_id": "9876543210",
		"run_number": "42", "run_attempt": "1", "runner_environment": "github-hosted", "event_name": ev.name,
		"ref_type": "branch", "head_ref": "", "base_ref": "", "workflow": strings.TrimSuffix(file, ".yml"),
		"jti": "example-id", "iat": 1632493567, "nbf": 1632492967, "exp": 1632493867,
	}
	switch ev.name {
	case "push":
		c["ref"] = "refs/heads/" + ev.branch
		c["sub"] = "repo:acme/dags:ref:refs/heads/" + ev.branch
		c["ref_protected"] = fmt.Sprint(ev.branch == "main")
	case "pull_request", "pull_request_target":
		c["ref"] = "refs/pull/7/merge"
		c["sub"] = "repo:acme/dags:pull_request"
		c["head_ref"], c["base_ref"], c["ref_protected"] = ev.branch, "main", "false"
		if ev.name == "pull_request_target" {
			c["ref"] = "refs/heads/main"
		}
	case "delete":
		c["ref"] = "refs/heads/main"
		c["sub"] = "repo:acme/dags:ref:refs/heads/main"
		c["ref_protected"] = "true"
	}
	c["job_workflow_ref"] = "acme/dags/.github/workflows/" + file + "@" + c["ref"].(string)
	c["workflow_ref"] = c["job_workflow_ref"]
	return c
}

// evalIf evaluates a job's if: the subset the examples use, comparisons of
// github.event_name, github.event.action and github.event.ref_type with a
// string, joined by && or ||. Anything else fails the test: teach it here.
func evalIf(t *testing.T, cond string, ev ghEvent) bool {
	t.Helper()
	if cond == "" {
		return true
	}
	ctx := map[string]string{"github.event_name": ev.name, "github.event.action": ev.action, "github.event.ref_type": "branch"}
	cmp := regexp.MustCompile(`^\s*([a-z_.]+)\s*(==|!=)\s*'([^']*)'\s*$`)
	some := false
	for _, alt := range strings.Split(cond, "||") {
		all := true
		for _, part := range strings.Split(alt, "&&") {
			m := cmp.FindStringSubmatch(part)
			if m == nil {
				t.Fatalf("if: %q: the test cannot evaluate %q", cond, part)
			}
			v, known := ctx[m[1]]
			if !known {
				t.Fatalf("if: %q: the test does not know %s", cond, m[1])
			}
			all = all && ((v == m[3]) == (m[2] == "=="))
		}
		some = some || all
	}
	return some
}

// runCLI runs astro-sts with args and returns its stdout, stderr and error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), append([]string{"astro-sts"}, args...), nil, &out, &errOut)
	return out.String(), errOut.String(), err
}

// checkDecision runs `astro-sts policy check --json` for claims and the
// request, and returns the decision.
func checkDecision(t *testing.T, policyPath string, claims map[string]any, req map[string]string) policyCheckResult {
	t.Helper()
	data, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	claimsPath := filepath.Join(t.TempDir(), "claims.json")
	if err := os.WriteFile(claimsPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if req == nil {
		// {}, not null: the broker refuses a body that is not an object.
		req = map[string]string{}
	}
	reqJSON, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runCLI(t, "policy", "check", "--policy", policyPath, "--claims", claimsPath, "--request", string(reqJSON), "--json")
	var res policyCheckResult
	if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil {
		t.Fatalf("policy check printed %q (stderr %q, err %v)", stdout, stderr, err)
	}
	if (err == nil) != (res.Decision == "allow") {
		t.Fatalf("policy check: decision %s but error %v", res.Decision, err)
	}
	return res
}

// TestExampleWorkflows: every job of the documented workflows that asks
// for an Astro token gets it, under the rule meant for it, for each event
// and activity type its workflow runs on; the policy validates cleanly; and
// the ids in the workflows are the demo's.
func TestExampleWorkflows(t *testing.T) {
	policyPath := filepath.Join(examplesDir, "policy.yaml")
	stdout, stderr, err := runCLI(t, "policy", "validate", "--policy", policyPath)
	if err != nil || stderr != "" || strings.Count(stdout, "\n") != 1 || !strings.HasPrefix(stdout, "ok: 3 rules, 0 rotations") {
		t.Fatalf("policy validate: %v\nstdout: %q\nstderr (warnings): %q", err, stdout, stderr)
	}
	seeded, err := emulator.New(emulator.Config{Workspaces: 2, Seed: demo.EmulatorSeed})
	if err != nil {
		t.Fatal(err)
	}
	production, previews := seeded.WorkspaceIDs()[0], seeded.WorkspaceIDs()[1]

	tests := []struct {
		file      string
		rule      string // the rule that must allow every job
		workspace string
		branch    string // pushed, proposed or deleted
		deployIDs []string
	}{
		{"deploy.yml", "deploy-main", production, "main", []string{seeded.DeploymentIDs()[0]}},
		{"preview.yml", "preview", previews, "feature/x", []string{seeded.DeploymentIDs()[1]}},
		{"preview-cleanup.yml", "preview-cleanup", previews, "feature/x", []string{seeded.DeploymentIDs()[1]}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			w := readWorkflow(t, tt.file)
			if len(w.On) == 0 || len(w.Jobs) == 0 {
				t.Fatal("no events or no jobs")
			}
			ran := map[string]bool{}
			for event, filter := range w.On {
				actions := []string{""}
				if filter != nil && len(filter.Types) > 0 {
					actions = filter.Types
				}
				for _, action := range actions {
					ev := ghEvent{name: event, action: action, branch: tt.branch}
					runs := 0
					for name, job := range w.Jobs {
						if !evalIf(t, job.If, ev) {
							continue
						}
						runs++
						ran[name] = true
						checkJob(t, policyPath, tt.file, name, job.Steps, ev, tt.rule, tt.workspace, w.Env, tt.deployIDs)
					}
					if runs == 0 {
						t.Errorf("on %s %s no job runs", event, action)
					}
				}
			}
			for name := range w.Jobs {
				if !ran[name] {
					t.Errorf("job %s never runs", name)
				}
			}
		})
	}
}

// checkJob checks one job run: its astro-sts step gets a token under rule,
// for workspace, with the role and ttl it asks; its deploy-action step
// asks for at least the role Astro needs and names the preview with the
// naming step's output.
func checkJob(t *testing.T, policyPath, file, job string, steps []exampleStep, ev ghEvent, rule, workspace string, env map[string]string, deployIDs []string) {
	t.Helper()
	var exchange, deploy *exampleStep
	for i := range steps {
		switch s := &steps[i]; {
		case strings.HasPrefix(s.Uses, "astro-sts/astro-sts@"):
			exchange = s
		case strings.HasPrefix(s.Uses, "astronomer/deploy-action@"):
			deploy = s
		}
	}
	if exchange == nil || deploy == nil {
		t.Fatalf("%s: job %s lacks the astro-sts or the deploy-action step", file, job)
	}
	req := map[string]string{}
	for in, key := range map[string]string{"role": "role", "ttl": "ttl", "workspace-id": "workspace_id", "deployment-id": "deployment_id"} {
		if v := exchange.With[in]; v != "" {
			req[key] = v
		}
	}
	res := checkDecision(t, policyPath, ghClaims(file, ev), req)
	if res.Decision != "allow" || res.Rule != rule || res.WorkspaceID != workspace || res.Role != req["role"] {
		t.Errorf("%s job %s on %s %s: %+v, want allow by rule %s for %s with role %s", file, job, ev.name, ev.action, res, rule, workspace, req["role"])
	}

	// Astro needs WORKSPACE_OPERATOR to create or delete a Deployment, and
	// WORKSPACE_AUTHOR to deploy.
	need := astro.RoleWorkspaceAuthor
	action := deploy.With["action"]
	if action == "create-deployment-preview" || action == "delete-deployment-preview" {
		need = astro.RoleWorkspaceOperator
	}
	have, _ := astro.WorkspaceRoleRank(req["role"])
	if want, _ := astro.WorkspaceRoleRank(need); have < want {
		t.Errorf("%s job %s: deploy-action %s needs %s, the job asks for %s", file, job, action, need, req["role"])
	}
	id := deploy.With["deployment-id"]
	if id == "${{ env.DEPLOYMENT_ID }}" {
		id = env["DEPLOYMENT_ID"]
	}
	if !slices.Contains(deployIDs, id) {
		t.Errorf("%s job %s: deployment-id %q, want the demo's %v", file, job, id, deployIDs)
	}
	if strings.HasSuffix(action, "-deployment-preview") {
		if got := deploy.With["preview-name"]; got != "${{ steps.preview.outputs.name }}" {
			t.Errorf("%s job %s: preview-name %q: deploy-action's default names the preview differently on create and delete", file, job, got)
		}
	}
}

// TestExamplePolicyRefusals: what the policy must refuse, for the claims
// GitHub would send.
func TestExamplePolicyRefusals(t *testing.T) {
	policyPath := filepath.Join(examplesDir, "policy.yaml")
	seeded, err := emulator.New(emulator.Config{Workspaces: 2, Seed: demo.EmulatorSeed})
	if err != nil {
		t.Fatal(err)
	}
	cleanupFromBranch := ghClaims("preview-cleanup.yml", ghEvent{name: "delete", branch: "feature/x"})
	// What a policy written from the deleted branch's point of view expects.
	cleanupFromBranch["ref"] = "refs/heads/feature/x"
	cleanupFromBranch["job_workflow_ref"] = "acme/dags/.github/workflows/preview-cleanup.yml@refs/heads/feature/x"
	tests := []struct {
		name   string
		claims map[string]any
		req    map[string]string
		kind   string // of the refusal
		rule   string // the refusing rule, for too_wide
	}{
		{"push to a feature branch", ghClaims("deploy.yml", ghEvent{name: "push", branch: "feature/x"}), nil, "denied", ""},
		{"push to main asking for Operator", ghClaims("deploy.yml", ghEvent{name: "push", branch: "main"}),
			map[string]string{"role": astro.RoleWorkspaceOperator}, "too_wide", "deploy-main"},
		{"a preview asking for production", ghClaims("preview.yml", ghEvent{name: "pull_request", branch: "feature/x"}),
			map[string]string{"workspace_id": seeded.WorkspaceIDs()[0]}, "too_wide", "preview"},
		{"a preview asking for Owner", ghClaims("preview.yml", ghEvent{name: "pull_request", branch: "feature/x"}),
			map[string]string{"role": astro.RoleWorkspaceOwner}, "too_wide", "preview"},
		{"the preview workflow on pull_request_target", ghClaims("preview.yml", ghEvent{name: "pull_request_target", branch: "feature/x"}), nil, "denied", ""},
		{"the cleanup workflow pushed to a branch", ghClaims("preview-cleanup.yml", ghEvent{name: "push", branch: "feature/x"}), nil, "denied", ""},
		{"a delete run from the deleted branch (never happens)", cleanupFromBranch, nil, "denied", ""},
		{"a delete run of another workflow", ghClaims("deploy.yml", ghEvent{name: "delete", branch: "feature/x"}), nil, "denied", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := checkDecision(t, policyPath, tt.claims, tt.req)
			if res.Decision != "deny" || res.Code != tt.kind || res.Rule != tt.rule {
				t.Errorf("%+v, want deny (%s) by %q", res, tt.kind, tt.rule)
			}
		})
	}
}

// deployActionDefaultName is deploy-action's own preview name when no
// preview-name is given (its action.yaml): on create and deploy the last
// path segment of GITHUB_HEAD_REF (or of github.ref), on delete the whole
// github.event.ref; then "_<Deployment name>", spaces turned into '_'.
func deployActionDefaultName(action, headRef, eventRef, deployment string) string {
	branch := eventRef
	if action != "delete-deployment-preview" {
		branch = headRef[strings.LastIndex(headRef, "/")+1:]
	}
	return strings.ReplaceAll(branch+"_"+deployment, " ", "_")
}

// TestExamplePreviewNames runs each workflow's naming step with bash, with
// the branch where GitHub puts it for the event (head_ref for
// pull_request, event.ref for delete), and checks that create, deploy and
// delete name the same preview, for branches with and without '/', that
// different branches get different previews, that a hostile branch name
// comes out inert, and that the demo uses the same names.
func TestExamplePreviewNames(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("bash is needed to run the workflows' naming step")
		}
		t.Skip("no bash on this machine: the workflows' naming step cannot run")
	}
	// The trap the naming step avoids: deploy-action's own names differ
	// between create and delete as soon as the branch has a '/'.
	if c, d := deployActionDefaultName("create-deployment-preview", "feature/x", "", "dags"),
		deployActionDefaultName("delete-deployment-preview", "", "feature/x", "dags"); c == d || c != "x_dags" {
		t.Fatalf("deploy-action's default names: create %q, delete %q", c, d)
	}

	type namer struct {
		file, job string
		event     string // what GitHub's context holds the branch for
		step      exampleStep
	}
	var namers []namer
	for _, f := range []struct{ file, event string }{{"preview.yml", "pull_request"}, {"preview-cleanup.yml", "delete"}} {
		w := readWorkflow(t, f.file)
		for job, j := range w.Jobs {
			i := slices.IndexFunc(j.Steps, func(s exampleStep) bool { return s.ID == "preview" })
			if i < 0 {
				t.Fatalf("%s job %s has no step with id preview", f.file, job)
			}
			namers = append(namers, namer{f.file, job, f.event, j.Steps[i]})
		}
	}

	hostile := `x";touch${IFS}pwned;"$(touch${IFS}pwned2)`
	branches := []string{"feature/x", "bugfix/x", "x", "deep/nested/name_2", hostile}
	seen := map[string]string{}
	for _, branch := range branches {
		want := demo.PreviewName(branch)
		for _, n := range namers {
			dir := t.TempDir()
			got := runNamingStep(t, bash, dir, n.step, n.event, branch)
			if got != want {
				t.Errorf("%s job %s names branch %q %q, the demo %q", n.file, n.job, branch, got, want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("%s job %s: branch %q ran something: %v", n.file, n.job, branch, entries)
			}
		}
		if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(want) {
			t.Errorf("branch %q gives the name %q, which a shell would not take as one inert word", branch, want)
		}
		if other, ok := seen[want]; ok {
			t.Errorf("branches %q and %q share the preview %q", other, branch, want)
		}
		seen[want] = branch
	}
}

// runNamingStep runs step as the runner would (bash -e, the step's env with
// its expressions evaluated, GITHUB_OUTPUT a file) in dir, and returns the
// name it outputs.
func runNamingStep(t *testing.T, bash, dir string, step exampleStep, event, branch string) string {
	t.Helper()
	contexts := map[string]map[string]string{
		"pull_request": {"${{ github.head_ref }}": branch},
		"delete":       {"${{ github.event.ref }}": branch},
	}
	output := filepath.Join(dir, "github_output")
	env := []string{"PATH=" + os.Getenv("PATH"), "GITHUB_OUTPUT=" + output, "LC_ALL=C.UTF-8"}
	for k, expr := range step.Env {
		v, ok := contexts[event][expr]
		if !ok {
			t.Fatalf("step %s: env %s=%s is not where GitHub puts the branch for %s", step.ID, k, expr, event)
		}
		env = append(env, k+"="+v)
	}
	cmd := exec.CommandContext(t.Context(), bash, "--noprofile", "--norc", "-e", "-c", step.Run)
	cmd.Dir, cmd.Env = dir, env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("step %s for %q: %v: %s", step.ID, branch, err, out)
	}
	data, err := os.ReadFile(output)
	if err != nil {
		t.Fatal(err)
	}
	name, ok := strings.CutPrefix(strings.TrimSuffix(string(data), "\n"), "name=")
	if !ok || strings.Contains(name, "\n") {
		t.Fatalf("step %s wrote %q to GITHUB_OUTPUT", step.ID, data)
	}
	return name
}
