package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// maxPolicyInputSize bounds the claims and request files read by 'policy check'.
const maxPolicyInputSize = 1 << 20

// runPolicy is the 'policy' subcommand, for platform teams to run in CI on
// policy changes: 'policy check' decides a set of claims and a request
// exactly as the broker would (exit 0 allow, 1 deny, 2 when the policy, the
// claims or the usage is wrong, so that a job asserting a denial cannot
// pass on a broken input); 'policy validate' loads a policy, reports every
// problem (exit 1) and warns about rules wider than they look (exit 0, or
// 1 with --strict); 'policy test' runs a table of cases (exit 0 all pass, 1
// a case fails, 2 bad input); 'policy schema' prints the policy file's JSON
// Schema.
func runPolicy(_ context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printPolicyUsage(stderr)
		return usageError("policy: say check, validate, test or schema")
	}
	switch args[0] {
	case "check":
		return runPolicyCheck(args[1:], stdout, stderr)
	case "validate":
		return runPolicyValidate(args[1:], stdout, stderr)
	case "test":
		return runPolicyTest(args[1:], stdout, stderr)
	case "schema":
		return runPolicySchema(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		printPolicyUsage(stdout)
		return errHelp
	}
	printPolicyUsage(stderr)
	return usageError("policy: unknown command %q (want check, validate, test or schema)", args[0])
}

func printPolicyUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: astro-sts policy <command> [flags]

Commands:
  check     decide a set of claims and a request as the broker would
            (exit 0 allow, 1 deny, 2 invalid policy, claims or usage)
  validate  load a policy, report every problem and warn about wide rules
            (exit 0 valid, 1 invalid, or with --strict any warning)
  test      run a table of cases (claims or a saved token, a request, the
            expected outcome) against a policy
            (exit 0 all pass, 1 a case fails, 2 invalid cases, policy or usage)
  schema    print the policy file's JSON Schema, for editors and linters

Run 'astro-sts policy <command> --help' for its flags.
`)
}

func runPolicyCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy check", `Decide a token's claims and a request with a trust policy, exactly as the
broker would, and print the decision, the deciding rule and, for a denial,
the broker's code and the rules that came closest. Exit 0 on allow, 1 on
deny, 2 on an invalid policy, claims or request file, or bad usage: a CI
job that expects a denial cannot pass on a broken input.

