package emulator_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

func (e *env) deploymentsPath() string { return "/organizations/" + e.org + "/deployments" }

// standardBody is a valid create body for a Standard Deployment in ws, with
// the shape the astro CLI sends from a deployment file (fromfile.go).
func standardBody(ws, name string) map[string]any {
	return map[string]any{
		"type": "STANDARD", "name": name, "description": "", "workspaceId": ws,
		"cloudProvider": "AWS", "region": "us-east-1", "astroRuntimeVersion": "12.4.0",
		"executor": "CELERY", "schedulerSize": "SMALL",
		"isCicdEnforced": false, "isDagDeployEnabled": true, "isHighAvailability": false,
		"defaultTaskPodCpu": "0.25", "defaultTaskPodMemory": "0.5Gi", "resourceQuotaCpu": "10", "resourceQuotaMemory": "20Gi",
		"workerQueues": []any{map[string]any{"id": "", "name": "default", "isDefault": true, "astroMachine": "A5",
			"minWorkerCount": 0, "maxWorkerCount": 10, "workerConcurrency": 1}},
	}
}

// dedicatedBody is a valid create body for a Dedicated Deployment on the
// seeded cluster.
func (e *env) dedicatedBody(ws, name string) map[string]any {
	b := standardBody(ws, name)
	delete(b, "cloudProvider")
	delete(b, "region")
	b["type"], b["clusterId"] = "DEDICATED", e.emu.ClusterID()
	return b
}

func (e *env) createDeployment(token string, body map[string]any) (response, astro.Deployment) {
	e.t.Helper()
	r := e.doJSON("POST", e.deploymentsPath(), token, body)
	var d astro.Deployment
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &d); err != nil {
			e.t.Fatal(err)
		}
	}
	return r, d
}

