package astro

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// The Deployment endpoints of the Astro API v1, as the astro CLI calls them
// for `astro deployment list|inspect|create --deployment-file|delete`
// (astronomer/astro-cli: cloud/deployment/deployment.go, its
// fromfile/fromfile.go and inspect/inspect.go; the request and response
// shapes are those of the CLI's generated client,
// astro-client-platform-core/api.gen.go, which v1 keeps). Only the fields
// that the CLI reads or sends are typed here; docs/emulator.md lists them.

// Route templates of the Deployment endpoints.
const (
	RouteDeployments       = "/organizations/{organizationId}/deployments"
	RouteDeployment        = "/organizations/{organizationId}/deployments/{deploymentId}"
	RouteClusters          = "/organizations/{organizationId}/clusters"
	RouteCluster           = "/organizations/{organizationId}/clusters/{clusterId}"
	RouteDeploymentOptions = "/organizations/{organizationId}/deployment-options"
)

// Deployment types, executors, scheduler sizes and statuses as Astro spells
// them.
const (
	DeploymentTypeStandard  = "STANDARD"
	DeploymentTypeDedicated = "DEDICATED"
	DeploymentTypeHybrid    = "HYBRID"

	ExecutorCelery     = "CELERY"
	ExecutorKubernetes = "KUBERNETES"
	ExecutorAstro      = "ASTRO"

	SchedulerSmall      = "SMALL"
	SchedulerMedium     = "MEDIUM"
	SchedulerLarge      = "LARGE"
	SchedulerExtraLarge = "EXTRA_LARGE"

	DeploymentCreating = "CREATING"
	DeploymentHealthy  = "HEALTHY"
)

// Deployment is Astro's Deployment. Optional fields are pointers or
// omitempty exactly where the API marks them optional, because the CLI
// dereferences some of them (clusterName for a Dedicated Deployment,
// workerQueues, isHighAvailability) and treats absence differently from
// zero.
type Deployment struct {
	ID                       string                 `json:"id"`
	Name                     string                 `json:"name"`
	Description              *string                `json:"description,omitempty"`
	OrganizationID           string                 `json:"organizationId"`
	WorkspaceID              string                 `json:"workspaceId"`
	WorkspaceName            *string                `json:"workspaceName,omitempty"`
	Type                     *string                `json:"type,omitempty"`
	ClusterID                *string                `json:"clusterId,omitempty"`
	ClusterName              *string                `json:"clusterName,omitempty"`
	CloudProvider            *string                `json:"cloudProvider,omitempty"`
	Region                   *string                `json:"region,omitempty"`
	Executor                 *string                `json:"executor,omitempty"`
	SchedulerSize            *string                `json:"schedulerSize,omitempty"`
	SchedulerCPU             string                 `json:"schedulerCpu"`
	SchedulerMemory          string                 `json:"schedulerMemory"`
	SchedulerReplicas        int                    `json:"schedulerReplicas"`
	IsHighAvailability       *bool                  `json:"isHighAvailability,omitempty"`
	IsDevelopmentMode        *bool                  `json:"isDevelopmentMode,omitempty"`
	IsCicdEnforced           bool                   `json:"isCicdEnforced"`
	IsDagDeployEnabled       bool                   `json:"isDagDeployEnabled"`
	AstroRuntimeVersion      string                 `json:"astroRuntimeVersion"`
	RuntimeVersion           string                 `json:"runtimeVersion"` // deprecated twin of astroRuntimeVersion
	AirflowVersion           string                 `json:"airflowVersion"`
	ImageRepository          string                 `json:"imageRepository"`
	ImageTag                 string                 `json:"imageTag"`
	Namespace                string                 `json:"namespace"`
	Status                   string                 `json:"status"`
	WebServerURL             string                 `json:"webServerUrl"`
	WebServerAirflowAPIURL   string                 `json:"webServerAirflowApiUrl"`
	WebServerIngressHostname string                 `json:"webServerIngressHostname"`
	WebServerCPU             string                 `json:"webServerCpu"`
	WebServerMemory          string                 `json:"webServerMemory"`
	WebServerReplicas        *int                   `json:"webServerReplicas,omitempty"`
	DefaultTaskPodCPU        *string                `json:"defaultTaskPodCpu,omitempty"`
	DefaultTaskPodMemory     *string                `json:"defaultTaskPodMemory,omitempty"`
	ResourceQuotaCPU         *string                `json:"resourceQuotaCpu,omitempty"`
	ResourceQuotaMemory      *string                `json:"resourceQuotaMemory,omitempty"`
	WorkerQueues             *[]WorkerQueue         `json:"workerQueues,omitempty"`
	EnvironmentVariables     *[]EnvironmentVariable `json:"environmentVariables,omitempty"`
	ContactEmails            *[]string              `json:"contactEmails,omitempty"`
	WorkloadIdentity         *string                `json:"workloadIdentity,omitempty"`
	Stamps
	CreatedBy Subject `json:"createdBy"`
	UpdatedBy Subject `json:"updatedBy"`
}