--claims is a decoded token payload (JSON object); --token is a whole ID
token (a JWT, e.g. one a debug step printed), decoded WITHOUT verification:
for testing only. Non-string claims are ignored, as the broker ignores
them. --request is the body of an exchange, or @FILE to read it from a file:
one JSON object with any of workspace_id, deployment_id, role and ttl (a Go
duration of at least 1m, such as "15m"), decoded and checked by the broker's
own code (exact, case-sensitive keys, each once): what the broker refuses
with 400, the check refuses with exit 2 and the same message.`, stderr)
	policyPath := fs.String("policy", "", "trust policy `FILE` (required)")
	claimsPath := fs.String("claims", "", "claims `FILE`: a decoded ID token payload, JSON (this or --token)")
	tokenPath := fs.String("token", "", "ID token `FILE`: a JWT whose claims are decoded, not verified (this or --claims)")
	requestArg := fs.String("request", "", `request as `+"`JSON`"+`, e.g. '{"role": "WORKSPACE_AUTHOR", "ttl": "15m"}', or @FILE`)
	asJSON := fs.Bool("json", false, "print the decision as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *policyPath == "" || (*claimsPath == "") == (*tokenPath == "") {
		fs.Usage()
		return usageError("policy check: --policy and one of --claims or --token are required")
	}
	var claims policy.Claims
	var err error
	if *tokenPath != "" {
		claims, err = readPolicyToken(*tokenPath)
	} else {
		claims, err = readPolicyClaims(*claimsPath)
	}
	if err != nil {
		return usageError("policy check: %v", err)
	}
	req, err := parsePolicyRequest(*requestArg)
	if err != nil {
		return usageError("policy check: --request: %v", err)
	}
	p, err := policy.Load(*policyPath)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("policy check: the policy does not load: %w", err)}
	}

	d, derr := p.Decide(claims, req)
	out := newPolicyCheckResult(p, claims, d, derr)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		out.print(stdout)
	}
	if derr != nil {
		return &exitError{code: 1, err: fmt.Errorf("policy check: denied (%s): %w", out.Code, derr)}
	}
	return nil
}

func runPolicyValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy validate", `Load a trust policy and report every problem in it (exit 1). Then warn, on
stderr, about what the file shows to be wider than it may look: rules that
bind neither ref nor environment, events that include pull_request_target or
workflow_run, job_workflow_ref without repository_owner_id, names without
their numeric ids, a sub that names an owner or repository without their ids
(it stops matching on GitHub's immutable sub). Warnings exit 0, or 1 with
--strict.`, stderr)
	policyPath := fs.String("policy", "", "trust policy `FILE` (required)")
	strict := fs.Bool("strict", false, "exit 1 if there is any warning")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *policyPath == "" {
		fs.Usage()
		return usageError("policy validate: --policy is required")
	}
	p, err := policy.Load(*policyPath)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("policy validate: %w", err)}
	}
	fmt.Fprintf(stdout, "ok: %d rules, %d rotations (sha256 %s)\n", p.Rules(), len(p.Rotations()), p.Digest())
	warnings := p.Warnings()
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if *strict && len(warnings) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("policy validate: %d warnings (--strict)", len(warnings))}
	}
	return nil
}

func runPolicySchema(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy schema", `Print the JSON Schema (draft 2020-12) of the trust policy file, the one
`+"`# yaml-language-server: $schema=`"+` names in docs/examples/policy.yaml, for
editors and linters. 'policy validate' remains the authority: it also checks
what a schema cannot say.`, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, err := stdout.Write(policy.Schema())
	return err
}

// policyCheckResult is what 'policy check' prints.
type policyCheckResult struct {
	Decision       string            `json:"decision"` // allow or deny
	Rule           string            `json:"rule,omitempty"`
	Scope          astro.Scope       `json:"scope,omitempty"`
	WorkspaceID    string            `json:"workspace_id,omitempty"`
	DeploymentID   string            `json:"deployment_id,omitempty"`
	WorkspaceRoles map[string]string `json:"workspace_roles,omitempty"`
	Role           string            `json:"role,omitempty"`
	TTL            string            `json:"ttl,omitempty"`
	// RateLimit is the deciding rule's limit per repository, if any.
	RateLimit string `json:"rate_limit,omitempty"`
	// Code and Message are the broker's answer to a denied request: its
	// stable code (denied, too_wide, bad_request) and its message.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Field and Allowed explain too_wide: what was asked for beyond the
	// rule's grant, and the most the rule allows.
	Field   string `json:"field,omitempty"`
	Allowed string `json:"allowed,omitempty"`
	// Closest explains denied: the rules that came closest and the first
	// match entry of each that failed, as the broker's log says it.
	Closest      []policy.Miss `json:"closest,omitempty"`
	PolicyDigest string        `json:"policy_sha256"`
}

// closestRules is how many rules a denial's explanation names.
const closestRules = 3

func newPolicyCheckResult(p *policy.Policy, c policy.Claims, d policy.Decision, err error) policyCheckResult {
	r := policyCheckResult{PolicyDigest: p.Digest()}
	if err != nil {
		_, body := broker.Classify(err)
		r.Decision, r.Code, r.Message = "deny", body.Error, body.Message
		r.Rule, r.Field, r.Allowed = body.Rule, body.Field, body.Allowed
		if errors.Is(err, policy.ErrNoMatchingRule) {
			r.Closest = p.Explain(c, closestRules)
		}
		return r
	}
	r.Decision = "allow"
	r.Rule, r.Scope, r.WorkspaceID, r.DeploymentID = d.Rule, d.Scope, d.WorkspaceID, d.DeploymentID
	r.WorkspaceRoles, r.Role, r.TTL = d.WorkspaceRoles, d.Role, d.TTL.String()
	if !d.RateLimit.IsZero() {
		r.RateLimit = d.RateLimit.String()
	}
	return r
}

func (r policyCheckResult) print(w io.Writer) {
	if r.Decision == "deny" {
		fmt.Fprintf(w, "deny (%s): %s\n", r.Code, r.Message)
		for _, m := range r.Closest {
			fmt.Fprintf(w, "  closest:    rule %q (%d of %d entries hold): %s wants %s, the token has %s\n", m.Rule, m.Held, m.Of, m.Key, m.Expected, m.Actual)
		}
		fmt.Fprintf(w, "  policy:     sha256 %s\n", r.PolicyDigest)
		return
	}
	fmt.Fprintf(w, "allow: rule %q\n", r.Rule)
	fmt.Fprintf(w, "  scope:      %s\n", r.Scope)
	switch r.Scope {
	case astro.ScopeWorkspace:
		fmt.Fprintf(w, "  workspace:  %s\n", r.WorkspaceID)
	case astro.ScopeDeployment:
		fmt.Fprintf(w, "  deployment: %s\n", r.DeploymentID)
	case astro.ScopeOrganization:
		ids := make([]string, 0, len(r.WorkspaceRoles))
		for id := range r.WorkspaceRoles {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		fmt.Fprintf(w, "  workspaces: %s (with %s)\n", strings.Join(ids, ", "), astro.RoleOrganizationMember)
	}
	fmt.Fprintf(w, "  role:       %s\n", r.Role)
	fmt.Fprintf(w, "  ttl:        %s\n", r.TTL)
	if r.RateLimit != "" {
		fmt.Fprintf(w, "  rate limit: %s per repository\n", r.RateLimit)
	}
	fmt.Fprintf(w, "  policy:     sha256 %s\n", r.PolicyDigest)
}

// readPolicyClaims reads a decoded token payload and keeps its string claims,
// which is what the broker matches on.
func readPolicyClaims(path string) (policy.Claims, error) {
	data, err := readPolicyInput(path)
	if err != nil {
		return nil, fmt.Errorf("--claims: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, fmt.Errorf("--claims %s: not a JSON object", path)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("--claims %s: trailing data after the JSON object", path)
	}
	c := make(policy.Claims, len(raw))
	for k, v := range raw {
		if s, ok := v.(string); ok {
			c[k] = s
		}
	}
	return c, nil
}

// readPolicyToken reads an ID token (a JWT) and decodes its string claims
// without verifying it: --token is for trying a real token's claims.
func readPolicyToken(path string) (policy.Claims, error) {
	data, err := readPolicyInput(path)
	if err != nil {
		return nil, fmt.Errorf("--token: %w", err)
	}
	c, err := idtoken.UnverifiedClaims(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("--token %s: not an ID token: %v", path, err)
	}
	return policy.Claims(c), nil
}

// parsePolicyRequest decodes --request, inline or @FILE, with the broker's
// own decoding and checks ([broker.ParseExchangeRequest]): what the broker
// refuses with 400 whatever the policy, the check refuses as bad usage,
// with the message the broker's answer carries. Empty is the zero request
// (the grant's defaults), as an empty body is.
func parsePolicyRequest(arg string) (policy.Request, error) {
	data := []byte(arg)
	if path, ok := strings.CutPrefix(arg, "@"); ok {
		var err error
		if data, err = readPolicyInput(path); err != nil {
			return policy.Request{}, err
		}
	}
	r, err := broker.ParseExchangeRequest(bytes.NewReader(data))
	if err != nil {
		_, body := broker.Classify(err)
		return policy.Request{}, errors.New(body.Message)
	}
	return r, nil
}

func readPolicyInput(path string) ([]byte, error) {
	data, more, err := policy.ReadLimited(path, maxPolicyInputSize)
	if more {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPolicyInputSize)
	}
	return data, err
}
