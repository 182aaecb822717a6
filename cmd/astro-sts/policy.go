package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// maxPolicyInputSize bounds the claims and request files read by 'policy check'.
const maxPolicyInputSize = 1 << 20

// runPolicy is the 'policy' subcommand, for platform teams to run in CI on
// policy changes: 'policy check' decides a set of claims and a request
// exactly as the broker would (exit 0 allow, 1 deny); 'policy validate'
// loads a policy and reports every problem (exit 0 or 1).
func runPolicy(_ context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printPolicyUsage(stderr)
		return usageError("policy: say check or validate")
	}
	switch args[0] {
	case "check":
		return runPolicyCheck(args[1:], stdout, stderr)
	case "validate":
		return runPolicyValidate(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		printPolicyUsage(stdout)
		return errHelp
	}
	printPolicyUsage(stderr)
	return usageError("policy: unknown command %q (want check or validate)", args[0])
}

func printPolicyUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: astro-sts policy <command> [flags]

Commands:
  check     decide a set of claims and a request as the broker would (exit 0 allow, 1 deny)
  validate  load a policy and report every problem (exit 0 valid, 1 invalid)

Run 'astro-sts policy <command> --help' for its flags.
`)
}

func runPolicyCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy check", `Decide a token's claims and a request with a trust policy, exactly as the
broker would, and print the decision and the deciding rule. Exit 0 on allow,
1 on deny (or an invalid policy), 2 on bad usage.

--claims is a decoded token payload (JSON object); non-string claims are
ignored, as the broker ignores them. --request is strict JSON with any of
workspace_id, deployment_id, role and ttl (a Go duration such as "15m"), or
@FILE to read it from a file.`, stderr)
	policyPath := fs.String("policy", "", "trust policy `FILE` (required)")
	claimsPath := fs.String("claims", "", "claims `FILE`: a decoded ID token payload, JSON (required)")
	requestArg := fs.String("request", "", `request as `+"`JSON`"+`, e.g. '{"role": "WORKSPACE_AUTHOR", "ttl": "15m"}', or @FILE`)
	asJSON := fs.Bool("json", false, "print the decision as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *policyPath == "" || *claimsPath == "" {
		fs.Usage()
		return usageError("policy check: --policy and --claims are required")
	}
	claims, err := readPolicyClaims(*claimsPath)
	if err != nil {
		return usageError("policy check: %v", err)
	}
	req, err := parsePolicyRequest(*requestArg)
	if err != nil {
		return usageError("policy check: --request: %v", err)
	}
	p, err := policy.Load(*policyPath)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("policy check: the policy does not load: %w", err)}
	}

	d, derr := p.Decide(claims, req)
	out := newPolicyCheckResult(p, d, derr)
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
		return &exitError{code: 1, err: fmt.Errorf("policy check: denied: %w", derr)}
	}
	return nil
}

func runPolicyValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy validate", "Load a trust policy and report every problem in it. Exit 0 if it is valid, 1 if not.", stderr)
	policyPath := fs.String("policy", "", "trust policy `FILE` (required)")
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
	return nil
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
	// Reason is why a request was denied, as the broker would say it.
	Reason string `json:"reason,omitempty"`
	// Kind classifies a denial: no_matching_rule, too_wide, bad_request.
	Kind         string `json:"kind,omitempty"`
	PolicyDigest string `json:"policy_sha256"`
}

func newPolicyCheckResult(p *policy.Policy, d policy.Decision, err error) policyCheckResult {
	r := policyCheckResult{PolicyDigest: p.Digest()}
	if err != nil {
		r.Decision = "deny"
		var we *policy.WidenError
		switch {
		case errors.As(err, &we):
			r.Kind, r.Rule, r.Reason = "too_wide", we.Rule, err.Error()
		case errors.Is(err, policy.ErrBadRequest):
			r.Kind, r.Reason = "bad_request", err.Error()
		case errors.Is(err, policy.ErrNoMatchingRule):
			r.Kind, r.Reason = "no_matching_rule", "no rule matches the claims"
		default:
			r.Kind, r.Reason = "error", err.Error()
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
		fmt.Fprintf(w, "deny (%s): %s\n", r.Kind, r.Reason)
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

// parsePolicyRequest decodes --request: strict JSON, inline or @FILE. Empty is
// the zero request (the grant's defaults).
func parsePolicyRequest(arg string) (policy.Request, error) {
	if arg == "" {
		return policy.Request{}, nil
	}
	data := []byte(arg)
	if path, ok := strings.CutPrefix(arg, "@"); ok {
		var err error
		if data, err = readPolicyInput(path); err != nil {
			return policy.Request{}, err
		}
	}
	var in struct {
		WorkspaceID  string `json:"workspace_id"`
		DeploymentID string `json:"deployment_id"`
		Role         string `json:"role"`
		TTL          string `json:"ttl"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return policy.Request{}, fmt.Errorf("not a request object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return policy.Request{}, errors.New("trailing data after the JSON object")
	}
	r := policy.Request{WorkspaceID: in.WorkspaceID, DeploymentID: in.DeploymentID, Role: in.Role}
	if in.TTL != "" {
		// The broker refuses a ttl that is not a positive duration before
		// the policy sees it (400); so does the check, rather than print
		// "allow" with the grant's maximum for "0s".
		d, err := time.ParseDuration(in.TTL)
		if err != nil || d <= 0 {
			return policy.Request{}, fmt.Errorf("ttl %q is not a positive duration such as 15m", in.TTL)
		}
		r.TTL = d
	}
	return r, nil
}

func readPolicyInput(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPolicyInputSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPolicyInputSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPolicyInputSize)
	}
	return data, nil
}