// WorkerQueue is Astro's WorkerQueue.
type WorkerQueue struct {
	ID                string  `json:"id"`
	Name              string  `json:"name"`
	IsDefault         bool    `json:"isDefault"`
	AstroMachine      *string `json:"astroMachine,omitempty"`
	NodePoolID        *string `json:"nodePoolId,omitempty"`
	MinWorkerCount    int     `json:"minWorkerCount"`
	MaxWorkerCount    int     `json:"maxWorkerCount"`
	WorkerConcurrency int     `json:"workerConcurrency"`
	PodCPU            string  `json:"podCpu"`
	PodMemory         string  `json:"podMemory"`
}

// EnvironmentVariable is Astro's DeploymentEnvironmentVariable; Value is
// absent for a secret.
type EnvironmentVariable struct {
	Key       string  `json:"key"`
	Value     *string `json:"value,omitempty"`
	IsSecret  bool    `json:"isSecret"`
	UpdatedAt string  `json:"updatedAt"`
}

// DeploymentsPage is one page of GET /organizations/{org}/deployments.
type DeploymentsPage struct {
	Deployments []Deployment `json:"deployments"`
	PageInfo
}

// CreateDeploymentRequest is the body of POST
// /organizations/{org}/deployments for a STANDARD or DEDICATED Deployment
// (Astro's CreateStandardDeploymentRequest and
// CreateDedicatedDeploymentRequest, told apart by Type): STANDARD names a
// cloud provider and region, DEDICATED a cluster.
type CreateDeploymentRequest struct {
	Type                 string                        `json:"type"`
	Name                 string                        `json:"name"`
	Description          *string                       `json:"description,omitempty"`
	WorkspaceID          string                        `json:"workspaceId"`
	ClusterID            *string                       `json:"clusterId,omitempty"`
	CloudProvider        *string                       `json:"cloudProvider,omitempty"`
	Region               *string                       `json:"region,omitempty"`
	AstroRuntimeVersion  string                        `json:"astroRuntimeVersion"`
	Executor             string                        `json:"executor"`
	SchedulerSize        string                        `json:"schedulerSize"`
	IsCicdEnforced       bool                          `json:"isCicdEnforced"`
	IsDagDeployEnabled   bool                          `json:"isDagDeployEnabled"`
	IsHighAvailability   bool                          `json:"isHighAvailability"`
	IsDevelopmentMode    *bool                         `json:"isDevelopmentMode,omitempty"`
	DefaultTaskPodCPU    string                        `json:"defaultTaskPodCpu"`
	DefaultTaskPodMemory string                        `json:"defaultTaskPodMemory"`
	ResourceQuotaCPU     string                        `json:"resourceQuotaCpu"`
	ResourceQuotaMemory  string                        `json:"resourceQuotaMemory"`
	WorkerQueues         *[]WorkerQueueRequest         `json:"workerQueues,omitempty"`
	EnvironmentVariables *[]EnvironmentVariableRequest `json:"environmentVariables,omitempty"`
	ContactEmails        *[]string                     `json:"contactEmails,omitempty"`
	WorkloadIdentity     *string                       `json:"workloadIdentity,omitempty"`
}

// WorkerQueueRequest is Astro's WorkerQueueRequest (Hosted Deployments).
type WorkerQueueRequest struct {
	ID                *string `json:"id,omitempty"`
	Name              string  `json:"name"`
	IsDefault         bool    `json:"isDefault"`
	AstroMachine      string  `json:"astroMachine"`
	MinWorkerCount    int     `json:"minWorkerCount"`
	MaxWorkerCount    int     `json:"maxWorkerCount"`
	WorkerConcurrency int     `json:"workerConcurrency"`
}

// EnvironmentVariableRequest is Astro's DeploymentEnvironmentVariableRequest.
type EnvironmentVariableRequest struct {
	Key      string  `json:"key"`
	Value    *string `json:"value,omitempty"`
	IsSecret bool    `json:"isSecret"`
}

