package emulator

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// The Deployment endpoints: the part of Astro's v1 API that the astro CLI
// calls for `astro deployment list`, `inspect` (with --template and --key),
// `create --deployment-file` and `delete`, which is all that
// astronomer/deploy-action runs for create-deployment-preview and
// delete-deployment-preview. docs/emulator.md lists each request with the
// place in the CLI's source that makes it.
//
// Who may do what (the emulator's reading of Astro's role model; the facts
// file says only that creating and deleting Deployments needs Workspace
// Operator or Owner):
//   - ORGANIZATION_OWNER may do everything.
//   - WORKSPACE_OPERATOR and WORKSPACE_OWNER create and delete Deployments
//     in their Workspace; any Workspace role reads its Deployments. This
//     holds for Workspace tokens and for Organization tokens holding
//     Workspace roles, in exactly those Workspaces.
//   - A Deployment token (and an Organization token with a role on a
//     Deployment) reads and deletes that Deployment and no other, and
//     creates none: Astro gives it "the permissions of a Workspace Operator
//     for Deployment-level operations". Whether deleting its own Deployment
//     is one of them is UNCONFIRMED; the emulator says yes.
//   - Listing returns the Deployments the caller may read; it never
//     answers 403, because the CLI lists the whole organization with a
//     Workspace token when it creates from a file.
//   - Clusters and deployment options are readable by every token of the
//     organization (the CLI reads the cluster of a Deployment it inspects,
//     whatever the token).

// Catalog of the emulated organization: what GET /deployment-options offers
// and what create accepts. The values are plausible, not Astro's price
// list (UNCONFIRMED); a client should read them from the API, as the CLI
// does.
var (
	runtimeReleases = []astro.RuntimeRelease{
		{Version: "12.4.0", AirflowVersion: "2.10.3", Channel: "STABLE", ReleaseDate: time.Date(2024, 11, 5, 0, 0, 0, 0, time.UTC)},
		{Version: "13.0.0", AirflowVersion: "3.0.1", Channel: "STABLE", ReleaseDate: time.Date(2025, 5, 13, 0, 0, 0, 0, time.UTC)},
	}
	schedulerMachines = []astro.SchedulerMachine{
		{Name: astro.SchedulerSmall, Spec: astro.MachineSpec{CPU: "1", Memory: "2Gi"}},
		{Name: astro.SchedulerMedium, Spec: astro.MachineSpec{CPU: "2", Memory: "4Gi"}},
		{Name: astro.SchedulerLarge, Spec: astro.MachineSpec{CPU: "4", Memory: "8Gi"}},
		{Name: astro.SchedulerExtraLarge, Spec: astro.MachineSpec{CPU: "8", Memory: "16Gi"}},
	}
	workerMachines = []astro.WorkerMachine{
		{Name: "A5", Spec: astro.MachineSpec{CPU: "1", Memory: "2Gi"}, Concurrency: astro.Range{Floor: 1, Ceiling: 15, Default: 5}},
		{Name: "A10", Spec: astro.MachineSpec{CPU: "2", Memory: "4Gi"}, Concurrency: astro.Range{Floor: 1, Ceiling: 30, Default: 10}},
		{Name: "A20", Spec: astro.MachineSpec{CPU: "4", Memory: "8Gi"}, Concurrency: astro.Range{Floor: 1, Ceiling: 60, Default: 20}},
		{Name: "A40", Spec: astro.MachineSpec{CPU: "8", Memory: "16Gi"}, Concurrency: astro.Range{Floor: 1, Ceiling: 120, Default: 40}},
		{Name: "A60", Spec: astro.MachineSpec{CPU: "12", Memory: "24Gi"}, Concurrency: astro.Range{Floor: 1, Ceiling: 180, Default: 60}},
	}
	workerQueueOptions = astro.WorkerQueueOptions{
		MinWorkers:        astro.Range{Floor: 0, Ceiling: 30, Default: 0},
		MaxWorkers:        astro.Range{Floor: 1, Ceiling: 30, Default: 10},
		WorkerConcurrency: astro.Range{Floor: 1, Ceiling: 180, Default: 5},
	}
	resourceQuotas = astro.ResourceQuotaOptions{
		DefaultPodSize: astro.ResourceOption{
			CPU:    astro.ResourceRange{Floor: "0.25", Ceiling: "8", Default: "1"},
			Memory: astro.ResourceRange{Floor: "0.5Gi", Ceiling: "16Gi", Default: "2Gi"},
		},
		ResourceQuota: astro.ResourceOption{
			CPU:    astro.ResourceRange{Floor: "1", Ceiling: "1600", Default: "160"},
			Memory: astro.ResourceRange{Floor: "2Gi", Ceiling: "3200Gi", Default: "320Gi"},
		},
	}
	executors = []string{astro.ExecutorCelery, astro.ExecutorKubernetes, astro.ExecutorAstro}
	// standardRegions are where a Standard Deployment may be created.
	standardRegions = map[string][]string{
		"AWS":   {"us-east-1", "us-west-2"},
		"AZURE": {"eastus2", "westeurope"},
		"GCP":   {"us-central1", "europe-west4"},
	}
	cloudProviders  = []string{"AWS", "AZURE", "GCP"}
	deploymentTypes = []string{astro.DeploymentTypeStandard, astro.DeploymentTypeDedicated, astro.DeploymentTypeHybrid}
	deploymentSorts = []string{"name", "createdAt", "updatedAt"}
	clusterSorts    = deploymentSorts
	schedulerSizes  = []string{astro.SchedulerSmall, astro.SchedulerMedium, astro.SchedulerLarge, astro.SchedulerExtraLarge}
	catalog         = astro.DeploymentOptions{
		Executors: executors, RuntimeReleases: runtimeReleases, SchedulerMachines: schedulerMachines,
		WorkerMachines: workerMachines, WorkerQueues: workerQueueOptions, ResourceQuotas: resourceQuotas,
	}
)