// orgTokenWithRoles creates an ORGANIZATION_MEMBER token holding the given
// Workspace roles and returns its value.
func (e *env) orgTokenWithRoles(wsRoles map[string]string) string {
	e.t.Helper()
	tok := e.create(astro.CreateTokenRequest{Name: "org", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
	roles := []astro.TokenRole{{EntityID: e.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember}}
	for ws, role := range wsRoles {
		roles = append(roles, astro.TokenRole{EntityID: ws, EntityType: astro.EntityWorkspace, Role: role})
	}
	if r := e.doJSON("POST", e.tokensPath()+"/"+tok.ID+"/roles", e.owner, astro.SetRolesRequest{Roles: roles}); r.status != 200 {
		e.t.Fatalf("set roles: %d %s", r.status, r.body)
	}
	return tok.Token
}

func (e *env) listDeploymentIDs(token, query string) []string {
	e.t.Helper()
	r := e.do("GET", e.deploymentsPath()+"?"+query, token, nil)
	if r.status != 200 {
		e.t.Fatalf("list %q: %d %s", query, r.status, r.body)
	}
	var page astro.DeploymentsPage
	if err := json.Unmarshal(r.body, &page); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, d := range page.Deployments {
		out = append(out, d.ID)
	}
	slices.Sort(out)
	return out
}

// TestContractDeploymentStatusCodes pins the success and error codes of
// every Deployment endpoint the CLI calls: 200 (create included), 204 with
// an empty body for delete, 404 for what does not exist, 405 with the
// error body for a method the path does not serve.
func TestContractDeploymentStatusCodes(t *testing.T) {
	e := start(t, emulator.Config{})
	ws := e.emu.WorkspaceIDs()[0]
	r, d := e.createDeployment(e.owner, standardBody(ws, "status"))
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	dp := e.deploymentsPath() + "/" + d.ID
	clusters := "/organizations/" + e.org + "/clusters"
	tests := []struct {
		name, method, path string
		want               int
	}{
		{"list", "GET", e.deploymentsPath() + "?limit=1000", 200},
		{"get", "GET", dp, 200},
		{"get seeded", "GET", e.deploymentsPath() + "/" + e.emu.DeploymentIDs()[0], 200},
		{"list clusters", "GET", clusters, 200},
		{"get cluster", "GET", clusters + "/" + e.emu.ClusterID(), 200},
		{"options", "GET", "/organizations/" + e.org + "/deployment-options?deploymentType=STANDARD&cloudProvider=AWS", 200},
		{"unknown cluster", "GET", clusters + "/clnotthereatallxxxxxxxxxx", 404},
		{"unknown deployment", "GET", e.deploymentsPath() + "/clnotthereatallxxxxxxxxxx", 404},
		{"update is not served", "POST", dp, 405},
		{"wrong method on clusters", "POST", clusters, 405},
		{"other organization", "GET", "/organizations/clxxxxxxxxxxxxxxxxxxxxxxx/deployments", 403},
		{"delete", "DELETE", dp, 204},
		{"get deleted", "GET", dp, 404},
		{"delete again", "DELETE", dp, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, e.owner, nil)
			if tt.method == "POST" {
				r = e.doJSON(tt.method, tt.path, e.owner, standardBody(ws, "x"))
			}
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.want, r.body)
			}
			switch {
			case r.status == 204 && len(r.body) != 0:
				t.Errorf("204 with a body: %q", r.body)
			case r.status >= 400:
				if eb := r.errorBody(t); eb.StatusCode != r.status || eb.Message == "" || eb.RequestID != r.header.Get(emulator.RequestIDHeader) {
					t.Errorf("error body %+v", eb)
				}
			}
			if r.status == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

// TestContractDeploymentShape pins the field names the astro CLI reads: a
// Dedicated Deployment (the seeded ones: clusterId and clusterName, which
// the CLI dereferences), a Standard one (cloudProvider and region, no
// cluster), the cluster with its node pools, the options the CLI
// validates worker queues against, and the list envelope.
func TestContractDeploymentShape(t *testing.T) {
	e := start(t, emulator.Config{})
	ws := e.emu.WorkspaceIDs()[0]
	common := []string{
		"airflowVersion", "astroRuntimeVersion", "contactEmails", "createdAt", "createdBy", "defaultTaskPodCpu", "defaultTaskPodMemory",
		"description", "environmentVariables", "executor", "id", "imageRepository", "imageTag", "isCicdEnforced", "isDagDeployEnabled",
		"isDevelopmentMode", "isHighAvailability", "name", "namespace", "organizationId", "region", "resourceQuotaCpu", "resourceQuotaMemory",
		"runtimeVersion", "schedulerCpu", "schedulerMemory", "schedulerReplicas", "schedulerSize", "status", "type", "updatedAt", "updatedBy",
		"webServerAirflowApiUrl", "webServerCpu", "webServerIngressHostname", "webServerMemory", "webServerReplicas", "webServerUrl",
		"workerQueues", "workspaceId", "workspaceName",
	}
	with := func(extra ...string) []string {
		return slices.Sorted(slices.Values(append(slices.Clone(common), extra...)))
	}

	seeded := e.do("GET", e.deploymentsPath()+"/"+e.emu.DeploymentIDs()[0], e.owner, nil).json(t)
	if diff := cmp.Diff(with("clusterId", "clusterName"), keys(seeded)); diff != "" {
		t.Errorf("Dedicated Deployment fields (-want +got):\n%s", diff)
	}
	if seeded["type"] != "DEDICATED" || seeded["clusterId"] != e.emu.ClusterID() || seeded["clusterName"] != "emulator-cluster" ||
		seeded["workspaceName"] != "workspace-1" || seeded["status"] != "HEALTHY" || seeded["name"] != "deployment-1" {
		t.Errorf("seeded Deployment = %v", seeded)
	}
	for _, k := range []string{"createdAt", "updatedAt"} {
		if s, _ := seeded[k].(string); !rfc3339Seconds.MatchString(s) {
			t.Errorf("%s = %q, want RFC 3339 UTC with whole seconds", k, s)
		}
	}
	q := seeded["workerQueues"].([]any)[0].(map[string]any)
	if diff := cmp.Diff([]string{"astroMachine", "id", "isDefault", "maxWorkerCount", "minWorkerCount", "name", "podCpu", "podMemory", "workerConcurrency"}, keys(q)); diff != "" {
		t.Errorf("worker queue fields (-want +got):\n%s", diff)
	}

	r := e.doJSON("POST", e.deploymentsPath(), e.owner, standardBody(ws, "standard"))
	created := r.json(t)
	if diff := cmp.Diff(with("cloudProvider"), keys(created)); diff != "" {
		t.Errorf("Standard Deployment fields (-want +got):\n%s", diff)
	}
	if id, _ := created["id"].(string); !cuid.MatchString(id) {
		t.Errorf("id %q is not cuid-like", id)
	}
	if created["status"] != "CREATING" {
		t.Errorf("create answered status %v, want CREATING", created["status"])
	}
	if got := e.do("GET", e.deploymentsPath()+"/"+created["id"].(string), e.owner, nil).json(t); got["status"] != "HEALTHY" {
		t.Errorf("a read after create says %v, want HEALTHY", got["status"])
	}
	if diff := cmp.Diff([]string{"apiTokenName", "id", "subjectType"}, keys(created["createdBy"].(map[string]any))); diff != "" {
		t.Errorf("createdBy fields (-want +got):\n%s", diff)
	}

	cluster := e.do("GET", "/organizations/"+e.org+"/clusters/"+e.emu.ClusterID(), e.owner, nil).json(t)
	if diff := cmp.Diff([]string{"cloudProvider", "createdAt", "dbInstanceType", "id", "name", "nodePools", "organizationId", "region",
		"status", "type", "updatedAt", "vpcSubnetRange", "workspaces"}, keys(cluster)); diff != "" {
		t.Errorf("cluster fields (-want +got):\n%s", diff)
	}
	pool := cluster["nodePools"].([]any)[0].(map[string]any)
	if diff := cmp.Diff([]string{"cloudProvider", "clusterId", "createdAt", "id", "isDefault", "maxNodeCount", "name", "nodeInstanceType",
		"supportedAstroMachines", "updatedAt"}, keys(pool)); diff != "" {
		t.Errorf("node pool fields (-want +got):\n%s", diff)
	}

	opts := e.do("GET", "/organizations/"+e.org+"/deployment-options", e.owner, nil).json(t)
	if diff := cmp.Diff([]string{"executors", "resourceQuotas", "runtimeReleases", "schedulerMachines", "workerMachines", "workerQueues"}, keys(opts)); diff != "" {
		t.Errorf("options fields (-want +got):\n%s", diff)
	}
	machine := opts["workerMachines"].([]any)[0].(map[string]any)
	if diff := cmp.Diff([]string{"concurrency", "name", "spec"}, keys(machine)); diff != "" {
		t.Errorf("worker machine fields (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ceiling", "default", "floor"}, keys(opts["workerQueues"].(map[string]any)["maxWorkers"].(map[string]any))); diff != "" {
		t.Errorf("range fields (-want +got):\n%s", diff)
	}

	list := e.do("GET", e.deploymentsPath(), e.owner, nil).json(t)
	if diff := cmp.Diff([]string{"deployments", "limit", "offset", "totalCount"}, keys(list)); diff != "" {
		t.Errorf("list fields (-want +got):\n%s", diff)
	}
	if list["limit"] != 20.0 || list["offset"] != 0.0 || list["totalCount"] != 3.0 {
		t.Errorf("limit/offset/totalCount = %v/%v/%v, want 20/0/3", list["limit"], list["offset"], list["totalCount"])
	}
	clusters := e.do("GET", "/organizations/"+e.org+"/clusters", e.owner, nil).json(t)
	if diff := cmp.Diff([]string{"clusters", "limit", "offset", "totalCount"}, keys(clusters)); diff != "" {
		t.Errorf("cluster list fields (-want +got):\n%s", diff)
	}
}

// TestContractDeploymentSecretsNotShown: a secret environment variable is
// stored without its value and never shown; a plain one is.
func TestContractDeploymentSecretsNotShown(t *testing.T) {
	e := start(t, emulator.Config{})
	b := standardBody(e.emu.WorkspaceIDs()[0], "vars")
	b["environmentVariables"] = []any{
		map[string]any{"key": "PLAIN", "value": "visible", "isSecret": false},
		map[string]any{"key": "SECRET", "value": "hidden-value", "isSecret": true},
	}
	r := e.doJSON("POST", e.deploymentsPath(), e.owner, b)
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var d astro.Deployment
	if err := json.Unmarshal(r.body, &d); err != nil {
		t.Fatal(err)
	}
	got := e.do("GET", e.deploymentsPath()+"/"+d.ID, e.owner, nil)
	for _, body := range [][]byte{r.body, got.body} {
		if strings.Contains(string(body), "hidden-value") {
			t.Errorf("a secret value is shown: %s", body)
		}
	}
	if !strings.Contains(string(got.body), `"value":"visible"`) {
		t.Errorf("the plain value is not shown: %s", got.body)
	}
}

// TestContractDeploymentPermissions pins who may create, read and delete
// Deployments: Workspace Operator or Owner in their Workspace, not Author;
// a Deployment token only on its Deployment; an Organization token with
// Workspace roles only in those Workspaces.
func TestContractDeploymentPermissions(t *testing.T) {
	e := start(t, emulator.Config{Workspaces: 2})
	ws0, ws1 := e.emu.WorkspaceIDs()[0], e.emu.WorkspaceIDs()[1]
	dep0, dep1 := e.emu.DeploymentIDs()[0], e.emu.DeploymentIDs()[1]
	wsToken := func(ws, role string) string {
		return e.create(astro.CreateTokenRequest{Name: role, Role: role, Scope: astro.ScopeWorkspace, EntityID: ws}).Token
	}
	depToken := e.create(astro.CreateTokenRequest{Name: "dep", Role: astro.RoleDeploymentAdmin, Scope: astro.ScopeDeployment, EntityID: dep0}).Token

	all := func(astro.Deployment) bool { return true }
	inWS := func(ws string) func(astro.Deployment) bool {
		return func(d astro.Deployment) bool { return d.WorkspaceID == ws }
	}
	tests := []struct {
		name  string
		token string
		// Answers to: create in ws0, create in ws1, get dep0, get dep1,
		// delete a Deployment in ws1.
		create0, create1, get0, get1, del1 int
		// sees says which Deployments the list shows.
		sees func(astro.Deployment) bool
	}{
		{"organization owner", e.owner, 200, 200, 200, 200, 204, all},
		{"workspace owner", wsToken(ws0, astro.RoleWorkspaceOwner), 200, 403, 200, 403, 403, inWS(ws0)},
		{"workspace operator", wsToken(ws0, astro.RoleWorkspaceOperator), 200, 403, 200, 403, 403, inWS(ws0)},
		{"workspace author", wsToken(ws0, astro.RoleWorkspaceAuthor), 403, 403, 200, 403, 403, inWS(ws0)},
		{"workspace accessor", wsToken(ws0, astro.RoleWorkspaceAccessor), 403, 403, 200, 403, 403, inWS(ws0)},
		{"deployment token", depToken, 403, 403, 200, 403, 403, func(d astro.Deployment) bool { return d.ID == dep0 }},
		{"organization member with operator on ws1", e.orgTokenWithRoles(map[string]string{ws1: astro.RoleWorkspaceOperator}), 403, 200, 403, 200, 204, inWS(ws1)},
		{"organization member with author on ws1", e.orgTokenWithRoles(map[string]string{ws1: astro.RoleWorkspaceAuthor}), 403, 403, 403, 200, 403, inWS(ws1)},
		{"organization member without Workspace roles", e.orgTokenWithRoles(nil), 403, 403, 403, 403, 403, func(astro.Deployment) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Give ws1 a fresh Deployment to delete, so that the cases stay
			// independent.
			_, victim := e.createDeployment(e.owner, e.dedicatedBody(ws1, "victim"))
			var want []string
			for _, d := range e.emu.Deployments() {
				if tt.sees(d) {
					want = append(want, d.ID)
				}
			}
			slices.Sort(want)
			if diff := cmp.Diff(want, e.listDeploymentIDs(tt.token, "limit=1000"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("list (-want +got):\n%s", diff)
			}
			check := func(what string, r response, want int) {
				t.Helper()
				if r.status != want {
					t.Errorf("%s: status %d, want %d: %s", what, r.status, want, r.body)
				}
				if r.status == 403 && r.errorBody(t).Message == "" {
					t.Errorf("%s: 403 without a message", what)
				}
			}
			r, created := e.createDeployment(tt.token, e.dedicatedBody(ws0, "in-ws0"))
			check("create in ws0", r, tt.create0)
			r, _ = e.createDeployment(tt.token, e.dedicatedBody(ws1, "in-ws1"))
			check("create in ws1", r, tt.create1)
			check("get dep0", e.do("GET", e.deploymentsPath()+"/"+dep0, tt.token, nil), tt.get0)
			check("get dep1", e.do("GET", e.deploymentsPath()+"/"+dep1, tt.token, nil), tt.get1)
			check("delete in ws1", e.do("DELETE", e.deploymentsPath()+"/"+victim.ID, tt.token, nil), tt.del1)
			if tt.create0 == 200 {
				// Whoever created a Deployment in ws0 may delete it again.
				check("delete what it created", e.do("DELETE", e.deploymentsPath()+"/"+created.ID, tt.token, nil), 204)
			}
		})
	}
}

// TestContractDeploymentTokenOwnDeployment: a Deployment token may delete
// its own Deployment (the emulator's reading of "the permissions of a
// Workspace Operator for Deployment-level operations"); its own value then
// stops working, because the Deployment's tokens go with it. An
// Organization token that held a role on it loses the role.
func TestContractDeploymentTokenOwnDeployment(t *testing.T) {
	e := start(t, emulator.Config{})
	ws := e.emu.WorkspaceIDs()[0]
	_, d := e.createDeployment(e.owner, e.dedicatedBody(ws, "doomed"))
	tok := e.create(astro.CreateTokenRequest{Name: "own", Role: astro.RoleDeploymentAdmin, Scope: astro.ScopeDeployment, EntityID: d.ID})
	org := e.create(astro.CreateTokenRequest{Name: "org", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
	roles := astro.SetRolesRequest{Roles: []astro.TokenRole{
		{EntityID: e.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember},
		{EntityID: d.ID, EntityType: astro.EntityDeployment, Role: astro.RoleDeploymentAdmin},
	}}
	if r := e.doJSON("POST", e.tokensPath()+"/"+org.ID+"/roles", e.owner, roles); r.status != 200 {
		t.Fatalf("set roles: %d %s", r.status, r.body)
	}
	if r := e.do("GET", e.deploymentsPath()+"/"+d.ID, org.Token, nil); r.status != 200 {
		t.Fatalf("an Organization token with a role on the Deployment cannot read it: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", e.deploymentsPath()+"/"+d.ID, tok.Token, nil); r.status != 204 {
		t.Fatalf("delete own Deployment: %d %s", r.status, r.body)
	}
	if r := e.do("GET", e.deploymentsPath(), tok.Token, nil); r.status != 401 {
		t.Errorf("the deleted Deployment's token still gets %d", r.status)
	}
	var got astro.Token
	if err := json.Unmarshal(e.do("GET", e.tokensPath()+"/"+org.ID, e.owner, nil).body, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(roles.Roles[:1], got.Roles); diff != "" {
		t.Errorf("the Organization token's roles after the delete (-want +got):\n%s", diff)
	}
}

// TestContractDeploymentList pins paging, the list filters (repeated and,
// for ids, comma-separated) and sorting.
func TestContractDeploymentList(t *testing.T) {
	e := start(t, emulator.Config{Workspaces: 3})
	ws := e.emu.WorkspaceIDs()
	deps := e.emu.DeploymentIDs()
	e.clock.Advance(1e9)
	_, extra := e.createDeployment(e.owner, standardBody(ws[0], "a-first-by-name"))
	all := append(slices.Clone(deps), extra.ID)
	slices.Sort(all)

	tests := []struct {
		query string
		want  []string
	}{
		{"workspaceIds=" + ws[0], []string{deps[0], extra.ID}},
		{"workspaceIds=" + ws[1] + "&workspaceIds=" + ws[2], []string{deps[1], deps[2]}},
		{"workspaceIds=" + ws[1] + "," + ws[2], []string{deps[1], deps[2]}},
		{"deploymentIds=" + deps[2], []string{deps[2]}},
		{"names=deployment-2", []string{deps[1]}},
		{"names=deployment-2&workspaceIds=" + ws[0], nil},
		{"names=" + url.QueryEscape("no such name"), nil},
		{"limit=1000", all},
	}
	for _, tt := range tests {
		slices.Sort(tt.want)
		if diff := cmp.Diff(tt.want, e.listDeploymentIDs(e.owner, tt.query), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.query, diff)
		}
	}

	var page astro.DeploymentsPage
	order := func(q string) []string {
		t.Helper()
		if err := json.Unmarshal(e.do("GET", e.deploymentsPath()+"?"+q, e.owner, nil).body, &page); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range page.Deployments {
			names = append(names, d.Name)
		}
		return names
	}
	// The seeded three share a createdAt, so the id decides among them.
	byID := slices.Clone(deps)
	slices.Sort(byID)
	var wantDefault []string
	for _, id := range byID {
		wantDefault = append(wantDefault, "deployment-"+strconv.Itoa(slices.Index(deps, id)+1))
	}
	wantDefault = append(wantDefault, "a-first-by-name")
	if diff := cmp.Diff(wantDefault, order("")); diff != "" {
		t.Errorf("default order, createdAt then id (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a-first-by-name", "deployment-1"}, order("sorts=name:asc&limit=2")); diff != "" {
		t.Errorf("sorted by name, first page (-want +got):\n%s", diff)
	}
	if page.TotalCount != 4 || page.Limit != 2 || page.Offset != 0 {
		t.Errorf("page = %d/%d/%d", page.TotalCount, page.Limit, page.Offset)
	}
	if diff := cmp.Diff([]string{"deployment-1", "a-first-by-name"}, order("sorts=name:desc&offset=2")); diff != "" {
		t.Errorf("sorted by name descending, from offset 2 (-want +got):\n%s", diff)
	}
	if r := e.do("GET", e.deploymentsPath()+"?offset=4", e.owner, nil); !strings.Contains(string(r.body), `"deployments":[]`) {
		t.Errorf("past the end: %s, want an empty list (not null)", r.body)
	}

	for _, q := range []string{"limit=0", "limit=1001", "offset=-1", "sorts=description:asc", "sorts=name", "workspaceIds=", "names=", "%zz", "limit=1&limit=2"} {
		r := e.do("GET", e.deploymentsPath()+"?"+q, e.owner, nil)
		if r.status != 400 {
			t.Errorf("%s: status %d, want 400", q, r.status)
			continue
		}
		r.errorBody(t)
	}
}

// TestContractDeploymentValidation pins the 400 answers of create: each
// case breaks one rule and names the fields Astro's fieldErrors would.
func TestContractDeploymentValidation(t *testing.T) {
	e := start(t, emulator.Config{})
	ws := e.emu.WorkspaceIDs()[0]
	queue := func(kv ...any) []any {
		q := map[string]any{"name": "default", "isDefault": true, "astroMachine": "A5", "minWorkerCount": 0, "maxWorkerCount": 10, "workerConcurrency": 1}
		for i := 0; i < len(kv); i += 2 {
			q[kv[i].(string)] = kv[i+1]
		}
		return []any{q}
	}
	tests := []struct {
		name   string
		change func(b map[string]any)
		fields []string
	}{
		{"no name", func(b map[string]any) { b["name"] = "" }, []string{"name"}},
		{"no type", func(b map[string]any) { delete(b, "type") }, []string{"type"}},
		{"hybrid", func(b map[string]any) { b["type"] = "HYBRID" }, []string{"type"}},
		{"unknown Workspace", func(b map[string]any) { b["workspaceId"] = "clnotthereatallxxxxxxxxxx" }, []string{"workspaceId"}},
		{"unknown runtime", func(b map[string]any) { b["astroRuntimeVersion"] = "1.0.0" }, []string{"astroRuntimeVersion"}},
		{"unknown executor", func(b map[string]any) { b["executor"] = "CeleryExecutor" }, []string{"executor"}},
		{"lower-case scheduler size", func(b map[string]any) { b["schedulerSize"] = "small" }, []string{"schedulerSize"}},
		{"missing boolean", func(b map[string]any) { delete(b, "isHighAvailability") }, []string{"isHighAvailability"}},
		{"region of another provider", func(b map[string]any) { b["region"] = "us-central1" }, []string{"region"}},
		{"no cloud provider", func(b map[string]any) { delete(b, "cloudProvider") }, []string{"cloudProvider"}},
		{"standard with a cluster", func(b map[string]any) { b["clusterId"] = e.emu.ClusterID() }, []string{"clusterId"}},
		{"dedicated without a cluster", func(b map[string]any) { b["type"] = "DEDICATED"; delete(b, "cloudProvider"); delete(b, "region") }, []string{"clusterId"}},
		{"dedicated with a region", func(b map[string]any) {
			b["type"] = "DEDICATED"
			b["clusterId"] = e.emu.ClusterID()
			delete(b, "cloudProvider")
		}, []string{"region"}},
		{"memory not twice the CPU", func(b map[string]any) { b["defaultTaskPodMemory"] = "1Gi" }, []string{"defaultTaskPodMemory"}},
		{"CPU without a number", func(b map[string]any) { b["resourceQuotaCpu"] = "ten" }, []string{"resourceQuotaCpu"}},
		{"pod too large", func(b map[string]any) { b["defaultTaskPodCpu"] = "64"; b["defaultTaskPodMemory"] = "128Gi" }, []string{"defaultTaskPodCpu", "defaultTaskPodMemory"}},
		{"no queues for Celery", func(b map[string]any) { b["workerQueues"] = nil }, []string{"workerQueues"}},
		{"queues for Kubernetes", func(b map[string]any) { b["executor"] = "KUBERNETES" }, []string{"workerQueues"}},
		{"no default queue", func(b map[string]any) { b["workerQueues"] = queue("name", "etl", "isDefault", false) }, []string{"workerQueues"}},
		{"unknown machine", func(b map[string]any) { b["workerQueues"] = queue("astroMachine", "A7") }, []string{"workerQueues[0].astroMachine"}},
		{"concurrency over the machine's", func(b map[string]any) { b["workerQueues"] = queue("workerConcurrency", 16) }, []string{"workerQueues[0].workerConcurrency"}},
		{"max below min", func(b map[string]any) { b["workerQueues"] = queue("minWorkerCount", 5, "maxWorkerCount", 2) }, []string{"workerQueues[0].maxWorkerCount"}},
		{"bad email", func(b map[string]any) { b["contactEmails"] = []any{"not an address"} }, []string{"contactEmails[0]"}},
		{"bad env key", func(b map[string]any) {
			b["environmentVariables"] = []any{map[string]any{"key": "1X", "isSecret": false}}
		}, []string{"environmentVariables[0].key"}},
		{"hibernation", func(b map[string]any) { b["scalingSpec"] = map[string]any{} }, []string{"scalingSpec"}},
		{"unknown field", func(b map[string]any) { b["color"] = "blue" }, []string{"color"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := standardBody(ws, "invalid")
			tt.change(b)
			r := e.doJSON("POST", e.deploymentsPath(), e.owner, b)
			if r.status != 400 {
				t.Fatalf("status %d, want 400: %s", r.status, r.body)
			}
			var got []string
			for _, f := range r.errorBody(t).FieldErrors {
				got = append(got, f.Field)
			}
			if diff := cmp.Diff(tt.fields, got); diff != "" {
				t.Errorf("fieldErrors (-want +got):\n%s", diff)
			}
		})
	}
	if n := len(e.emu.Deployments()); n != 2 {
		t.Errorf("%d Deployments after refused creates, want the 2 seeded", n)
	}
}
