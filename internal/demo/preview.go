package demo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/astro-sts/astro-sts/action"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/issuer"
)

// PreviewName is the name the documented preview workflows give the
// preview Deployment of branch (docs/examples/preview.yml and
// preview-cleanup.yml, step "preview", which runs
// `echo "name=preview-${BRANCH//[^A-Za-z0-9_-]/-}"`): "preview-" and the
// whole branch, every character other than a letter, digit, '_' or '-'
// replaced by '-'.
//
// Why not deploy-action's own default: on create it names the preview
// after the last path segment of the branch (feature/x gives
// x_<Deployment name>) but on delete after the whole github.event.ref
// (feature/x_<Deployment name>), so the preview of a branch with a '/' was
// never deleted (astronomer/deploy-action#102). And deploy-action pastes
// the name into its shell script unquoted, so a branch named to inject a
// command must not reach it: only inert characters are kept.
func PreviewName(branch string) string {
	var b strings.Builder
	b.WriteString("preview-")
	for _, r := range branch {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// The preview chapter's jobs, as docs/examples/ runs them.
const (
	previewBranch   = "feature/x"
	previewPR       = "7"
	previewWorkflow = "preview.yml"
	cleanupWorkflow = "preview-cleanup.yml"
	previewTTL      = "30m"
	cleanupTTL      = "15m"
)

// pullRequestClaims are what GitHub puts in the OIDC token of a
// pull_request run of workflow for branch into main: ref is the pull
// request's merge ref, head_ref the branch, base_ref the base branch, and
// the workflow runs as it is in the merge commit.
func pullRequestClaims(runID, workflow, branch, number string) issuer.Claims {
	c := trustedClaims(runID)
	c.EventName, c.Ref, c.RefType, c.RefProtected = "pull_request", "refs/pull/"+number+"/merge", "branch", "false"
	c.HeadRef, c.BaseRef = branch, "main"
	c.Subject = "repo:" + trustedRepo + ":pull_request"
	c.Environment = ""
	c.Extra = map[string]any{"environment": nil}
	c.Workflow = strings.TrimSuffix(workflow, ".yml")
	c.JobWorkflowRef = trustedRepo + "/.github/workflows/" + workflow + "@" + c.Ref
	c.WorkflowRef = c.JobWorkflowRef
	return c
}

// deleteClaims are what GitHub puts in the OIDC token of a delete run: the
// workflow runs from the default branch, so ref is refs/heads/main; the
// deleted branch is only in the event payload (github.event.ref).
func deleteClaims(runID, workflow string) issuer.Claims {
	c := trustedClaims(runID)
	c.EventName, c.Ref, c.RefType, c.RefProtected = "delete", "refs/heads/main", "branch", "true"
	c.Subject = "repo:" + trustedRepo + ":ref:refs/heads/main"
	c.Environment = ""
	c.Extra = map[string]any{"environment": nil}
	c.Workflow = strings.TrimSuffix(workflow, ".yml")
	c.JobWorkflowRef = trustedRepo + "/.github/workflows/" + workflow + "@refs/heads/main"
	c.WorkflowRef = c.JobWorkflowRef
	return c
}

// astroCLI makes the requests the astro CLI makes for the commands
// astronomer/deploy-action runs, in the same order, with the token a job
// exported: it stands in for the CLI, which the demo cannot assume is
// installed. Each method names the CLI function it follows
// (astronomer/astro-cli, cloud/deployment/...); docs/emulator.md lists the
// requests.
type astroCLI struct {
	c   *astro.Client
	org string
	// ws is the CLI's current Workspace: with a Workspace token in
	// ASTRO_API_TOKEN, the token's own.
	ws string

	mu       sync.Mutex
	requests []string // "METHOD route status", since the last take
}

func (d *demo) newAstroCLI(tok issued) (*astroCLI, error) {
	cli := &astroCLI{org: d.emu.OrganizationID(), ws: tok.workspaceID}
	c, err := d.cliClient(tok, func(method, route string, status int, _ time.Duration) {
		cli.mu.Lock()
		defer cli.mu.Unlock()
		cli.requests = append(cli.requests, fmt.Sprintf("%s %s %d", method, route, status))
	})
	if err != nil {
		return nil, err
	}
	cli.c = c
	return cli, nil
}

// take returns the requests made since the last take.
func (a *astroCLI) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.requests
	a.requests = nil
	return r
}

// getDeployment follows deployment.GetDeployment: list the current
// Workspace's Deployments (limit 1000), pick one by id or else by name,
// then get it.
func (a *astroCLI) getDeployment(ctx context.Context, id, name string) (*astro.Deployment, error) {
	list, err := a.c.ListDeployments(ctx, a.org, astro.ListDeploymentsOptions{WorkspaceIDs: []string{a.ws}, PageSize: astro.MaxPageSize})
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(list, func(d astro.Deployment) bool { return (id != "" && d.ID == id) || (id == "" && d.Name == name) })
	if i < 0 {
		return nil, fmt.Errorf("%w: the Deployment specified was not found in this workspace", ErrUnexpected)
	}
	return a.c.GetDeployment(ctx, a.org, list[i].ID)
}

// inspect follows inspect.Inspect: the Deployment, then its cluster when
// it has one.
func (a *astroCLI) inspect(ctx context.Context, id, name string) (*astro.Deployment, *astro.Cluster, error) {
	d, err := a.getDeployment(ctx, id, name)
	if err != nil {
		return nil, nil, err
	}
	if d.ClusterID == nil {
		return d, nil, nil
	}
	cl, err := a.c.GetCluster(ctx, a.org, *d.ClusterID)
	return d, cl, err
}

// deploymentFile is the part of a deployment file (inspect's
// FormattedDeployment) that create reads.
type deploymentFile struct {
	Name, Description, RuntimeVersion, Executor, SchedulerSize        string
	ClusterName, WorkspaceName, DeploymentType, CloudProvider, Region string
	DagDeployEnabled, CICDEnforcement, IsHighAvailability             bool
	DefaultTaskPodCPU, DefaultTaskPodMemory                           string
	ResourceQuotaCPU, ResourceQuotaMemory                             string
	WorkerQueues                                                      []fileQueue
	EnvVars                                                           int // how many; the emulator's seeds have none
	AlertEmails                                                       []string
}

type fileQueue struct {
	Name                                        string
	MinWorkerCount, MaxWorkerCount, Concurrency int
	WorkerType                                  string
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// template follows `astro deployment inspect --template` (inspect.go:
// getDeploymentConfig, getQMap, getTemplate): the configuration without
// name and metadata, the worker queues with their machine as worker_type,
// the non-secret variables.
func template(d *astro.Deployment) deploymentFile {
	f := deploymentFile{
		Description: deref(d.Description), RuntimeVersion: d.RuntimeVersion, Executor: deref(d.Executor),
		SchedulerSize: deref(d.SchedulerSize), WorkspaceName: deref(d.WorkspaceName), DeploymentType: deref(d.Type),
		CloudProvider: deref(d.CloudProvider), Region: deref(d.Region), DagDeployEnabled: d.IsDagDeployEnabled,
		CICDEnforcement: d.IsCicdEnforced, IsHighAvailability: deref(d.IsHighAvailability),
		DefaultTaskPodCPU: deref(d.DefaultTaskPodCPU), DefaultTaskPodMemory: deref(d.DefaultTaskPodMemory),
		ResourceQuotaCPU: deref(d.ResourceQuotaCPU), ResourceQuotaMemory: deref(d.ResourceQuotaMemory),
		AlertEmails: deref(d.ContactEmails),
	}
	if f.DeploymentType != astro.DeploymentTypeStandard {
		f.ClusterName = deref(d.ClusterName)
	}
	if f.Executor != astro.ExecutorKubernetes {
		for _, q := range deref(d.WorkerQueues) {
			f.WorkerQueues = append(f.WorkerQueues, fileQueue{Name: q.Name, MinWorkerCount: q.MinWorkerCount,
				MaxWorkerCount: q.MaxWorkerCount, Concurrency: q.WorkerConcurrency, WorkerType: deref(q.AstroMachine)})
		}
	}
	for _, v := range deref(d.EnvironmentVariables) {
		if !v.IsSecret {
			f.EnvVars++
		}
	}
	return f
}

// previewFile applies deploy-action's edits to the template (its sed and
// yq lines for create-deployment-preview): the preview's name, no high
// availability, a small scheduler, one default queue of A5 workers,
// 0..10 of them, concurrency 1 (the action's input defaults). Its
// is_development_mode edit finds no such key in the template, so the
// preview is created without development mode.
func previewFile(tmpl deploymentFile, name string) deploymentFile {
	f := tmpl
	f.Name, f.IsHighAvailability, f.SchedulerSize = name, false, "small"
	f.WorkerQueues = []fileQueue{{Name: "default", MinWorkerCount: 0, MaxWorkerCount: 10, Concurrency: 1, WorkerType: "A5"}}
	return f
}

// named is the item of list (unless listing it failed with err) whose
// name is want, as the CLI looks a cluster or a Workspace up by its name
// from a file's field.
func named[T any](list []T, err error, name func(T) string, field, want string) (*T, error) {
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(list, func(v T) bool { return name(v) == want })
	if i < 0 {
		return nil, fmt.Errorf("%w: %s: %s does not exist", ErrUnexpected, field, want)
	}
	return &list[i], nil
}

// createFromFile follows fromfile.CreateOrUpdate for create: the cluster by
// name (not for Standard), every Deployment of the organization (to refuse
// an existing name), the Workspace by name, the deployment options (to
// check the worker queues), the create, then the list again and an
// inspect of the new Deployment by id.
func (a *astroCLI) createFromFile(ctx context.Context, f deploymentFile) (*astro.Deployment, error) {
	if f.Name == "" || f.Executor == "" {
		return nil, fmt.Errorf("%w: missing required field: deployment.configuration.name or executor", ErrUnexpected)
	}
	var clusterID *string
	if f.DeploymentType != astro.DeploymentTypeStandard {
		clusters, err := a.c.ListClusters(ctx, a.org)
		cl, err := named(clusters, err, func(c astro.Cluster) string { return c.Name }, "cluster_name", f.ClusterName)
		if err != nil {
			return nil, err
		}
		clusterID = &cl.ID
	}
	existing, err := a.c.ListDeployments(ctx, a.org, astro.ListDeploymentsOptions{PageSize: astro.MaxPageSize})
	if err != nil {
		return nil, err
	}
	workspaces, err := a.c.ListWorkspaces(ctx, a.org)
	ws, err := named(workspaces, err, func(w astro.Workspace) string { return w.Name }, "workspace_name", f.WorkspaceName)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(existing, func(d astro.Deployment) bool { return d.Name == f.Name }) {
		return nil, fmt.Errorf("%w: deployment: %s already exists", ErrUnexpected, f.Name)
	}
	if f.EnvVars > 0 || len(f.AlertEmails) > 0 {
		// The CLI would create, then update the Deployment with them; the
		// emulator serves no update, and its seeds have neither.
		return nil, fmt.Errorf("%w: the template has environment variables or alert emails, which the demo does not copy", ErrUnexpected)
	}
	opts, err := a.c.GetDeploymentOptions(ctx, a.org, "")
	if err != nil {
		return nil, err
	}
	var queues []astro.WorkerQueueRequest
	for _, q := range f.WorkerQueues {
		mi := slices.IndexFunc(opts.WorkerMachines, func(m astro.WorkerMachine) bool { return m.Name == q.WorkerType })
		if mi < 0 || float64(q.Concurrency) > opts.WorkerMachines[mi].Concurrency.Ceiling {
			return nil, fmt.Errorf("%w: worker queue %s: worker_type %s and concurrency %d are not offered", ErrUnexpected, q.Name, q.WorkerType, q.Concurrency)
		}
		queues = append(queues, astro.WorkerQueueRequest{ID: new(string), Name: q.Name, IsDefault: q.Name == "default",
			AstroMachine: q.WorkerType, MinWorkerCount: q.MinWorkerCount, MaxWorkerCount: q.MaxWorkerCount, WorkerConcurrency: q.Concurrency})
	}
	req := astro.CreateDeploymentRequest{
		Type: strings.ToUpper(f.DeploymentType), Name: f.Name, Description: &f.Description, WorkspaceID: ws.ID,
		ClusterID: clusterID, AstroRuntimeVersion: f.RuntimeVersion, Executor: f.Executor, SchedulerSize: strings.ToUpper(f.SchedulerSize),
		IsCicdEnforced: f.CICDEnforcement, IsDagDeployEnabled: f.DagDeployEnabled, IsHighAvailability: f.IsHighAvailability,
		DefaultTaskPodCPU: f.DefaultTaskPodCPU, DefaultTaskPodMemory: f.DefaultTaskPodMemory,
		ResourceQuotaCPU: f.ResourceQuotaCPU, ResourceQuotaMemory: f.ResourceQuotaMemory, WorkerQueues: &queues,
	}
	if req.Type == astro.DeploymentTypeStandard {
		req.CloudProvider, req.Region = &f.CloudProvider, &f.Region
	}
	created, err := a.c.CreateDeployment(ctx, a.org, req)
	if err != nil {
		return nil, err
	}
	if _, err := a.c.ListDeployments(ctx, a.org, astro.ListDeploymentsOptions{PageSize: astro.MaxPageSize}); err != nil {
		return nil, err
	}
	d, _, err := a.inspect(ctx, created.ID, "")
	return d, err
}

// deleteByName follows deployment.Delete with -n NAME -f: find the
// Deployment in the current Workspace, then delete it.
func (a *astroCLI) deleteByName(ctx context.Context, name string) error {
	d, err := a.getDeployment(ctx, "", name)
	if err != nil {
		return err
	}
	return a.c.DeleteDeployment(ctx, a.org, d.ID)
}

// previewWorkspace is the Workspace of the sample policy's preview rules.
func (d *demo) previewWorkspace() string { return d.emu.WorkspaceIDs()[1] }

// previewSource is the Deployment the previews copy
// (docs/examples/preview.yml's DEPLOYMENT_ID).
func (d *demo) previewSource() string { return d.emu.DeploymentIDs()[1] }

// requestSummary shortens the requests of one CLI command for the output:
// how many, and the one that changed something (or else the last).
func requestSummary(reqs []string) string {
	if len(reqs) == 0 {
		return "no requests"
	}
	key := reqs[len(reqs)-1]
	if i := slices.IndexFunc(reqs, func(r string) bool { return !strings.HasPrefix(r, http.MethodGet+" ") }); i >= 0 {
		key = reqs[i]
	}
	return fmt.Sprintf("%d requests, among them %s", len(reqs), strings.Replace(key, "/organizations/{organizationId}", "", 1))
}

// previewCreate plays the pull_request run that opens the preview: the
// action's main step under rule preview, deploy-action's
// create-deployment-preview as the astro CLI's requests, the post step.
func (d *demo) previewCreate(ctx context.Context) (string, error) {
	const step = "preview: create"
	name := PreviewName(previewBranch)
	d.p.f("\n6. A pull_request run for branch %s (docs/examples/preview.yml, job create), rule preview:\n", previewBranch)
	tok, err := d.mainStep(ctx, pullRequestClaims("3001", previewWorkflow, previewBranch, previewPR),
		map[string]string{action.InputRole: astro.RoleWorkspaceOperator, action.InputTTL: previewTTL}, d.previewWorkspace())
	if err != nil {
		return "", &StepError{Step: step, Err: err}
	}
	cli, err := d.newAstroCLI(tok)
	if err != nil {
		return "", &StepError{Step: step, Err: err}
	}
	d.p.f("   The naming step names the preview %s; deploy-action then runs the astro CLI:\n", name)
	orig, _, err := cli.inspect(ctx, d.previewSource(), "")
	if err != nil {
		return "", &StepError{Step: step, Err: err}
	}
	d.p.f("   astro deployment inspect %s --template: %s\n", orig.ID, requestSummary(cli.take()))
	created, err := cli.createFromFile(ctx, previewFile(template(orig), name))
	if err != nil {
		return "", &StepError{Step: step, Err: err}
	}
	d.p.f("   astro deployment create --deployment-file ...: %s\n", requestSummary(cli.take()))
	found, err := cli.getDeployment(ctx, "", name)
	if err != nil {
		return "", &StepError{Step: step, Err: err}
	}
	cli.take()
	d.p.f("   astro deployment inspect -n %s --key metadata.deployment_id -> %s\n", name, found.ID)
	d.p.f("   The preview is a copy of %s, in the same Workspace and cluster.\n", orig.Name)
	if found.ID != created.ID || found.WorkspaceID != orig.WorkspaceID || deref(found.ClusterID) != deref(orig.ClusterID) {
		return "", unexpected(step, "the preview %+v is not a copy of %s in its Workspace", found, orig.ID)
	}
	if err := d.postRevokes(ctx, step, tok); err != nil {
		return "", err
	}
	return found.ID, nil
}

// previewCleanup plays the delete run after the branch is deleted: the
// token under rule preview-cleanup, deploy-action's
// delete-deployment-preview with the name the workflow computes from
// github.event.ref, the post step.
func (d *demo) previewCleanup(ctx context.Context, previewID string) error {
	const step = "preview: clean up"
	name := PreviewName(previewBranch)
	d.p.f("\n7. Branch %s is deleted: a delete run (docs/examples/preview-cleanup.yml), ref refs/heads/main\n", previewBranch)
	d.p.f("   in its token, github.event.ref %s in the event payload; rule preview-cleanup:\n", previewBranch)
	tok, err := d.mainStep(ctx, deleteClaims("3002", cleanupWorkflow),
		map[string]string{action.InputRole: astro.RoleWorkspaceOperator, action.InputTTL: cleanupTTL}, d.previewWorkspace())
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	cli, err := d.newAstroCLI(tok)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	if err := cli.deleteByName(ctx, name); err != nil {
		return &StepError{Step: step, Err: err}
	}
	d.p.f("   astro deployment delete -n %s -f: %s\n", name, requestSummary(cli.take()))
	left, err := cli.c.ListDeployments(ctx, cli.org, astro.ListDeploymentsOptions{WorkspaceIDs: []string{cli.ws}})
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	var names []string
	for _, dep := range left {
		names = append(names, dep.Name)
		if dep.ID == previewID {
			return unexpected(step, "preview %s is still there", previewID)
		}
	}
	d.p.f("   The previews Workspace now holds: %s\n", strings.Join(names, ", "))
	return d.postRevokes(ctx, step, tok)
}

// operatorRefused plays a push to main asking for WORKSPACE_OPERATOR: the
// deploy rule matches but grants WORKSPACE_AUTHOR, and the preview rules
// do not match a push, so the broker refuses and says why.
func (d *demo) operatorRefused(ctx context.Context) error {
	const step = "operator refused"
	d.p.f("\n8. A push to main of %s asks for %s (to create Deployments outside the previews):\n", trustedRepo, astro.RoleWorkspaceOperator)
	before := len(d.emu.Tokens())
	j, err := d.newJob(trustedClaims("3003"), map[string]string{action.InputRole: astro.RoleWorkspaceOperator})
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	_, mainErr := d.runMain(ctx, j)
	var be *action.BrokerError
	if !errors.As(mainErr, &be) || be.Status != http.StatusForbidden || be.Code != brokerapi.CodeTooWide {
		return unexpected(step, "the exchange was not refused with 403 too_wide (got: %v)", mainErr)
	}
	d.p.f("   The broker answered %d %s: %q\n", be.Status, be.Code, be.Message)
	if n := len(d.emu.Tokens()); n != before {
		return unexpected(step, "a refused exchange minted %d tokens", n-before)
	}
	return nil
}
