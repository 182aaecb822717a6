package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// maxPolicyTestCases bounds a test file, as the policy's own limits bound
// a policy.
const maxPolicyTestCases = 10000

// policyTestFile is a table of cases for 'policy test': the policy to test
// (relative to the file, unless absolute) and, for each case, a job's claims and request and
// what the broker must answer.
type policyTestFile struct {
	Policy string           `yaml:"policy"`
	Cases  []policyTestCase `yaml:"cases"`
}

type policyTestCase struct {
	Name string `yaml:"name"`
	// Claims are a token's string claims; Token is instead the path of a
	// saved ID token (a JWT), whose claims are read WITHOUT verifying it.
	Claims  map[string]any     `yaml:"claims"`
	Token   string             `yaml:"token"`
	Request *policyTestRequest `yaml:"request"`
	Expect  policyTestExpect   `yaml:"expect"`
}

// policyTestRequest is the exchange's body, as the action sends it.
type policyTestRequest struct {
	WorkspaceID  string `yaml:"workspace_id" json:"workspace_id,omitempty"`
	DeploymentID string `yaml:"deployment_id" json:"deployment_id,omitempty"`
	Role         string `yaml:"role" json:"role,omitempty"`
	TTL          string `yaml:"ttl" json:"ttl,omitempty"`
}

// policyTestExpect is one case's expected outcome: allowed by a rule, with
// (each optional) the grant's scope, Workspace(s) or Deployment, role and
// ttl; or refused with one of the broker's codes (for too_wide, optionally
// by which rule).
type policyTestExpect struct {
	Allow        string   `yaml:"allow"`
	Deny         string   `yaml:"deny"`
	Rule         string   `yaml:"rule"`
	Scope        string   `yaml:"scope"`
	WorkspaceID  string   `yaml:"workspace_id"`
	Workspaces   []string `yaml:"workspaces"`
	DeploymentID string   `yaml:"deployment_id"`
	Role         string   `yaml:"role"`
	TTL          string   `yaml:"ttl"`
}

// testableCodes are the refusals a policy decides, so a case can expect
// them; the others (token_invalid, rate_limited, ...) depend on a running
// broker.
var testableCodes = []string{"denied", "too_wide", "bad_request"}