// Bounds of the Deployment endpoints. Astro's own limits are UNCONFIRMED;
// these keep a stored Deployment and a listing small.
const (
	maxListFilter   = 100 // values of one list filter (workspaceIds, names, ...)
	maxWorkerQueues = 50
	maxEnvVars      = 500
	maxEmails       = 100
	maxShortString  = 256 // queue names, machine names, keys, workload identity
	maxEnvValue     = 64 << 10
)

var (
	errDeploymentNotFound = &httpError{status: http.StatusNotFound, msg: "Deployment not found"}
	errClusterNotFound    = &httpError{status: http.StatusNotFound, msg: "cluster not found"}

	cpuQuantity    = regexp.MustCompile(`^[0-9]{1,5}(\.[0-9]{1,3})?$`)
	memoryQuantity = regexp.MustCompile(`^[0-9]{1,6}(\.[0-9]{1,3})?Gi$`)
	envKey         = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	queueName      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

func ptr[T any](v T) *T { return &v }

// seedDeployments creates the cluster and one Dedicated Deployment per
// Workspace with the given ids. Called by New only.
func (e *Emulator) seedDeployments(ids []string, by astro.Subject, t time.Time) {
	clusterID := e.newID()
	machines := []string{"A5", "A10", "A20", "A40", "A60"}
	wsIDs := e.WorkspaceIDs()
	e.cluster = astro.Cluster{
		ID: clusterID, Name: "emulator-cluster", OrganizationID: e.org.ID,
		CloudProvider: "AWS", Region: "us-east-1", Type: astro.DeploymentTypeDedicated, Status: "CREATED",
		DBInstanceType: "db.m6g.large", VpcSubnetRange: "172.20.0.0/19",
		NodePools: &[]astro.NodePool{{
			ID: e.newID(), Name: "default", ClusterID: clusterID, CloudProvider: "AWS", IsDefault: true,
			MaxNodeCount: 20, NodeInstanceType: "m6i.xlarge", SupportedAstroMachines: &machines,
			Stamps: astro.Stamps{CreatedAt: t, UpdatedAt: t},
		}},
		Workspaces: &wsIDs,
		Stamps:     astro.Stamps{CreatedAt: t, UpdatedAt: t},
	}
	for i, id := range ids {
		b := createDeploymentBody{
			Type: astro.DeploymentTypeDedicated, Name: fmt.Sprintf("deployment-%d", i+1),
			Description: ptr("seeded by the emulator"), WorkspaceID: e.workspaces[i].ID, ClusterID: ptr(clusterID),
			AstroRuntimeVersion: runtimeReleases[0].Version, Executor: astro.ExecutorCelery, SchedulerSize: astro.SchedulerSmall,
			IsCicdEnforced: ptr(false), IsDagDeployEnabled: ptr(true), IsHighAvailability: ptr(false), IsDevelopmentMode: ptr(false),
			DefaultTaskPodCPU: "1", DefaultTaskPodMemory: "2Gi", ResourceQuotaCPU: "10", ResourceQuotaMemory: "20Gi",
			WorkerQueues: []astro.WorkerQueueRequest{{Name: "default", IsDefault: true, AstroMachine: "A5", MinWorkerCount: 0, MaxWorkerCount: 10, WorkerConcurrency: 5}},
		}
		e.deployments[id] = e.buildDeployment(id, &b, by, t)
		e.seededDeps = append(e.seededDeps, id)
	}
}

// Deployments returns a snapshot of all live Deployments, ordered by
// createdAt then id, for assertions in tests.
func (e *Emulator) Deployments() []astro.Deployment {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]astro.Deployment, 0, len(e.deployments))
	for _, d := range e.deployments {
		out = append(out, cloneDeployment(d))
	}
	sortDeployments(out, nil)
	return out
}