// Cluster is Astro's Cluster.
type Cluster struct {
	ID             string      `json:"id"`
	Name           string      `json:"name"`
	OrganizationID string      `json:"organizationId"`
	CloudProvider  string      `json:"cloudProvider"`
	Region         string      `json:"region"`
	Type           string      `json:"type"`
	Status         string      `json:"status"`
	DBInstanceType string      `json:"dbInstanceType"`
	VpcSubnetRange string      `json:"vpcSubnetRange"`
	NodePools      *[]NodePool `json:"nodePools,omitempty"`
	Workspaces     *[]string   `json:"workspaces,omitempty"`
	Stamps
}

// NodePool is Astro's NodePool.
type NodePool struct {
	ID                     string    `json:"id"`
	Name                   string    `json:"name"`
	ClusterID              string    `json:"clusterId"`
	CloudProvider          string    `json:"cloudProvider"`
	IsDefault              bool      `json:"isDefault"`
	MaxNodeCount           int       `json:"maxNodeCount"`
	NodeInstanceType       string    `json:"nodeInstanceType"`
	SupportedAstroMachines *[]string `json:"supportedAstroMachines,omitempty"`
	Stamps
}

// ClustersPage is one page of GET /organizations/{org}/clusters.
type ClustersPage struct {
	Clusters []Cluster `json:"clusters"`
	PageInfo
}

// DeploymentOptions is Astro's DeploymentOptions: what a new Deployment may
// be configured with. The CLI validates worker queues against it before it
// creates a Deployment from a file.
type DeploymentOptions struct {
	Executors         []string             `json:"executors"`
	RuntimeReleases   []RuntimeRelease     `json:"runtimeReleases"`
	SchedulerMachines []SchedulerMachine   `json:"schedulerMachines"`
	WorkerMachines    []WorkerMachine      `json:"workerMachines"`
	WorkerQueues      WorkerQueueOptions   `json:"workerQueues"`
	ResourceQuotas    ResourceQuotaOptions `json:"resourceQuotas"`
}

// RuntimeRelease is one Astro Runtime version a Deployment may run.
type RuntimeRelease struct {
	Version                  string    `json:"version"`
	AirflowVersion           string    `json:"airflowVersion"`
	Channel                  string    `json:"channel"`
	ReleaseDate              time.Time `json:"releaseDate"`
	AirflowDatabaseMigration bool      `json:"airflowDatabaseMigration"`
	StellarDatabaseMigration bool      `json:"stellarDatabaseMigration"`
}

// SchedulerMachine is one scheduler size.
type SchedulerMachine struct {
	Name string      `json:"name"`
	Spec MachineSpec `json:"spec"`
}

// WorkerMachine is one worker machine type (A5, A10, ...), with the range of
// worker concurrency it supports.
type WorkerMachine struct {
	Name        string      `json:"name"`
	Spec        MachineSpec `json:"spec"`
	Concurrency Range       `json:"concurrency"`
}

// MachineSpec is a machine's size.
type MachineSpec struct {
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
}

// Range is a numeric range with a default. Astro sends these as JSON
// numbers (float32 in the CLI's client).
type Range struct {
	Floor   float64 `json:"floor"`
	Ceiling float64 `json:"ceiling"`
	Default float64 `json:"default"`
}

// WorkerQueueOptions bound a worker queue's counts and concurrency.
type WorkerQueueOptions struct {
	MinWorkers        Range `json:"minWorkers"`
	MaxWorkers        Range `json:"maxWorkers"`
	WorkerConcurrency Range `json:"workerConcurrency"`
}

// ResourceQuotaOptions bound the task pod size and the resource quota.
type ResourceQuotaOptions struct {
	DefaultPodSize ResourceOption `json:"defaultPodSize"`
	ResourceQuota  ResourceOption `json:"resourceQuota"`
}

// ResourceOption is a CPU and a memory range.
type ResourceOption struct {
	CPU    ResourceRange `json:"cpu"`
	Memory ResourceRange `json:"memory"`
}

// ResourceRange is a range of quantities written as strings ("0.25",
// "0.5Gi").
type ResourceRange struct {
	Floor   string `json:"floor"`
	Ceiling string `json:"ceiling"`
	Default string `json:"default"`
}

// ListDeploymentsOptions filters a Deployment listing. The filters are
// lists, sent as repeated query parameters (workspaceIds=a&workspaceIds=b),
// and combine with AND across kinds.
type ListDeploymentsOptions struct {
	WorkspaceIDs  []string
	DeploymentIDs []string
	Names         []string
	// PageSize is the limit of each page: 0 means [DefaultPageSize]; more
	// than [MaxPageSize] is capped.
	PageSize int
}