func runPolicyTest(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy test", `Arguments: CASES.yaml, the file of cases.

Run a table of cases against a trust policy, each decided exactly as the
broker would: exit 0 if every case gets the outcome it expects, 1 if any does
not (each failing case is printed with what it got and why), 2 if the cases
file, a token file or the policy is invalid, or the usage is wrong.

The cases file is YAML (docs/policy.md, "Testing a policy"):

  policy: policy.yaml          # relative to the cases file; or --policy
  cases:
    - name: a push to main deploys
      claims: {repository_owner_id: "65", repository_id: "123456", ...}
      request: {role: WORKSPACE_AUTHOR, ttl: 20m}   # optional
      expect: {allow: deploy-main, workspace_id: ws1, role: WORKSPACE_AUTHOR, ttl: 20m}
    - name: a feature branch gets nothing
      token: tokens/feature.jwt  # a saved ID token: its claims are read
      expect: {deny: denied}     # WITHOUT verifying it (for testing only)

expect is allow: RULE (with optional scope, workspace_id, workspaces,
deployment_id, role and ttl of the grant) or deny: CODE, one of denied,
too_wide (with optional rule) or bad_request (a request the broker refuses
whatever the policy).`, stderr)
	policyFlag := fs.String("policy", "", "trust policy `FILE` (default: the cases file's policy:)")
	var casesPath string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return errHelp
			}
			return usageError("policy test: %v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		if casesPath != "" {
			return usageError("policy test: unexpected argument %q", fs.Arg(0))
		}
		casesPath, rest = fs.Arg(0), fs.Args()[1:]
	}
	if casesPath == "" {
		fs.Usage()
		return usageError("policy test: the cases file is required")
	}
	tf, err := readPolicyTestFile(casesPath)
	if err != nil {
		return usageError("policy test: %v", err)
	}
	policyPath := *policyFlag
	if policyPath == "" {
		if tf.Policy == "" {
			return usageError("policy test: %s names no policy: add policy: FILE or pass --policy", casesPath)
		}
		policyPath = besideCases(filepath.Dir(casesPath), tf.Policy)
	}
	p, err := policy.Load(policyPath)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("policy test: the policy does not load: %w", err)}
	}
	cases, err := prepareCases(tf, filepath.Dir(casesPath))
	if err != nil {
		return usageError("policy test: %s: %v", casesPath, err)
	}

	failed := 0
	for i, c := range cases {
		label := fmt.Sprintf("cases[%d] %q", i, c.name)
		if why := c.run(p); why != "" {
			failed++
			fmt.Fprintf(stdout, "FAIL  %s: %s\n", label, why)
			continue
		}
		fmt.Fprintf(stdout, "ok    %s\n", label)
	}
	fmt.Fprintf(stdout, "%d cases, %d failed (policy %s, sha256 %s)\n", len(cases), failed, policyPath, p.Digest())
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("policy test: %d of %d cases failed", failed, len(cases))}
	}
	return nil
}

// readPolicyTestFile decodes a cases file strictly: unknown keys, duplicate
// keys and a second document are errors, as in a policy.
func readPolicyTestFile(path string) (policyTestFile, error) {
	data, err := readPolicyInput(path)
	if err != nil {
		return policyTestFile{}, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var tf policyTestFile
	if err := dec.Decode(&tf); err != nil {
		if errors.Is(err, io.EOF) {
			return policyTestFile{}, fmt.Errorf("%s is empty", path)
		}
		return policyTestFile{}, fmt.Errorf("%s: %v", path, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return policyTestFile{}, fmt.Errorf("%s must be a single YAML document", path)
	}
	return tf, nil
}

// preparedCase is a case checked and ready to decide.
type preparedCase struct {
	name   string
	claims policy.Claims
	// req is the request as the broker decodes it, or reqErr its refusal.
	req    policy.Request
	reqErr error
	expect policyTestExpect
	ttl    time.Duration // expect.TTL parsed
}

// prepareCases checks every case and reads its claims, reporting every
// problem at once.
func prepareCases(tf policyTestFile, dir string) ([]preparedCase, error) {
	if len(tf.Cases) == 0 {
		return nil, errors.New("has no cases")
	}
	if len(tf.Cases) > maxPolicyTestCases {
		return nil, fmt.Errorf("has %d cases, more than %d", len(tf.Cases), maxPolicyTestCases)
	}
	var errs []error
	out := make([]preparedCase, 0, len(tf.Cases))
	names := map[string]int{}
	for i, c := range tf.Cases {
		at := fmt.Sprintf("cases[%d]", i)
		fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(at+": "+format, a...)) }
		pc := preparedCase{name: c.Name, expect: c.Expect}
		switch j, dup := names[c.Name]; {
		case c.Name == "":
			fail("name is required")
		case dup:
			fail("name %q is also the name of cases[%d]", c.Name, j)
		default:
			names[c.Name] = i
		}

		switch {
		case (c.Claims == nil) == (c.Token == ""):
			fail("needs claims or token (one of them)")
		case c.Token != "":
			claims, err := readUnverifiedToken(besideCases(dir, c.Token))
			if err != nil {
				fail("token: %v", err)
			}
			pc.claims = claims
		default:
			pc.claims = make(policy.Claims, len(c.Claims))
			for k, v := range c.Claims {
				switch v := v.(type) {
				case string:
					pc.claims[k] = v
				case int:
					pc.claims[k] = strconv.Itoa(v)
				case bool:
					pc.claims[k] = strconv.FormatBool(v)
				case nil:
					fail(`claims.%s: null (write "" for an empty claim)`, k)
				default:
					fail("claims.%s: must be a string, not %T (quote it)", k, v)
				}
			}
		}

		body := []byte("{}")
		if c.Request != nil {
			body, _ = json.Marshal(c.Request) // strings only: cannot fail
		}
		pc.req, pc.reqErr = broker.ParseExchangeRequest(bytes.NewReader(body))

		e := c.Expect
		grantFields := e.Scope != "" || e.WorkspaceID != "" || e.Workspaces != nil || e.DeploymentID != "" || e.Role != "" || e.TTL != ""
		switch {
		case (e.Allow == "") == (e.Deny == ""):
			fail("expect needs allow: RULE or deny: CODE (one of them)")
		case e.Deny != "" && !slices.Contains(testableCodes, e.Deny):
			fail("expect.deny: %q is not a code a policy decides (%s)", e.Deny, strings.Join(testableCodes, ", "))
		case e.Deny != "" && grantFields:
			fail("expect: a denial has no grant to check")
		case e.Allow != "" && e.Rule != "":
			fail("expect.rule is for deny: too_wide; an allowed case names its rule in allow")
		}
		if e.TTL != "" {
			d, err := time.ParseDuration(e.TTL)
			if err != nil {
				fail("expect.ttl: %q is not a duration like 15m", e.TTL)
			}
			pc.ttl = d
		}
		out = append(out, pc)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// besideCases resolves a path the cases file names: relative to the
// file's directory, or as given when absolute (filepath.Join would read
// /tmp/t.jwt as dir/tmp/t.jwt).
func besideCases(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// readUnverifiedToken reads a saved ID token and decodes its string claims
// WITHOUT verifying it: a case tests the policy, not the token.
func readUnverifiedToken(path string) (policy.Claims, error) {
	data, err := readPolicyInput(path)
	if err != nil {
		return nil, err
	}
	c, err := idtoken.UnverifiedClaims(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: not an ID token: %v", path, err)
	}
	return policy.Claims(c), nil
}

// run decides the case with p and returns why it failed, or "".
func (c preparedCase) run(p *policy.Policy) string {
	var res policyCheckResult
	if c.reqErr != nil {
		_, body := broker.Classify(c.reqErr)
		res = policyCheckResult{Decision: "deny", Code: body.Error, Message: body.Message}
	} else {
		d, err := p.Decide(c.claims, c.req)
		res = newPolicyCheckResult(p, c.claims, d, err)
	}
	e := c.expect

	if e.Deny != "" {
		switch {
		case res.Decision == "allow":
			return fmt.Sprintf("want deny (%s), got allow by rule %q", e.Deny, res.Rule)
		case res.Code != e.Deny:
			return fmt.Sprintf("want deny (%s), got deny (%s): %s", e.Deny, res.Code, res.Message)
		case e.Rule != "" && res.Rule != e.Rule:
			return fmt.Sprintf("want deny (%s) by rule %q, got it by rule %q: %s", e.Deny, e.Rule, res.Rule, res.Message)
		}
		return ""
	}

	if res.Decision != "allow" {
		why := fmt.Sprintf("want allow by rule %q, got deny (%s): %s", e.Allow, res.Code, res.Message)
		for _, m := range res.Closest {
			if m.Rule == e.Allow {
				why += fmt.Sprintf("; rule %q: %s wants %s, the token has %s", m.Rule, m.Key, m.Expected, m.Actual)
			}
		}
		if !slices.Contains(p.RuleNames(), e.Allow) {
			why += fmt.Sprintf(" (the policy has no rule %q)", e.Allow)
		}
		return why
	}
	if res.Rule != e.Allow {
		why := fmt.Sprintf("want allow by rule %q, got allow by rule %q", e.Allow, res.Rule)
		if !slices.Contains(p.RuleNames(), e.Allow) {
			why += fmt.Sprintf(" (the policy has no rule %q)", e.Allow)
		}
		return why
	}
	var diffs []string
	check := func(field, want, got string) {
		if want != "" && want != got {
			diffs = append(diffs, fmt.Sprintf("%s %s, want %s", field, orNone(got), want))
		}
	}
	check("scope", e.Scope, string(res.Scope))
	check("workspace_id", e.WorkspaceID, res.WorkspaceID)
	check("deployment_id", e.DeploymentID, res.DeploymentID)
	check("role", e.Role, res.Role)
	if e.TTL != "" && res.TTL != c.ttl.String() {
		diffs = append(diffs, fmt.Sprintf("ttl %s, want %s", res.TTL, c.ttl))
	}
	if e.Workspaces != nil {
		got := make([]string, 0, len(res.WorkspaceRoles))
		for id := range res.WorkspaceRoles {
			got = append(got, id)
		}
		want := slices.Clone(e.Workspaces)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			diffs = append(diffs, fmt.Sprintf("workspaces [%s], want [%s]", strings.Join(got, ", "), strings.Join(want, ", ")))
		}
	}
	if len(diffs) > 0 {
		return fmt.Sprintf("allowed by rule %q, but %s", res.Rule, strings.Join(diffs, "; "))
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
