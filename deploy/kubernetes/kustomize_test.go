package kubernetes_test

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// settings is ../broker-container.yaml, which internal/testkit/imagetest runs the
// image with: the manifests must say the same.
type settings struct {
	User                          int64    `json:"user"`
	Group                         int64    `json:"group"`
	ReadOnlyRootFilesystem        bool     `json:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation      bool     `json:"allowPrivilegeEscalation"`
	DropCapabilities              []string `json:"dropCapabilities"`
	PolicyDir                     string   `json:"policyDir"`
	PolicyFile                    string   `json:"policyFile"`
	OrganizationTokenFile         string   `json:"organizationTokenFile"`
	TerminationGracePeriodSeconds int64    `json:"terminationGracePeriodSeconds"`
	PreStopSleepSeconds           int64    `json:"preStopSleepSeconds"`
	BrokerDrainSeconds            int64    `json:"brokerDrainSeconds"`
}

func loadSettings(t *testing.T) settings {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "broker-container.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var s settings
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		t.Fatalf("broker-container.yaml: %v", err)
	}
	return s
}

// manifests are the decoded objects of one rendered kustomization, by
// name.
type manifests struct {
	namespaces      map[string]*corev1.Namespace
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	services        map[string]*corev1.Service
	deployments     map[string]*appsv1.Deployment
	pdbs            map[string]*policyv1.PodDisruptionBudget
	netpols         map[string]*networkingv1.NetworkPolicy
	rules           map[string]*prometheusRule
	monitors        map[string]*serviceMonitor
	pvcs            map[string]*corev1.PersistentVolumeClaim
	names           []string // kind/name of every object, sorted
}

// render runs kustomize on dir as `kubectl apply -k` would, and decodes
// every object strictly into its k8s.io/api type: an unknown or misplaced
// field, which the API server would drop or refuse, fails the test.
func render(t *testing.T, dir string) manifests {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	m := newManifests()
	for _, r := range resMap.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		m.decode(t, dir, r.GetKind(), r.GetName(), b)
	}
	sort.Strings(m.names)
	return m
}

func newManifests() manifests {
	return manifests{
		namespaces: map[string]*corev1.Namespace{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{},
		deployments: map[string]*appsv1.Deployment{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		netpols: map[string]*networkingv1.NetworkPolicy{}, pvcs: map[string]*corev1.PersistentVolumeClaim{},
		rules: map[string]*prometheusRule{}, monitors: map[string]*serviceMonitor{},
	}
}

// decode adds the object b, of kind and name, decoded strictly; where
// names what rendered it, for the errors.
func (m *manifests) decode(t *testing.T, where, kind, name string, b []byte) {
	t.Helper()
	var obj any
	switch kind {
	case "Namespace":
		obj = add(m.namespaces, name)
	case "ServiceAccount":
		obj = add(m.serviceAccounts, name)
	case "ConfigMap":
		obj = add(m.configMaps, name)
	case "Service":
		obj = add(m.services, name)
	case "Deployment":
		obj = add(m.deployments, name)
	case "PersistentVolumeClaim":
		obj = add(m.pvcs, name)
	case "PodDisruptionBudget":
		obj = add(m.pdbs, name)
	case "NetworkPolicy":
		obj = add(m.netpols, name)
	case "PrometheusRule":
		obj = add(m.rules, name)
	case "ServiceMonitor":
		obj = add(m.monitors, name)
	default:
		t.Errorf("%s: unexpected kind %s/%s", where, kind, name)
		return
	}
	if err := yaml.UnmarshalStrict(b, obj); err != nil {
		t.Errorf("%s: %s/%s: %v", where, kind, name, err)
	}
	m.names = append(m.names, kind+"/"+name)
}

// add makes a new T for name in objs and returns it.
func add[T any](objs map[string]*T, name string) *T {
	v := new(T)
	objs[name] = v
	return v
}

// container returns the pod's container named name.
func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// envValue returns the value of an environment variable set with value.
func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

// mountedAt returns the volume mounted at dir (not through subPath).
func mountedAt(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, dir string) *corev1.Volume {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		if vm.SubPath != "" || !vm.ReadOnly {
			t.Errorf("mount at %s: subPath %q, read-only %v; want the whole volume, read-only", dir, vm.SubPath, vm.ReadOnly)
		}
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == vm.Name {
				return &spec.Volumes[i]
			}
		}
		t.Fatalf("mount at %s names no volume %q", dir, vm.Name)
	}
	t.Fatalf("nothing mounted at %s", dir)
	return nil
}

// selects reports whether selector picks pods with podLabels.
func selects(t *testing.T, selector map[string]string, podLabels map[string]string) bool {
	t.Helper()
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(labels.Set(podLabels))
}

// checkBroker checks the broker's Deployment against broker-container.yaml
// and the conventions every overlay keeps; it returns the broker container.
func checkBroker(t *testing.T, m manifests, s settings) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	d := m.deployments["astro-sts"]
	if d == nil {
		t.Fatalf("no Deployment astro-sts in %q", m.names)
	}
	pod := &d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels
	if !selects(t, d.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, podLabels)
	}
	c := container(t, pod, "broker")
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Errorf("the broker pod has %d containers and %d init containers, want the broker alone", len(pod.Containers), len(pod.InitContainers))
	}
	if diff := cmp.Diff([]string{"serve"}, c.Args); diff != "" || len(c.Command) != 0 {
		t.Errorf("broker command %q args (-want +got):\n%s", c.Command, diff)
	}

	// The lockdown internal/testkit/imagetest runs the image with.
	psc, csc := pod.SecurityContext, c.SecurityContext
	if psc == nil || csc == nil || csc.Capabilities == nil {
		t.Fatal("the pod or the container has no securityContext")
	}
	var drop []string
	for _, c := range csc.Capabilities.Drop {
		drop = append(drop, string(c))
	}
	got := map[string]any{
		"user":                     deref(psc.RunAsUser),
		"group":                    deref(psc.RunAsGroup),
		"runAsNonRoot":             deref(psc.RunAsNonRoot),
		"readOnlyRootFilesystem":   deref(csc.ReadOnlyRootFilesystem),
		"allowPrivilegeEscalation": deref(csc.AllowPrivilegeEscalation),
		"dropCapabilities":         drop,
		"addCapabilities":          len(csc.Capabilities.Add),
		"privileged":               deref(csc.Privileged),
		"container overrides":      csc.RunAsUser != nil || csc.RunAsGroup != nil,
		"seccomp":                  psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
		"terminationGracePeriod":   deref(pod.TerminationGracePeriodSeconds),
	}
	want := map[string]any{
		"user":                     s.User,
		"group":                    s.Group,
		"runAsNonRoot":             true,
		"readOnlyRootFilesystem":   s.ReadOnlyRootFilesystem,
		"allowPrivilegeEscalation": s.AllowPrivilegeEscalation,
		"dropCapabilities":         s.DropCapabilities,
		"addCapabilities":          0,
		"privileged":               false,
		"container overrides":      false,
		"seccomp":                  true,
		"terminationGracePeriod":   s.TerminationGracePeriodSeconds,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("broker security settings (-broker-container.yaml +manifest):\n%s", diff)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds != s.PreStopSleepSeconds {
		t.Errorf("preStop = %+v, want a %d s sleep", c.Lifecycle, s.PreStopSleepSeconds)
	}
	if s.PreStopSleepSeconds+s.BrokerDrainSeconds >= s.TerminationGracePeriodSeconds {
		t.Errorf("preStop %d s + drain %d s does not fit in the %d s grace period", s.PreStopSleepSeconds, s.BrokerDrainSeconds, s.TerminationGracePeriodSeconds)
	}

	// No Kubernetes API token, unless a projected one for another audience.
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a Kubernetes API token")
	}
	if sa := m.serviceAccounts[pod.ServiceAccountName]; sa == nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("service account %q missing or mounting its token", pod.ServiceAccountName)
	}

	// The policy: a ConfigMap mounted as a directory, under a stable name.
	if v, _ := envValue(c, "ASTRO_STS_POLICY_FILE"); v != s.PolicyFile || path.Dir(v) != s.PolicyDir {
		t.Errorf("ASTRO_STS_POLICY_FILE = %q, want %s in %s", v, s.PolicyFile, s.PolicyDir)
	}
	pv := mountedAt(t, pod, c, s.PolicyDir)
	if pv.ConfigMap == nil {
		t.Fatalf("the policy volume is not a ConfigMap: %+v", pv.VolumeSource)
	}
	cm := m.configMaps[pv.ConfigMap.Name]
	if cm == nil {
		t.Fatalf("the policy ConfigMap %q is not rendered (a hash suffix would rename it at each change and restart the pods)", pv.ConfigMap.Name)
	}
	if _, ok := cm.Data[path.Base(s.PolicyFile)]; !ok || len(pv.ConfigMap.Items) != 0 {
		t.Errorf("ConfigMap %s has keys %v and the volume items %v; want %s, the whole map", cm.Name, keys(cm.Data), pv.ConfigMap.Items, path.Base(s.PolicyFile))
	}

	// The Organization token: a Secret, as a file.
	if v, _ := envValue(c, "ASTRO_ORGANIZATION_TOKEN_FILE"); v != s.OrganizationTokenFile {
		t.Errorf("ASTRO_ORGANIZATION_TOKEN_FILE = %q, want %s", v, s.OrganizationTokenFile)
	}
	if tv := mountedAt(t, pod, c, path.Dir(s.OrganizationTokenFile)); tv.Secret == nil || tv.Secret.SecretName == "" {
		t.Errorf("the Organization token volume is not a Secret: %+v", tv.VolumeSource)
	}
	for _, e := range c.Env {
		if e.Name == "ASTRO_ORGANIZATION_TOKEN" || e.Name == "VAULT_TOKEN" {
			t.Errorf("%s is set in the environment; secrets come as files", e.Name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			t.Errorf("envFrom Secret %s: secrets come as files", ef.SecretRef.Name)
		}
	}

	// The port, probes and requests.
	addr, _ := envValue(c, "ASTRO_STS_ADDR")
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || fmt.Sprintf(":%d", c.Ports[0].ContainerPort) != addr {
		t.Errorf("ports %+v and ASTRO_STS_ADDR %q disagree", c.Ports, addr)
	}
	for name, p := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port != intstr.FromString("http") {
			t.Errorf("probe of %s = %+v", name, p)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", c.Resources)
	}

	// Spread across nodes.
	spread := false
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.TopologyKey == "kubernetes.io/hostname" && tsc.WhenUnsatisfiable == corev1.DoNotSchedule && tsc.LabelSelector != nil && selects(t, tsc.LabelSelector.MatchLabels, podLabels) {
			spread = true
		}
	}
	if !spread {
		t.Error("the replicas are not spread across nodes")
	}

	// The Service, the disruption budget and the network policy pick the
	// broker's pods.
	svc := m.services["astro-sts"]
	if svc == nil || !selects(t, svc.Spec.Selector, podLabels) || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
		t.Errorf("Service astro-sts = %+v, want it to select the broker's http port", svc)
	}
	pdb := m.pdbs["astro-sts"]
	if pdb == nil || pdb.Spec.Selector == nil || !selects(t, pdb.Spec.Selector.MatchLabels, podLabels) || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget astro-sts = %+v, want maxUnavailable 1 for the broker", pdb)
	}
	np := m.netpols["astro-sts"]
	if np == nil || !selects(t, np.Spec.PodSelector.MatchLabels, podLabels) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("NetworkPolicy astro-sts = %+v, want it to restrict the broker's traffic both ways", np)
	}
	return d, c
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestBase(t *testing.T) {
	s := loadSettings(t)
	m := render(t, "base")
	wantNames := []string{
		"ConfigMap/astro-sts-policy", "Deployment/astro-sts", "Namespace/astro-sts",
		"NetworkPolicy/astro-sts", "PodDisruptionBudget/astro-sts", "Service/astro-sts", "ServiceAccount/astro-sts",
	}
	var got []string
	for _, n := range m.names {
		// The settings ConfigMap's name carries a hash of its content.
		if !strings.HasPrefix(n, "ConfigMap/astro-sts-") || n == "ConfigMap/astro-sts-policy" {
			got = append(got, n)
		}
	}
	if diff := cmp.Diff(wantNames, got); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	d, c := checkBroker(t, m, s)
	if r := deref(d.Spec.Replicas); r != 2 {
		t.Errorf("replicas = %d, want 2", r)
	}
	if ns := m.namespaces["astro-sts"]; ns == nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace astro-sts does not enforce the restricted Pod Security Standard")
	}
	// The settings the broker requires come from the hashed ConfigMap.
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil {
		t.Fatalf("envFrom = %+v, want the settings ConfigMap", c.EnvFrom)
	}
	cm := m.configMaps[c.EnvFrom[0].ConfigMapRef.Name]
	if cm == nil {
		t.Fatalf("envFrom names ConfigMap %q, which is not rendered", c.EnvFrom[0].ConfigMapRef.Name)
	}
	if diff := cmp.Diff([]string{"ASTRO_ORGANIZATION_ID", "ASTRO_STS_AUDIENCE"}, keys(cm.Data)); diff != "" {
		t.Errorf("settings ConfigMap keys (-want +got):\n%s", diff)
	}
}

func TestRedisOverlay(t *testing.T) {
	s := loadSettings(t)
	m := render(t, filepath.Join("overlays", "redis"))
	d, c := checkBroker(t, m, s)
	if r := deref(d.Spec.Replicas); r < 3 {
		t.Errorf("replicas = %d, want several (3)", r)
	}
	url, _ := envValue(c, "ASTRO_STS_REDIS_URL")
	svc := m.services["astro-sts-redis"]
	if svc == nil || len(svc.Spec.Ports) != 1 || url != fmt.Sprintf("redis://%s:%d/0", svc.Name, svc.Spec.Ports[0].Port) {
		t.Errorf("ASTRO_STS_REDIS_URL = %q does not name the Redis Service %+v", url, svc)
	}
	pwFile, _ := envValue(c, "ASTRO_STS_REDIS_PASSWORD_FILE")
	if v := mountedAt(t, &d.Spec.Template.Spec, c, path.Dir(pwFile)); v.Secret == nil {
		t.Errorf("the Redis password is not a Secret file: %+v", v.VolumeSource)
	}

	redis := m.deployments["astro-sts-redis"]
	if redis == nil {
		t.Fatal("no Redis Deployment")
	}
	rc := container(t, &redis.Spec.Template.Spec, "redis")
	if rc.SecurityContext == nil || !deref(rc.SecurityContext.ReadOnlyRootFilesystem) || deref(rc.SecurityContext.AllowPrivilegeEscalation) ||
		redis.Spec.Template.Spec.SecurityContext == nil || !deref(redis.Spec.Template.Spec.SecurityContext.RunAsNonRoot) {
		t.Error("Redis does not run locked down")
	}
	// Redis never evicts (an evicted replay entry reopens replay; the
	// broker is not ready under any other policy) and keeps its data in
	// an append-only file on a volume that outlives the pod.
	args := strings.Join(rc.Args, " ")
	for _, want := range []string{"--maxmemory-policy noeviction", "--appendonly yes", "--dir /data"} {
		if !strings.Contains(args, want) {
			t.Errorf("Redis runs with %q, want %s", args, want)
		}
	}
	var dv corev1.VolumeSource
	for _, vm := range rc.VolumeMounts {
		for _, v := range redis.Spec.Template.Spec.Volumes {
			if vm.MountPath == "/data" && vm.SubPath == "" && !vm.ReadOnly && v.Name == vm.Name {
				dv = v.VolumeSource
			}
		}
	}
	if dv.PersistentVolumeClaim == nil || m.pvcs[dv.PersistentVolumeClaim.ClaimName] == nil {
		t.Errorf("Redis's /data is not a writable PersistentVolumeClaim of the overlay: %+v", dv)
	} else if redis.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("Redis's strategy is %q: a ReadWriteOnce volume needs Recreate", redis.Spec.Strategy.Type)
	}
	if !selects(t, svc.Spec.Selector, redis.Spec.Template.Labels) || selects(t, svc.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("the Redis Service does not select Redis alone")
	}
	// Redis takes connections from the brokers only, and the brokers may
	// reach it.
	in, out := m.netpols["astro-sts-redis"], m.netpols["astro-sts-to-redis"]
	if in == nil || out == nil {
		t.Fatalf("NetworkPolicies %q: want astro-sts-redis and astro-sts-to-redis", keys(m.netpols))
	}
	if !selects(t, in.Spec.PodSelector.MatchLabels, redis.Spec.Template.Labels) || len(in.Spec.Ingress) != 1 || len(in.Spec.Ingress[0].From) != 1 ||
		!selects(t, in.Spec.Ingress[0].From[0].PodSelector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("NetworkPolicy astro-sts-redis lets others than the brokers in: %+v", in.Spec)
	}
	if !selects(t, out.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) || len(out.Spec.Egress) != 1 || len(out.Spec.Egress[0].To) != 1 ||
		!selects(t, out.Spec.Egress[0].To[0].PodSelector.MatchLabels, redis.Spec.Template.Labels) {
		t.Errorf("NetworkPolicy astro-sts-to-redis does not let the brokers reach Redis: %+v", out.Spec)
	}
}

func TestVaultKubernetesOverlay(t *testing.T) {
	s := loadSettings(t)
	m := render(t, filepath.Join("overlays", "vault-kubernetes"))
	d, c := checkBroker(t, m, s)
	if v, _ := envValue(c, "ASTRO_STS_VAULT_AUTH"); v != "kubernetes" {
		t.Errorf("ASTRO_STS_VAULT_AUTH = %q, want kubernetes", v)
	}
	jwt, _ := envValue(c, "ASTRO_STS_VAULT_JWT_FILE")
	v := mountedAt(t, &d.Spec.Template.Spec, c, path.Dir(jwt))
	if v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("ASTRO_STS_VAULT_JWT_FILE is not a projected service account token: %+v", v.VolumeSource)
	}
	sat := v.Projected.Sources[0].ServiceAccountToken
	if sat.Audience == "" || sat.Path != path.Base(jwt) {
		t.Errorf("projected token %+v: want an audience of its own (not the API server's) at %s", sat, path.Base(jwt))
	}
	if m.netpols["astro-sts-to-vault"] == nil {
		t.Error("no NetworkPolicy lets the brokers reach Vault")
	}
}
