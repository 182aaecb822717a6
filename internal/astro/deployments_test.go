package astro_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// TestClientDeployments walks the Deployment calls against the emulator
// over real HTTP: list (several pages), get, create, delete, clusters and
// options, and the route each attempt reports.
func TestClientDeployments(t *testing.T) {
	srv, emu := startEmulator(t, emulator.Config{Workspaces: 3, Seed: 3})
	obs := &observed{}
	c, err := astro.New(fastConfig(srv.URL, emu.OrganizationToken(), obs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, org, ws := t.Context(), emu.OrganizationID(), emu.WorkspaceIDs()

	all, err := c.ListDeployments(ctx, org, astro.ListDeploymentsOptions{PageSize: 2})
	if err != nil || len(all) != 3 {
		t.Fatalf("ListDeployments = %d, %v; want the 3 seeded", len(all), err)
	}
	if diff := cmp.Diff([]string{"GET " + astro.RouteDeployments + " 200", "GET " + astro.RouteDeployments + " 200"}, obs.take()); diff != "" {
		t.Errorf("two pages of two (-want +got):\n%s", diff)
	}
	some, err := c.ListDeployments(ctx, org, astro.ListDeploymentsOptions{WorkspaceIDs: []string{ws[1], ws[2]}, Names: []string{"deployment-3"}})
	if err != nil || len(some) != 1 || some[0].ID != emu.DeploymentIDs()[2] {
		t.Fatalf("filtered list = %+v, %v", some, err)
	}

	seeded, err := c.GetDeployment(ctx, org, emu.DeploymentIDs()[0])
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := c.GetCluster(ctx, org, *seeded.ClusterID)
	if err != nil || cluster.Name != *seeded.ClusterName || cluster.NodePools == nil {
		t.Fatalf("GetCluster = %+v, %v", cluster, err)
	}
	if cs, err := c.ListClusters(ctx, org); err != nil || len(cs) != 1 || cs[0].ID != cluster.ID {
		t.Fatalf("ListClusters = %+v, %v", cs, err)
	}
	opts, err := c.GetDeploymentOptions(ctx, org, astro.DeploymentTypeDedicated)
	if err != nil || len(opts.WorkerMachines) == 0 || len(opts.RuntimeReleases) == 0 {
		t.Fatalf("GetDeploymentOptions = %+v, %v", opts, err)
	}

	f := false
	created, err := c.CreateDeployment(ctx, org, astro.CreateDeploymentRequest{
		Type: astro.DeploymentTypeDedicated, Name: "copy", WorkspaceID: ws[0], ClusterID: seeded.ClusterID,
		AstroRuntimeVersion: seeded.AstroRuntimeVersion, Executor: *seeded.Executor, SchedulerSize: *seeded.SchedulerSize,
		IsHighAvailability: *seeded.IsHighAvailability, IsDevelopmentMode: &f, IsDagDeployEnabled: seeded.IsDagDeployEnabled,
		DefaultTaskPodCPU: *seeded.DefaultTaskPodCPU, DefaultTaskPodMemory: *seeded.DefaultTaskPodMemory,
		ResourceQuotaCPU: *seeded.ResourceQuotaCPU, ResourceQuotaMemory: *seeded.ResourceQuotaMemory,
		WorkerQueues: &[]astro.WorkerQueueRequest{{Name: "default", IsDefault: true, AstroMachine: "A5", MaxWorkerCount: 10, WorkerConcurrency: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.Status != astro.DeploymentCreating || created.WorkspaceID != ws[0] || *created.ClusterID != cluster.ID {
		t.Errorf("created %+v", created)
	}
	obs.take()
	if err := c.DeleteDeployment(ctx, org, created.ID); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteDeployment(ctx, org, created.ID)
	var ae *astro.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound {
		t.Errorf("second delete = %v, want a 404 APIError", err)
	}
	if diff := cmp.Diff([]string{"DELETE " + astro.RouteDeployment + " 204", "DELETE " + astro.RouteDeployment + " 404"}, obs.take()); diff != "" {
		t.Errorf("deletes (-want +got):\n%s", diff)
	}
	for _, id := range []string{"", ".", ".."} {
		if _, err := c.GetDeployment(ctx, org, id); !errors.Is(err, astro.ErrInvalidArgument) {
			t.Errorf("GetDeployment(%q) = %v, want ErrInvalidArgument", id, err)
		}
	}
	if len(obs.take()) != 0 {
		t.Error("an invalid id was sent")
	}
}