// cloneDeployment copies d deeply enough that the caller cannot reach the
// stored record's lists.
func cloneDeployment(d *astro.Deployment) astro.Deployment {
	c := *d
	if d.WorkerQueues != nil {
		c.WorkerQueues = ptr(slices.Clone(*d.WorkerQueues))
	}
	if d.EnvironmentVariables != nil {
		c.EnvironmentVariables = ptr(slices.Clone(*d.EnvironmentVariables))
	}
	if d.ContactEmails != nil {
		c.ContactEmails = ptr(slices.Clone(*d.ContactEmails))
	}
	return c
}

func sortDeployments(ds []astro.Deployment, keys []sortKey) {
	slices.SortStableFunc(ds, func(a, b astro.Deployment) int {
		for _, k := range keys {
			var c int
			switch k.field {
			case "name":
				c = strings.Compare(a.Name, b.Name)
			case "createdAt":
				c = a.CreatedAt.Compare(b.CreatedAt)
			case "updatedAt":
				c = a.UpdatedAt.Compare(b.UpdatedAt)
			}
			if c = k.apply(c); c != 0 {
				return c
			}
		}
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

func (p *principal) canReadDeployment(d *astro.Deployment) bool {
	return p.owner() || p.wsRank[d.WorkspaceID] > 0 || p.deps[d.ID]
}

// canCreateDeployments: ORGANIZATION_OWNER, or WORKSPACE_OPERATOR or more
// in ws.
func (p *principal) canCreateDeployments(ws string) bool {
	operator, _ := astro.WorkspaceRoleRank(astro.RoleWorkspaceOperator)
	return p.owner() || (ws != "" && p.wsRank[ws] >= operator)
}

func (p *principal) canDeleteDeployment(d *astro.Deployment) bool {
	return p.canCreateDeployments(d.WorkspaceID) || p.deps[d.ID]
}

// listParam reads a repeatable list filter. ids may also come
// comma-separated (a client generated with explode: false sends that);
// names may contain commas, so they are taken only as repeated values.
func listParam(q url.Values, name string, ids bool, fe *[]astro.FieldError) []string {
	var out []string
	for _, v := range q[name] {
		parts := []string{v}
		if ids {
			parts = strings.Split(v, ",")
		}
		for _, part := range parts {
			if part == "" || utf8.RuneCountInString(part) > MaxNameLen {
				*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: name, Message: fmt.Sprintf("each value must be 1 to %d characters", MaxNameLen)})
				return nil
			}
			out = append(out, part)
		}
	}
	if len(out) > maxListFilter {
		*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: name, Message: fmt.Sprintf("at most %d values", maxListFilter)})
		return nil
	}
	return out
}

// oneOf reads an optional enumerated parameter.
func oneOf(q url.Values, name string, allowed []string, fe *[]astro.FieldError) string {
	v := single(q, name, fe)
	if v != "" && !slices.Contains(allowed, v) {
		*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: name, Message: "must be " + orList(allowed)})
	}
	return v
}

// listDeployments serves GET /organizations/{org}/deployments: the
// Deployments the caller may read, filtered by workspaceIds, deploymentIds
// and names (each a list; the kinds combine with AND), default order
// createdAt ascending then id.
func (e *Emulator) listDeployments(w http.ResponseWriter, r *http.Request, p *principal) {
	var (
		offset, limit        int
		keys                 []sortKey
		wsIDs, depIDs, names []string
	)
	if !readQuery(w, r, func(q url.Values, fe *[]astro.FieldError) {
		offset, limit = pageParams(q, fe)
		keys = sortParams(q, deploymentSorts, fe)
		wsIDs = listParam(q, "workspaceIds", true, fe)
		depIDs = listParam(q, "deploymentIds", true, fe)
		names = listParam(q, "names", false, fe)
	}) {
		return
	}
	e.mu.Lock()
	matched := make([]astro.Deployment, 0, len(e.deployments))
	for _, d := range e.deployments {
		switch {
		case !p.canReadDeployment(d):
		case len(wsIDs) > 0 && !slices.Contains(wsIDs, d.WorkspaceID):
		case len(depIDs) > 0 && !slices.Contains(depIDs, d.ID):
		case len(names) > 0 && !slices.Contains(names, d.Name):
		default:
			matched = append(matched, cloneDeployment(d))
		}
	}
	e.mu.Unlock()
	sortDeployments(matched, keys)
	items, info := page(matched, offset, limit)
	writeJSON(w, http.StatusOK, astro.DeploymentsPage{Deployments: items, PageInfo: info})
}

// getDeployment serves GET /organizations/{org}/deployments/{deployment}.
func (e *Emulator) getDeployment(w http.ResponseWriter, r *http.Request, p *principal) {
	e.mu.Lock()
	d, ok := e.deployment(r.PathValue("deployment"))
	var he *httpError
	var out astro.Deployment
	switch {
	case !ok:
		he = errDeploymentNotFound
	case !p.canReadDeployment(d):
		he = errForbidden
	default:
		out = cloneDeployment(d)
	}
	e.mu.Unlock()
	reply(w, he, out)
}

