package demo

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/action"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// policyClaims are the claims of c the sample policy can look at.
func policyClaims(c issuer.Claims) policy.Claims {
	return policy.Claims{
		"sub": c.Subject, "repository": c.Repository, "repository_id": c.RepositoryID,
		"repository_owner": c.RepositoryOwner, "repository_owner_id": c.RepositoryOwnerID,
		"ref": c.Ref, "event_name": c.EventName, "job_workflow_ref": c.JobWorkflowRef,
		"workflow_ref": c.WorkflowRef, "environment": c.Environment,
		"head_ref": c.HeadRef, "base_ref": c.BaseRef,
	}
}

// TestSamplePolicy keeps the embedded policy, the demo's jobs and the
// seeded emulator in step: the policy must grant the trusted job exactly the
// emulator's first Workspace, the preview jobs exactly its second, and
// nothing to the others.
func TestSamplePolicy(t *testing.T) {
	p, err := policy.Parse(SamplePolicy())
	if err != nil {
		t.Fatalf("the sample policy does not load: %v", err)
	}
	if diff := cmp.Diff([]string{"deploy-main", "preview", "preview-cleanup"}, p.RuleNames()); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	emu, err := emulator.New(emulator.Config{Workspaces: 2, Seed: EmulatorSeed})
	if err != nil {
		t.Fatal(err)
	}

	pushToFeature := trustedClaims("1")
	pushToFeature.Ref = "refs/heads/feature"
	pullRequestTarget := trustedClaims("1")
	pullRequestTarget.EventName = "pull_request_target"
	previewTarget := pullRequestClaims("1", previewWorkflow, previewBranch, previewPR)
	previewTarget.EventName = "pull_request_target"
	intoRelease := pullRequestClaims("1", previewWorkflow, previewBranch, previewPR)
	intoRelease.BaseRef = "release"
	cleanupFromBranch := deleteClaims("1", cleanupWorkflow)
	cleanupFromBranch.Ref = "refs/heads/" + previewBranch
	otherWorkflow := deleteClaims("1", "deploy.yml")
	tests := []struct {
		name    string
		claims  issuer.Claims
		req     policy.Request
		want    policy.Decision
		wantErr error
		widen   *policy.WidenError // Rule and Field of the expected refusal
	}{
		{
			name:   "trusted job gets the first Workspace",
			claims: trustedClaims("1"),
			want: policy.Decision{
				Rule: "deploy-main", Scope: astro.ScopeWorkspace, WorkspaceID: emu.WorkspaceIDs()[0],
				Role: astro.RoleWorkspaceAuthor, TTL: 30 * time.Minute,
			},
		},
		{
			name:   "the crashing job's ttl narrows the grant",
			claims: trustedClaims("2"),
			req:    policy.Request{TTL: crashTTL},
			want: policy.Decision{
				Rule: "deploy-main", Scope: astro.ScopeWorkspace, WorkspaceID: emu.WorkspaceIDs()[0],
				Role: astro.RoleWorkspaceAuthor, TTL: crashTTL,
			},
		},
		{
			name:   "the pull_request run creating a preview",
			claims: pullRequestClaims("1", previewWorkflow, previewBranch, previewPR),
			req:    policy.Request{Role: astro.RoleWorkspaceOperator},
			want: policy.Decision{
				Rule: "preview", Scope: astro.ScopeWorkspace, WorkspaceID: emu.WorkspaceIDs()[1],
				Role: astro.RoleWorkspaceOperator, TTL: 30 * time.Minute,
			},
		},
		{
			name:   "the delete run cleaning up",
			claims: deleteClaims("1", cleanupWorkflow),
			want: policy.Decision{
				Rule: "preview-cleanup", Scope: astro.ScopeWorkspace, WorkspaceID: emu.WorkspaceIDs()[1],
				Role: astro.RoleWorkspaceOperator, TTL: 15 * time.Minute,
			},
		},
		{
			name: "a push to main asking for Operator", claims: trustedClaims("1"), req: policy.Request{Role: astro.RoleWorkspaceOperator},
			widen: &policy.WidenError{Rule: "deploy-main", Field: "role"},
		},
		{
			name: "a preview asking for production", claims: pullRequestClaims("1", previewWorkflow, previewBranch, previewPR),
			req: policy.Request{WorkspaceID: emu.WorkspaceIDs()[0]}, widen: &policy.WidenError{Rule: "preview", Field: "workspace_id"},
		},
		{name: "preview workflow on pull_request_target", claims: previewTarget, wantErr: policy.ErrNoMatchingRule},
		{name: "pull request into another branch", claims: intoRelease, wantErr: policy.ErrNoMatchingRule},
		{name: "delete run claiming the deleted branch as its ref", claims: cleanupFromBranch, wantErr: policy.ErrNoMatchingRule},
		{name: "delete run of another workflow", claims: otherWorkflow, wantErr: policy.ErrNoMatchingRule},
		{name: "untrusted repository", claims: untrustedClaims("1"), wantErr: policy.ErrNoMatchingRule},
		{name: "other branch", claims: pushToFeature, wantErr: policy.ErrNoMatchingRule},
		{name: "other event", claims: pullRequestTarget, wantErr: policy.ErrNoMatchingRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Decide(policyClaims(tt.claims), tt.req)
			if tt.widen != nil {
				var we *policy.WidenError
				if !errors.As(err, &we) || we.Rule != tt.widen.Rule || we.Field != tt.widen.Field {
					t.Fatalf("Decide error = %v, want a refusal of %s by rule %q", err, tt.widen.Field, tt.widen.Rule)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decide error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSamplePolicyIsACopy(t *testing.T) {
	a := SamplePolicy()
	a[0] = 'X'
	if b := SamplePolicy(); bytes.Equal(a, b) || b[0] != '#' {
		t.Errorf("SamplePolicy shares its bytes: changed copy %q..., fresh %q...", a[:10], b[:10])
	}
}

// TestRunnerInputs keeps the demo's jobs in step with action.yml: the
// runner passes every declared input, so the demo does too.
func TestRunnerInputs(t *testing.T) {
	in := runnerInputs("http://127.0.0.1:1", map[string]string{action.InputTTL: "2m"})
	var names []string
	for name := range in {
		names = append(names, name)
	}
	if diff := cmp.Diff(action.InputNames(), names, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("inputs (-action.yml +demo):\n%s", diff)
	}
	if in[action.InputTTL] != "2m" || in[action.InputEnvName] != action.DefaultEnvName {
		t.Errorf("inputs = %v: the job's ttl or the default env-name is lost", in)
	}
}
