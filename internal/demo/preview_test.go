package demo

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// TestDocsExamplePolicy: docs/examples/policy.yaml is the sample policy
// byte for byte, so the policy the documented workflows need is the one the
// demo runs (and `astro-sts demo --print-policy` prints).
func TestDocsExamplePolicy(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join("..", "..", "docs", "examples", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, SamplePolicy()) {
		t.Error("docs/examples/policy.yaml differs from internal/demo/policy.yaml: copy one over the other")
	}
}

func TestPreviewName(t *testing.T) {
	tests := []struct{ branch, want string }{
		{"feature/x", "preview-feature-x"},
		{"x", "preview-x"},
		{"fix/deep/path_1", "preview-fix-deep-path_1"},
		{`x";touch${IFS}pwned;"`, "preview-x--touch--IFS-pwned--"},
		{"ünïcode", "preview--n-code"},
	}
	for _, tt := range tests {
		if got := PreviewName(tt.branch); got != tt.want {
			t.Errorf("PreviewName(%q) = %q, want %q", tt.branch, got, tt.want)
		}
	}
}

// TestAstroCLIRequests pins the requests the demo makes for each astro CLI
// command deploy-action runs (the list in docs/emulator.md), and that
// Astro's roles hold on that path: a Workspace Author cannot create the
// preview, an Operator can, and deletes it again.
func TestAstroCLIRequests(t *testing.T) {
	srv, emu, err := emulator.Start(emulator.Config{Workspaces: 2, Seed: EmulatorSeed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ws, source := emu.WorkspaceIDs()[1], emu.DeploymentIDs()[1]
	owner, err := astro.New(astro.Config{BaseURL: srv.URL, Token: emu.OrganizationToken()})
	if err != nil {
		t.Fatal(err)
	}
	cliFor := func(role string) *astroCLI {
		t.Helper()
		tok, err := owner.CreateToken(t.Context(), emu.OrganizationID(), astro.CreateTokenRequest{Name: role, Role: role, Scope: astro.ScopeWorkspace, EntityID: ws})
		if err != nil {
			t.Fatal(err)
		}
		d := &demo{stack: &stack{emu: emu, emuSrv: srv, http: http.DefaultClient, clock: clock.New(nil)}}
		cli, err := d.newAstroCLI(issued{value: tok.Token, workspaceID: ws})
		if err != nil {
			t.Fatal(err)
		}
		return cli
	}
	const (
		list    = "GET /organizations/{organizationId}/deployments 200"
		get     = "GET /organizations/{organizationId}/deployments/{deploymentId} 200"
		cluster = "GET /organizations/{organizationId}/clusters/{clusterId} 200"
	)
	ctx := t.Context()

	author := cliFor(astro.RoleWorkspaceAuthor)
	orig, _, err := author.inspect(ctx, source, "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{list, get, cluster}, author.take()); diff != "" {
		t.Errorf("inspect --template (-want +got):\n%s", diff)
	}
	_, err = author.createFromFile(ctx, previewFile(template(orig), "preview-by-author"))
	var ae *astro.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden {
		t.Errorf("an Author's create = %v, want 403", err)
	}

	op := cliFor(astro.RoleWorkspaceOperator)
	created, err := op.createFromFile(ctx, previewFile(template(orig), "preview-feature-x"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"GET /organizations/{organizationId}/clusters 200",
		list,
		"GET /organizations/{organizationId}/workspaces 200",
		"GET /organizations/{organizationId}/deployment-options 200",
		"POST /organizations/{organizationId}/deployments 200",
		list, list, get, cluster,
	}
	if diff := cmp.Diff(want, op.take()); diff != "" {
		t.Errorf("create --deployment-file (-want +got):\n%s", diff)
	}
	if created.Name != "preview-feature-x" || created.WorkspaceID != ws || *created.SchedulerSize != astro.SchedulerSmall ||
		*created.IsHighAvailability || len(*created.WorkerQueues) != 1 || (*created.WorkerQueues)[0].WorkerConcurrency != 1 {
		t.Errorf("created %+v", created)
	}
	if _, err := op.createFromFile(ctx, previewFile(template(orig), "preview-feature-x")); !errors.Is(err, ErrUnexpected) {
		t.Errorf("a second create of the same name = %v, want the CLI's 'already exists'", err)
	}
	op.take()
	if err := op.deleteByName(ctx, "preview-feature-x"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{list, get, "DELETE /organizations/{organizationId}/deployments/{deploymentId} 204"}, op.take()); diff != "" {
		t.Errorf("delete -n (-want +got):\n%s", diff)
	}
	if err := op.deleteByName(ctx, "preview-feature-x"); !errors.Is(err, ErrUnexpected) {
		t.Errorf("deleting it again = %v, want the CLI's 'not found in this workspace'", err)
	}
}
