package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// code is the exit code main would turn err into.
func code(err error) int { return exitCode(err, io.Discard) }

// copyExamples copies the example policies and their cases into a new
// directory, so a test can change them.
func copyExamples(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, pattern := range []string{"*.yaml"} {
		files, err := filepath.Glob(filepath.Join(examplesDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// TestPolicyTestExamples: the cases of docs/examples/ pass against their
// policies (exit 0), and a case changed to expect the wrong rule, the wrong
// grant or the wrong refusal fails (exit 1), naming the case and why.
func TestPolicyTestExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.test.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("cases files %v, %v", files, err)
	}
	for _, f := range files {
		stdout, stderr, err := runCLI(t, "policy", "test", f)
		if err != nil || stderr != "" || !strings.Contains(stdout, " 0 failed") || strings.Contains(stdout, "FAIL") {
			t.Errorf("policy test %s: %v\nstdout: %s\nstderr: %s", f, err, stdout, stderr)
		}
	}

	tests := []struct {
		name, old, new string
		want           []string // in stdout
	}{
		{"the wrong rule", "allow: deploy-main\n      scope: WORKSPACE", "allow: preview\n      scope: WORKSPACE",
			[]string{`FAIL  cases[0] "a push to main deploys to production": want allow by rule "preview", got allow by rule "deploy-main"`, "9 cases, 1 failed"}},
		{"a rule the policy lacks", "allow: deploy-main\n      scope: WORKSPACE", "allow: deploy-mian\n      scope: WORKSPACE",
			[]string{`want allow by rule "deploy-mian", got allow by rule "deploy-main" (the policy has no rule "deploy-mian")`}},
		{"the wrong grant", "role: WORKSPACE_AUTHOR\n      ttl: 20m", "role: WORKSPACE_OPERATOR\n      ttl: 25m",
			[]string{`allowed by rule "deploy-main", but role WORKSPACE_AUTHOR, want WORKSPACE_OPERATOR; ttl 20m0s, want 25m0s`}},
		{"allow where the policy denies", "expect: {deny: denied}\n\n  - name: a pull request", "expect: {allow: deploy-main}\n\n  - name: a pull request",
			[]string{`FAIL  cases[4] "a push to a feature branch gets nothing": want allow by rule "deploy-main", got deny (denied): no policy rule allows this identity; rule "deploy-main": ref wants "refs/heads/main", the token has "refs/heads/feature/x"`}},
		{"the wrong refusal", "expect: {deny: too_wide, rule: deploy-main}", "expect: {deny: denied}",
			[]string{`want deny (denied), got deny (too_wide): role WORKSPACE_OPERATOR`}},
		{"the wrong refusing rule", "expect: {deny: too_wide, rule: deploy-main}", "expect: {deny: too_wide, rule: preview}",
			[]string{`want deny (too_wide) by rule "preview", got it by rule "deploy-main"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyExamples(t)
			path := filepath.Join(dir, "policy.test.yaml")
			data, _ := os.ReadFile(path)
			if strings.Count(string(data), tt.old) != 1 {
				t.Fatalf("%q is not once in the cases", tt.old)
			}
			if err := os.WriteFile(path, []byte(strings.Replace(string(data), tt.old, tt.new, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			stdout, _, err := runCLI(t, "policy", "test", path)
			if code(err) != 1 {
				t.Errorf("exit %d (%v), want 1", code(err), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// TestPolicyTestInput: a saved token's claims are read without verifying
// it; a broken cases file, token or policy is bad input (exit 2), every
// problem of the file reported at once.
func TestPolicyTestInput(t *testing.T) {
	dir := copyExamples(t)
	token := unsignedJWT(t, `{"repository_id": "123456", "repository_owner_id": "65", "ref": "refs/heads/main", "event_name": "push", "job_workflow_ref": "acme/dags/.github/workflows/deploy.yml@refs/heads/main", "exp": 1}`)
	if err := os.WriteFile(filepath.Join(dir, "main.jwt"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage.jwt"), []byte("not a token"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const okCase = "  - name: c\n    claims: {repository_id: \"123456\", ref: refs/heads/main, event_name: push, job_workflow_ref: acme/dags/.github/workflows/deploy.yml@refs/heads/main}\n    expect: {allow: deploy-main}\n"

	// A saved token (expired, unsigned: it is not verified) and --policy.
	tokenCases := write("token.test.yaml", "cases:\n  - name: saved token\n    token: main.jwt\n    expect: {allow: deploy-main, role: WORKSPACE_AUTHOR}\n")
	if stdout, _, err := runCLI(t, "policy", "test", tokenCases, "--policy", filepath.Join(dir, "policy.yaml")); err != nil {
		t.Errorf("saved token: %v\n%s", err, stdout)
	}
	// An absolute path is used as given, not joined to the file's directory.
	absCases := write("abs.test.yaml", "policy: "+filepath.Join(dir, "policy.yaml")+"\ncases:\n  - name: saved token\n    token: "+filepath.Join(dir, "main.jwt")+"\n    expect: {allow: deploy-main, role: WORKSPACE_AUTHOR}\n")
	if stdout, _, err := runCLI(t, "policy", "test", absCases); err != nil {
		t.Errorf("absolute token and policy paths: %v\n%s", err, stdout)
	}
	if _, _, err := runCLI(t, "policy", "test", "--policy", filepath.Join(dir, "team-policy.yaml"), tokenCases); code(err) != 1 {
		t.Errorf("saved token under another policy: exit %d, want 1", code(err))
	}

	tests := []struct {
		name string
		args []string
		want []string // in the error
	}{
		{"no file", []string{}, []string{"the cases file is required"}},
		{"two files", []string{tokenCases, tokenCases}, []string{"unexpected argument"}},
		{"missing file", []string{filepath.Join(dir, "nope.yaml")}, []string{"no such file"}},
		{"no policy", []string{tokenCases}, []string{"names no policy"}},
		{"policy that does not load", []string{write("bad-policy.test.yaml", "policy: nope.yaml\ncases:\n"+okCase)}, []string{"the policy does not load"}},
		{"unknown key", []string{write("k.test.yaml", "policy: policy.yaml\ncases:\n"+okCase+"    expected: {allow: x}\n")}, []string{"field expected not found"}},
		{"unknown request key", []string{write("r.test.yaml", "policy: policy.yaml\ncases:\n"+okCase+"    request: {rol: WORKSPACE_AUTHOR}\n")}, []string{"field rol not found"}},
		{"no cases", []string{write("n.test.yaml", "policy: policy.yaml\ncases: []\n")}, []string{"has no cases"}},
		{"two documents", []string{write("d.test.yaml", "policy: policy.yaml\ncases:\n"+okCase+"---\n{}\n")}, []string{"single YAML document"}},
		{"every problem of the cases at once", []string{write("all.test.yaml", `policy: policy.yaml
cases:
  - claims: {repository_id: null, ref: [a]}
    token: main.jwt
    expect: {allow: a, deny: denied}
  - name: x
    token: garbage.jwt
    expect: {deny: rate_limited}
  - name: x
    claims: {repository_id: "1"}
    expect: {deny: denied, role: WORKSPACE_OWNER}
  - name: y
    claims: {repository_id: "1"}
    expect: {allow: r, rule: r, ttl: soon}
`)}, []string{"cases[0]: name is required", "cases[0]: needs claims or token", "cases[0]: expect needs allow: RULE or deny: CODE",
			"cases[1]: token: ", "not an ID token", `cases[1]: expect.deny: "rate_limited" is not a code a policy decides`,
			`cases[2]: name "x" is also the name of cases[1]`, "cases[2]: expect: a denial has no grant to check",
			"cases[3]: expect.rule is for deny: too_wide", `cases[3]: expect.ttl: "soon" is not a duration`}},
		{"claims of the wrong type", []string{write("types.test.yaml", "policy: policy.yaml\ncases:\n  - name: c\n    claims: {repository_id: 1.5, ref: null, event_name: [push]}\n    expect: {deny: denied}\n")},
			[]string{"claims.repository_id: must be a string, not float64", "claims.ref: null", "claims.event_name: must be a string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := runCLI(t, append([]string{"policy", "test"}, tt.args...)...)
			if code(err) != 2 {
				t.Fatalf("exit %d (%v), want 2\n%s", code(err), err, stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

// TestPolicySchemaCommand: 'policy schema' prints the embedded schema.
func TestPolicySchemaCommand(t *testing.T) {
	stdout, _, err := runCLI(t, "policy", "schema")
	if err != nil || !bytes.Equal([]byte(stdout), policy.Schema()) {
		t.Errorf("policy schema: %v, printed %d bytes", err, len(stdout))
	}
	if _, _, err := runCLI(t, "policy", "schema", "extra"); code(err) != 2 {
		t.Errorf("policy schema extra: exit %d", code(err))
	}
}

// TestExamplePolicyCI: the documented CI workflow runs on pull requests,
// uses the image the action ships, and each of its steps, run as the runner
// runs a container step (the image's entrypoint with the step's args, in
// the checkout), passes on the examples.
func TestExamplePolicyCI(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(examplesDir, "policy-ci.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		On   map[string]any `yaml:"on"`
		Jobs map[string]struct {
			RunsOn string `yaml:"runs-on"`
			Steps  []struct {
				Uses string            `yaml:"uses"`
				With map[string]string `yaml:"with"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(data, &wf); err != nil {
		t.Fatal(err)
	}
	if _, ok := wf.On["pull_request"]; !ok {
		t.Error("the workflow does not run on pull_request")
	}
	action, err := os.ReadFile("../../action.yml")
	if err != nil {
		t.Fatal(err)
	}
	var act struct {
		Runs struct {
			Image string `yaml:"image"`
		} `yaml:"runs"`
	}
	if err := yaml.Unmarshal(action, &act); err != nil {
		t.Fatal(err)
	}
	var ran []string
	for name, job := range wf.Jobs {
		if job.RunsOn != "ubuntu-latest" {
			t.Errorf("job %s runs on %q: container steps need Linux", name, job.RunsOn)
		}
		for _, s := range job.Steps {
			if !strings.HasPrefix(s.Uses, "docker://") {
				continue
			}
			if s.Uses != act.Runs.Image {
				t.Errorf("step uses %s, the action ships %s", s.Uses, act.Runs.Image)
			}
			ran = append(ran, s.With["args"])
		}
	}
	want := []string{"policy validate --strict --policy policy.yaml", "policy test policy.test.yaml"}
	if strings.Join(ran, "|") != strings.Join(want, "|") {
		t.Fatalf("container steps run %q, want %q", ran, want)
	}
	t.Chdir(examplesDir) // the checkout
	for _, args := range ran {
		if stdout, stderr, err := runCLI(t, strings.Fields(args)...); err != nil || stderr != "" {
			t.Errorf("%s: %v\nstdout: %s\nstderr: %s", args, err, stdout, stderr)
		}
	}
}