func (o ListDeploymentsOptions) query() url.Values {
	q := url.Values{}
	for _, v := range o.WorkspaceIDs {
		q.Add("workspaceIds", v)
	}
	for _, v := range o.DeploymentIDs {
		q.Add("deploymentIds", v)
	}
	for _, v := range o.Names {
		q.Add("names", v)
	}
	return q
}

func deploymentsPath(orgID string) (string, error) { return collectionPath(orgID, "deployments") }

func deploymentPath(orgID, deploymentID string) (string, error) {
	return itemPath(orgID, "deployments", "deployment id", deploymentID)
}

// ListDeployments returns every Deployment matching opts that the token can
// see, all pages (de-duplicated by id, like [Client.ListTokens]).
func (c *Client) ListDeployments(ctx context.Context, orgID string, opts ListDeploymentsOptions) ([]Deployment, error) {
	size, err := pageSize(opts.PageSize)
	if err != nil {
		return nil, err
	}
	path, err := deploymentsPath(orgID)
	if err != nil {
		return nil, err
	}
	return allPages(func(d Deployment) string { return d.ID }, func(offset int) ([]Deployment, int, error) {
		var page DeploymentsPage
		err := c.do(ctx, call{method: http.MethodGet, route: RouteDeployments, path: path, query: withPage(opts.query(), offset, size), class: idempotent, out: &page})
		return page.Deployments, page.TotalCount, err
	})
}

// GetDeployment returns one Deployment.
func (c *Client) GetDeployment(ctx context.Context, orgID, deploymentID string) (*Deployment, error) {
	path, err := deploymentPath(orgID, deploymentID)
	return fetch[Deployment](ctx, c, err, call{method: http.MethodGet, route: RouteDeployment, path: path, class: idempotent})
}

// CreateDeployment creates a Deployment. Like [Client.CreateToken] it is
// retried only when Astro provably did not process it: a retry after a
// lost answer could create a second Deployment (names are not unique).
func (c *Client) CreateDeployment(ctx context.Context, orgID string, req CreateDeploymentRequest) (*Deployment, error) {
	path, err := deploymentsPath(orgID)
	return fetch[Deployment](ctx, c, err, call{method: http.MethodPost, route: RouteDeployments, path: path, body: req, class: unsafe})
}

// DeleteDeployment deletes a Deployment. Unlike [Client.DeleteToken], a 404
// is returned as an error: the astro CLI reports a Deployment it cannot
// find, and a caller deleting a preview by id wants to know that the id
// was wrong.
func (c *Client) DeleteDeployment(ctx context.Context, orgID, deploymentID string) error {
	path, err := deploymentPath(orgID, deploymentID)
	if err != nil {
		return err
	}
	return c.do(ctx, call{method: http.MethodDelete, route: RouteDeployment, path: path, class: idempotent})
}

// ListClusters returns the organization's clusters, all pages.
func (c *Client) ListClusters(ctx context.Context, orgID string) ([]Cluster, error) {
	path, err := collectionPath(orgID, "clusters")
	if err != nil {
		return nil, err
	}
	return allPages(func(cl Cluster) string { return cl.ID }, func(offset int) ([]Cluster, int, error) {
		var page ClustersPage
		err := c.do(ctx, call{method: http.MethodGet, route: RouteClusters, path: path, query: withPage(nil, offset, DefaultPageSize), class: idempotent, out: &page})
		return page.Clusters, page.TotalCount, err
	})
}

// GetCluster returns one cluster.
func (c *Client) GetCluster(ctx context.Context, orgID, clusterID string) (*Cluster, error) {
	path, err := itemPath(orgID, "clusters", "cluster id", clusterID)
	return fetch[Cluster](ctx, c, err, call{method: http.MethodGet, route: RouteCluster, path: path, class: idempotent})
}

// GetDeploymentOptions returns what a new Deployment may be configured
// with. deploymentType may be empty (all types).
func (c *Client) GetDeploymentOptions(ctx context.Context, orgID, deploymentType string) (*DeploymentOptions, error) {
	path, err := collectionPath(orgID, "deployment-options")
	q := url.Values{}
	if deploymentType != "" {
		q.Set("deploymentType", deploymentType)
	}
	return fetch[DeploymentOptions](ctx, c, err, call{method: http.MethodGet, route: RouteDeploymentOptions, path: path, query: q, class: idempotent})
}