// deleteDeployment serves DELETE /organizations/{org}/deployments/{deployment}:
// 204 with an empty body. The Deployment's own API tokens go with it (their
// values get 401 from the next request on), and roles on it are removed
// from Organization tokens: the emulator's reading of what Astro does
// (UNCONFIRMED), and the one that leaves no token pointing at nothing.
func (e *Emulator) deleteDeployment(w http.ResponseWriter, r *http.Request, p *principal) {
	now := e.clock()
	e.mu.Lock()
	d, ok := e.deployment(r.PathValue("deployment"))
	var he *httpError
	switch {
	case !ok:
		he = errDeploymentNotFound
	case !p.canDeleteDeployment(d):
		he = errForbidden
	default:
		delete(e.deployments, d.ID)
		for id, rec := range e.tokens {
			if !hasRole(&rec.tok, astro.EntityDeployment, d.ID) {
				continue
			}
			if rec.tok.Scope == astro.ScopeDeployment {
				delete(e.tokens, id)
				continue
			}
			rec.tok.Roles = slices.DeleteFunc(slices.Clone(rec.tok.Roles), func(role astro.TokenRole) bool {
				return role.EntityType == astro.EntityDeployment && role.EntityID == d.ID
			})
			rec.tok.UpdatedAt, rec.tok.UpdatedBy = now, p.subject()
		}
	}
	e.mu.Unlock()
	if he != nil {
		he.write(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// createDeploymentBody is the body of POST /deployments as the emulator
// accepts it: the union of Astro's CreateStandardDeploymentRequest and
// CreateDedicatedDeploymentRequest, told apart by type, plus the fields of
// the Hybrid request so that one gets a clear refusal rather than an
// unknown-field error. The booleans Astro requires are pointers, so that a
// missing one is reported instead of read as false.
type createDeploymentBody struct {
	Type                 string                             `json:"type"`
	Name                 string                             `json:"name"`
	Description          *string                            `json:"description"`
	WorkspaceID          string                             `json:"workspaceId"`
	ClusterID            *string                            `json:"clusterId"`
	CloudProvider        *string                            `json:"cloudProvider"`
	Region               *string                            `json:"region"`
	AstroRuntimeVersion  string                             `json:"astroRuntimeVersion"`
	Executor             string                             `json:"executor"`
	SchedulerSize        string                             `json:"schedulerSize"`
	IsCicdEnforced       *bool                              `json:"isCicdEnforced"`
	IsDagDeployEnabled   *bool                              `json:"isDagDeployEnabled"`
	IsHighAvailability   *bool                              `json:"isHighAvailability"`
	IsDevelopmentMode    *bool                              `json:"isDevelopmentMode"`
	DefaultTaskPodCPU    string                             `json:"defaultTaskPodCpu"`
	DefaultTaskPodMemory string                             `json:"defaultTaskPodMemory"`
	ResourceQuotaCPU     string                             `json:"resourceQuotaCpu"`
	ResourceQuotaMemory  string                             `json:"resourceQuotaMemory"`
	WorkerQueues         []astro.WorkerQueueRequest         `json:"workerQueues"`
	EnvironmentVariables []astro.EnvironmentVariableRequest `json:"environmentVariables"`
	ContactEmails        []string                           `json:"contactEmails"`
	WorkloadIdentity     *string                            `json:"workloadIdentity"`
	ScalingSpec          json.RawMessage                    `json:"scalingSpec"`
	// HYBRID only.
	Scheduler         json.RawMessage `json:"scheduler"`
	TaskPodNodePoolID *string         `json:"taskPodNodePoolId"`
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

func required(fe *[]astro.FieldError, field string) {
	*fe = append(*fe, astro.FieldError{Code: CodeRequired, Field: field, Message: "is required"})
}

func invalid(fe *[]astro.FieldError, field, msg string) {
	*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: field, Message: msg})
}

// enum checks a required enumerated field.
func enum(fe *[]astro.FieldError, field, v string, allowed []string) {
	switch {
	case v == "":
		required(fe, field)
	case !slices.Contains(allowed, v):
		invalid(fe, field, "must be "+orList(allowed))
	}
}

// validateDeployment checks a create body against the catalog. It reads
// only what is fixed after New, so it needs no lock.
func (e *Emulator) validateDeployment(b *createDeploymentBody) []astro.FieldError {
	var fe []astro.FieldError
	checkName(b.Name, &fe)
	if b.Description != nil {
		checkDescription(*b.Description, &fe)
	}
	switch {
	case b.WorkspaceID == "":
		required(&fe, "workspaceId")
	default:
		if _, ok := e.workspace(b.WorkspaceID); !ok {
			fe = append(fe, astro.FieldError{Code: CodeNotFound, Field: "workspaceId", Message: "no such Workspace"})
		}
	}
	enum(&fe, "type", b.Type, deploymentTypes)
	switch b.Type {
	case astro.DeploymentTypeHybrid:
		invalid(&fe, "type", "HYBRID Deployments need a Hybrid organization; this one is HOSTED")
	case astro.DeploymentTypeStandard:
		e.checkStandardPlacement(b, &fe)
	case astro.DeploymentTypeDedicated:
		e.checkDedicatedPlacement(b, &fe)
	}
	if b.Type != astro.DeploymentTypeHybrid {
		if present(b.Scheduler) {
			invalid(&fe, "scheduler", "is only for HYBRID Deployments")
		}
		if b.TaskPodNodePoolID != nil {
			invalid(&fe, "taskPodNodePoolId", "is only for HYBRID Deployments")
		}
	}
	switch {
	case b.AstroRuntimeVersion == "":
		required(&fe, "astroRuntimeVersion")
	case !slices.ContainsFunc(runtimeReleases, func(r astro.RuntimeRelease) bool { return r.Version == b.AstroRuntimeVersion }):
		invalid(&fe, "astroRuntimeVersion", "is not an available Astro Runtime version (see GET /deployment-options)")
	}
	enum(&fe, "executor", b.Executor, executors)
	enum(&fe, "schedulerSize", b.SchedulerSize, schedulerSizes)
	for _, f := range []struct {
		name string
		v    *bool
	}{{"isCicdEnforced", b.IsCicdEnforced}, {"isDagDeployEnabled", b.IsDagDeployEnabled}, {"isHighAvailability", b.IsHighAvailability}} {
		if f.v == nil {
			required(&fe, f.name)
		}
	}
	checkResources(b, &fe)
	checkQueues(b, &fe)
	checkEnvVars(b.EnvironmentVariables, &fe)
	if len(b.ContactEmails) > maxEmails {
		invalid(&fe, "contactEmails", fmt.Sprintf("at most %d addresses", maxEmails))
	}
	for i, addr := range b.ContactEmails {
		if a, err := mail.ParseAddress(addr); err != nil || a.Address != addr {
			invalid(&fe, fmt.Sprintf("contactEmails[%d]", i), "is not an email address")
		}
	}
	if b.WorkloadIdentity != nil && utf8.RuneCountInString(*b.WorkloadIdentity) > maxShortString {
		fe = append(fe, astro.FieldError{Code: CodeTooLong, Field: "workloadIdentity", Message: fmt.Sprintf("must be at most %d characters", maxShortString)})
	}
	if present(b.ScalingSpec) {
		invalid(&fe, "scalingSpec", "hibernation is not emulated: omit scalingSpec")
	}
	slices.SortStableFunc(fe, func(a, b astro.FieldError) int { return strings.Compare(a.Field, b.Field) })
	return fe
}

// checkStandardPlacement: a Standard Deployment names a cloud provider and
// one of its regions. The emulator has no shared clusters to name by id.
func (e *Emulator) checkStandardPlacement(b *createDeploymentBody, fe *[]astro.FieldError) {
	if b.ClusterID != nil && *b.ClusterID != "" {
		invalid(fe, "clusterId", "the emulator places Standard Deployments by cloudProvider and region; omit clusterId")
	}
	provider := ""
	if b.CloudProvider != nil {
		provider = *b.CloudProvider
	}
	enum(fe, "cloudProvider", provider, cloudProviders)
	region := ""
	if b.Region != nil {
		region = *b.Region
	}
	switch {
	case region == "":
		required(fe, "region")
	case slices.Contains(cloudProviders, provider) && !slices.Contains(standardRegions[provider], region):
		invalid(fe, "region", fmt.Sprintf("%s offers %s", provider, orList(standardRegions[provider])))
	}
}

// checkDedicatedPlacement: a Dedicated Deployment names its cluster, and
// the cluster decides the provider and region.
func (e *Emulator) checkDedicatedPlacement(b *createDeploymentBody, fe *[]astro.FieldError) {
	switch {
	case b.ClusterID == nil || *b.ClusterID == "":
		required(fe, "clusterId")
	case *b.ClusterID != e.cluster.ID:
		*fe = append(*fe, astro.FieldError{Code: CodeNotFound, Field: "clusterId", Message: "no such cluster"})
	}
	if b.CloudProvider != nil && *b.CloudProvider != "" {
		invalid(fe, "cloudProvider", "is only for STANDARD Deployments: the cluster decides")
	}
	if b.Region != nil && *b.Region != "" {
		invalid(fe, "region", "is only for STANDARD Deployments: the cluster decides")
	}
}

// quantity parses a CPU ("0.25") or memory ("0.5Gi") quantity.
func quantity(v string, memory bool) (float64, bool) {
	re := cpuQuantity
	if memory {
		re = memoryQuantity
	}
	if !re.MatchString(v) {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "Gi"), 64)
	return f, err == nil
}

// checkResources: the four quantities are required, within the catalog's
// ranges, and memory is twice the CPU, as Astro's API documents.
func checkResources(b *createDeploymentBody, fe *[]astro.FieldError) {
	pairs := []struct {
		cpuField, memField string
		cpu, mem           string
		opt                astro.ResourceOption
	}{
		{"defaultTaskPodCpu", "defaultTaskPodMemory", b.DefaultTaskPodCPU, b.DefaultTaskPodMemory, resourceQuotas.DefaultPodSize},
		{"resourceQuotaCpu", "resourceQuotaMemory", b.ResourceQuotaCPU, b.ResourceQuotaMemory, resourceQuotas.ResourceQuota},
	}
	for _, pr := range pairs {
		cpu, cpuOK := checkQuantity(fe, pr.cpuField, pr.cpu, false, pr.opt.CPU)
		mem, memOK := checkQuantity(fe, pr.memField, pr.mem, true, pr.opt.Memory)
		if cpuOK && memOK && math.Abs(mem-2*cpu) > 1e-9 {
			invalid(fe, pr.memField, fmt.Sprintf("must be twice %s (%sGi)", pr.cpuField, strconv.FormatFloat(2*cpu, 'f', -1, 64)))
		}
	}
}

func checkQuantity(fe *[]astro.FieldError, field, v string, memory bool, rng astro.ResourceRange) (float64, bool) {
	if v == "" {
		required(fe, field)
		return 0, false
	}
	q, ok := quantity(v, memory)
	if !ok {
		unit := "a number of CPU cores such as 0.25"
		if memory {
			unit = "a quantity in Gi such as 0.5Gi"
		}
		invalid(fe, field, "must be "+unit)
		return 0, false
	}
	lo, _ := quantity(rng.Floor, memory)
	hi, _ := quantity(rng.Ceiling, memory)
	if q < lo || q > hi {
		*fe = append(*fe, astro.FieldError{Code: CodeOutOfRange, Field: field, Message: fmt.Sprintf("must be from %s to %s", rng.Floor, rng.Ceiling)})
		return 0, false
	}
	return q, true
}

func inRange(v int, r astro.Range) bool { return float64(v) >= r.Floor && float64(v) <= r.Ceiling }

// checkQueues: Celery and Astro executors need worker queues, one of them
// the default queue named "default"; the Kubernetes executor takes none.
// Each queue's machine, counts and concurrency must be within the catalog.
// An id in a create request is ignored (every queue is new).
func checkQueues(b *createDeploymentBody, fe *[]astro.FieldError) {
	if b.Executor == astro.ExecutorKubernetes {
		if len(b.WorkerQueues) > 0 {
			invalid(fe, "workerQueues", "apply only to the CELERY and ASTRO executors")
		}
		return
	}
	if !slices.Contains(executors, b.Executor) {
		return // reported as an executor problem
	}
	switch {
	case len(b.WorkerQueues) == 0:
		invalid(fe, "workerQueues", `need at least the default queue, named "default"`)
		return
	case len(b.WorkerQueues) > maxWorkerQueues:
		invalid(fe, "workerQueues", fmt.Sprintf("at most %d queues", maxWorkerQueues))
		return
	}
	seen := map[string]bool{}
	for i, q := range b.WorkerQueues {
		f := fmt.Sprintf("workerQueues[%d]", i)
		switch {
		case q.Name == "":
			required(fe, f+".name")
		case len(q.Name) > 63 || !queueName.MatchString(q.Name):
			invalid(fe, f+".name", "must be 1 to 63 lowercase letters, digits and '-'")
		case seen[q.Name]:
			*fe = append(*fe, astro.FieldError{Code: CodeDuplicate, Field: f + ".name", Message: "names a queue twice"})
		}
		seen[q.Name] = true
		if q.IsDefault != (q.Name == "default") {
			invalid(fe, f+".isDefault", `must be true for the queue named "default" and only for it`)
		}
		i := slices.IndexFunc(workerMachines, func(m astro.WorkerMachine) bool { return m.Name == q.AstroMachine })
		if i < 0 {
			invalid(fe, f+".astroMachine", "must be "+orList(machineNames()))
		} else if !inRange(q.WorkerConcurrency, workerMachines[i].Concurrency) {
			c := workerMachines[i].Concurrency
			*fe = append(*fe, astro.FieldError{Code: CodeOutOfRange, Field: f + ".workerConcurrency",
				Message: fmt.Sprintf("must be from %g to %g on %s", c.Floor, c.Ceiling, q.AstroMachine)})
		}
		if !inRange(q.MinWorkerCount, workerQueueOptions.MinWorkers) {
			*fe = append(*fe, astro.FieldError{Code: CodeOutOfRange, Field: f + ".minWorkerCount",
				Message: fmt.Sprintf("must be from %g to %g", workerQueueOptions.MinWorkers.Floor, workerQueueOptions.MinWorkers.Ceiling)})
		}
		if !inRange(q.MaxWorkerCount, workerQueueOptions.MaxWorkers) || q.MaxWorkerCount < q.MinWorkerCount {
			*fe = append(*fe, astro.FieldError{Code: CodeOutOfRange, Field: f + ".maxWorkerCount",
				Message: fmt.Sprintf("must be from %g to %g and at least minWorkerCount", workerQueueOptions.MaxWorkers.Floor, workerQueueOptions.MaxWorkers.Ceiling)})
		}
	}
	if !seen["default"] {
		invalid(fe, "workerQueues", `need the default queue, named "default"`)
	}
}

func machineNames() []string {
	out := make([]string, len(workerMachines))
	for i, m := range workerMachines {
		out[i] = m.Name
	}
	return out
}

func checkEnvVars(vars []astro.EnvironmentVariableRequest, fe *[]astro.FieldError) {
	if len(vars) > maxEnvVars {
		invalid(fe, "environmentVariables", fmt.Sprintf("at most %d variables", maxEnvVars))
		return
	}
	seen := map[string]bool{}
	for i, v := range vars {
		f := fmt.Sprintf("environmentVariables[%d].key", i)
		switch {
		case v.Key == "":
			required(fe, f)
		case len(v.Key) > maxShortString || !envKey.MatchString(v.Key):
			invalid(fe, f, "must be letters, digits and '_', not starting with a digit")
		case seen[v.Key]:
			*fe = append(*fe, astro.FieldError{Code: CodeDuplicate, Field: f, Message: "names a variable twice"})
		}
		seen[v.Key] = true
		if v.Value != nil && len(*v.Value) > maxEnvValue {
			*fe = append(*fe, astro.FieldError{Code: CodeTooLong, Field: fmt.Sprintf("environmentVariables[%d].value", i),
				Message: fmt.Sprintf("must be at most %d bytes", maxEnvValue)})
		}
	}
}

// buildDeployment makes the record of a validated body. The caller holds
// mu (newID), or is New.
func (e *Emulator) buildDeployment(id string, b *createDeploymentBody, by astro.Subject, now time.Time) *astro.Deployment {
	ws, _ := e.workspace(b.WorkspaceID)
	rel := runtimeReleases[slices.IndexFunc(runtimeReleases, func(r astro.RuntimeRelease) bool { return r.Version == b.AstroRuntimeVersion })]
	sched := schedulerMachines[slices.IndexFunc(schedulerMachines, func(m astro.SchedulerMachine) bool { return m.Name == b.SchedulerSize })]
	replicas := 1
	if *b.IsHighAvailability {
		replicas = 2
	}
	namespace := "emulated-" + id[len(id)-8:]
	d := &astro.Deployment{
		ID: id, Name: b.Name, OrganizationID: e.org.ID, WorkspaceID: ws.ID, WorkspaceName: ptr(ws.Name),
		Type: ptr(b.Type), Executor: ptr(b.Executor), SchedulerSize: ptr(b.SchedulerSize),
		SchedulerCPU: sched.Spec.CPU, SchedulerMemory: sched.Spec.Memory, SchedulerReplicas: replicas,
		IsHighAvailability: ptr(*b.IsHighAvailability), IsDevelopmentMode: ptr(b.IsDevelopmentMode != nil && *b.IsDevelopmentMode),
		IsCicdEnforced: *b.IsCicdEnforced, IsDagDeployEnabled: *b.IsDagDeployEnabled,
		AstroRuntimeVersion: rel.Version, RuntimeVersion: rel.Version, AirflowVersion: rel.AirflowVersion,
		ImageRepository: "images.emulator.invalid/" + namespace + "/airflow", Namespace: namespace,
		Status:       astro.DeploymentHealthy,
		WebServerURL: "https://emulator.invalid/" + namespace, WebServerAirflowAPIURL: "https://emulator.invalid/" + namespace + "/api/v1",
		WebServerIngressHostname: "emulator.invalid", WebServerCPU: "0.5", WebServerMemory: "1Gi", WebServerReplicas: ptr(replicas),
		DefaultTaskPodCPU: ptr(b.DefaultTaskPodCPU), DefaultTaskPodMemory: ptr(b.DefaultTaskPodMemory),
		ResourceQuotaCPU: ptr(b.ResourceQuotaCPU), ResourceQuotaMemory: ptr(b.ResourceQuotaMemory),
		ContactEmails: ptr(slices.Clone(b.ContactEmails)), WorkloadIdentity: b.WorkloadIdentity,
		Stamps: astro.Stamps{CreatedAt: now, UpdatedAt: now}, CreatedBy: by, UpdatedBy: by,
	}
	if b.Description != nil {
		d.Description = ptr(*b.Description)
	}
	if *d.ContactEmails == nil {
		d.ContactEmails = &[]string{}
	}
	switch b.Type {
	case astro.DeploymentTypeDedicated:
		d.ClusterID, d.ClusterName, d.Region = ptr(e.cluster.ID), ptr(e.cluster.Name), ptr(e.cluster.Region)
	case astro.DeploymentTypeStandard:
		d.CloudProvider, d.Region = ptr(*b.CloudProvider), ptr(*b.Region)
	}
	queues := make([]astro.WorkerQueue, 0, len(b.WorkerQueues))
	for _, q := range b.WorkerQueues {
		m := workerMachines[slices.IndexFunc(workerMachines, func(m astro.WorkerMachine) bool { return m.Name == q.AstroMachine })]
		queues = append(queues, astro.WorkerQueue{
			ID: e.newID(), Name: q.Name, IsDefault: q.IsDefault, AstroMachine: ptr(q.AstroMachine),
			MinWorkerCount: q.MinWorkerCount, MaxWorkerCount: q.MaxWorkerCount, WorkerConcurrency: q.WorkerConcurrency,
			PodCPU: m.Spec.CPU, PodMemory: m.Spec.Memory,
		})
	}
	d.WorkerQueues = &queues
	vars := make([]astro.EnvironmentVariable, 0, len(b.EnvironmentVariables))
	for _, v := range b.EnvironmentVariables {
		ev := astro.EnvironmentVariable{Key: v.Key, IsSecret: v.IsSecret, UpdatedAt: now.Format(time.RFC3339)}
		// A secret's value is never shown again, so the emulator does not
		// keep it.
		if !v.IsSecret && v.Value != nil {
			ev.Value = ptr(*v.Value)
		}
		vars = append(vars, ev)
	}
	d.EnvironmentVariables = &vars
	return d
}

// createDeployment serves POST /organizations/{org}/deployments: 200 (not
// 201) with the new Deployment, whose status is CREATING in this answer.
// The emulator provisions instantly: every later read says HEALTHY.
// Names are not unique (the CLI checks for an existing name itself before
// it creates from a file).
func (e *Emulator) createDeployment(w http.ResponseWriter, r *http.Request, p *principal) {
	var b createDeploymentBody
	if he := decodeBody(w, r, &b); he != nil {
		he.write(w)
		return
	}
	if fe := e.validateDeployment(&b); len(fe) > 0 {
		badRequest("invalid request body", fe...).write(w)
		return
	}
	if !p.canCreateDeployments(b.WorkspaceID) {
		errForbidden.write(w)
		return
	}
	now := e.clock()
	e.mu.Lock()
	d := e.buildDeployment(e.newID(), &b, *p.subject(), now)
	e.deployments[d.ID] = d
	out := cloneDeployment(d)
	e.mu.Unlock()
	out.Status = astro.DeploymentCreating
	writeJSON(w, http.StatusOK, out)
}

// listClusters serves GET /organizations/{org}/clusters: the one seeded
// cluster, filtered by names and provider.
func (e *Emulator) listClusters(w http.ResponseWriter, r *http.Request, _ *principal) {
	var (
		offset, limit int
		names         []string
		provider      string
	)
	if !readQuery(w, r, func(q url.Values, fe *[]astro.FieldError) {
		offset, limit = pageParams(q, fe)
		sortParams(q, clusterSorts, fe) // one cluster: any valid order is the same
		names = listParam(q, "names", false, fe)
		provider = oneOf(q, "provider", cloudProviders, fe)
	}) {
		return
	}
	clusters := []astro.Cluster{}
	if (len(names) == 0 || slices.Contains(names, e.cluster.Name)) && (provider == "" || provider == e.cluster.CloudProvider) {
		clusters = append(clusters, e.cluster)
	}
	items, info := page(clusters, offset, limit)
	writeJSON(w, http.StatusOK, astro.ClustersPage{Clusters: items, PageInfo: info})
}

// getCluster serves GET /organizations/{org}/clusters/{cluster}.
func (e *Emulator) getCluster(w http.ResponseWriter, r *http.Request, _ *principal) {
	if r.PathValue("cluster") != e.cluster.ID {
		errClusterNotFound.write(w)
		return
	}
	writeJSON(w, http.StatusOK, e.cluster)
}

// deploymentOptions serves GET /organizations/{org}/deployment-options. The
// catalog is the same whatever the filters; they are validated so that a
// misspelled value fails in tests.
func (e *Emulator) deploymentOptions(w http.ResponseWriter, r *http.Request, p *principal) {
	var depID string
	if !readQuery(w, r, func(q url.Values, fe *[]astro.FieldError) {
		oneOf(q, "deploymentType", deploymentTypes, fe)
		oneOf(q, "executor", executors, fe)
		oneOf(q, "cloudProvider", cloudProviders, fe)
		depID = single(q, "deploymentId", fe)
	}) {
		return
	}
	if depID != "" {
		e.mu.Lock()
		d, ok := e.deployment(depID)
		readable := ok && p.canReadDeployment(d)
		e.mu.Unlock()
		if !readable {
			errDeploymentNotFound.write(w)
			return
		}
	}
	writeJSON(w, http.StatusOK, catalog)
}
