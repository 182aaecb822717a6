package kubernetes_test

import (
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The Helm chart (../helm/astro-sts) renders what kustomize renders from
// base and the overlays: the same objects, the same broker Deployment.
// Its templates read deploy/broker-container.yaml and the base's static
// objects through links in files/, and this test holds the rest equal.

const chartDir = "../helm/astro-sts"

// renderHelm renders the chart as `helm install astro-sts -n astro-sts`
// would with values, validating them against values.schema.json, and
// decodes every object strictly into its k8s.io/api type.
func renderHelm(t *testing.T, values map[string]any) (manifests, error) {
	t.Helper()
	// The loader logs each link in files/ to the standard logger: they
	// are meant.
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	chrt, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("load %s: %v", chartDir, err)
	}
	opts := chartutil.ReleaseOptions{Name: "astro-sts", Namespace: "astro-sts", Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(chrt, values, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return manifests{}, err
	}
	out, err := engine.Render(chrt, rv)
	if err != nil {
		return manifests{}, err
	}
	m := newManifests()
	files := make([]string, 0, len(out))
	for f := range out {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		if strings.HasSuffix(f, "NOTES.txt") {
			continue
		}
		for _, doc := range releaseutil.SplitManifests(out[f]) {
			var head struct {
				metav1.TypeMeta   `json:",inline"`
				metav1.ObjectMeta `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Errorf("%s: %v\n%s", f, err, doc)
				continue
			}
			if head.Kind == "" {
				continue // comments only
			}
			// SplitManifests trims each document: a block scalar at its
			// end would lose its final newline.
			m.decode(t, f, head.Kind, head.Name, []byte(doc+"\n"))
		}
	}
	sort.Strings(m.names)
	return m, nil
}

func mustRenderHelm(t *testing.T, values map[string]any) manifests {
	t.Helper()
	m, err := renderHelm(t, values)
	if err != nil {
		t.Fatalf("helm render %v: %v", values, err)
	}
	return m
}

// comparable returns the object names and the broker Deployment's spec,
// with what only one of the tools adds taken out: kustomize's hash suffix
// on the settings ConfigMap (and its Namespace object), Helm's checksum
// annotation that stands in for it.
func comparable(m manifests) ([]string, appsv1.DeploymentSpec) {
	var names []string
	for _, n := range m.names {
		if strings.HasPrefix(n, "Namespace/") {
			continue
		}
		if strings.HasPrefix(n, "ConfigMap/astro-sts-") && n != "ConfigMap/astro-sts-policy" {
			n = "ConfigMap/astro-sts" // kustomize's hashed settings
		}
		names = append(names, n)
	}
	sort.Strings(names)
	spec := *m.deployments["astro-sts"].Spec.DeepCopy()
	spec.Template.Annotations = nil
	// Kustomize's patches put an overlay's env entries, volumes and
	// mounts before the base's; their order means nothing here (no
	// $(VAR) refers to another), so both are compared sorted by name.
	pod := &spec.Template.Spec
	slices.SortFunc(pod.Volumes, func(a, b corev1.Volume) int { return strings.Compare(a.Name, b.Name) })
	for i := range pod.Containers {
		c := &pod.Containers[i]
		slices.SortFunc(c.Env, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
		slices.SortFunc(c.VolumeMounts, func(a, b corev1.VolumeMount) int { return strings.Compare(a.Name, b.Name) })
	}
	for i := range spec.Template.Spec.Containers {
		for _, ef := range spec.Template.Spec.Containers[i].EnvFrom {
			if ef.ConfigMapRef != nil && strings.HasPrefix(ef.ConfigMapRef.Name, "astro-sts-") {
				ef.ConfigMapRef.Name = "astro-sts"
			}
		}
	}
	return names, spec
}

// TestHelmMatchesKustomize renders the chart with the default values and
// with the Redis and Vault switches, and the kustomize base and overlays
// they mirror: each pair has the same objects and the same broker
// Deployment (image, args, env, ports, probes, resources, security
// settings, volumes, spread), and each passes the checks every overlay
// passes.
func TestHelmMatchesKustomize(t *testing.T) {
	s := loadSettings(t)
	for _, tc := range []struct {
		name      string
		values    map[string]any
		kustomize string
	}{
		{"default", nil, "base"},
		{"redis", map[string]any{"redis": map[string]any{"enabled": true}}, filepath.Join("overlays", "redis")},
		{"vault-kubernetes", map[string]any{"vaultKubernetes": map[string]any{"enabled": true}}, filepath.Join("overlays", "vault-kubernetes")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustRenderHelm(t, tc.values)
			checkBroker(t, h, s)
			k := render(t, tc.kustomize)
			hNames, hSpec := comparable(h)
			kNames, kSpec := comparable(k)
			if diff := cmp.Diff(kNames, hNames); diff != "" {
				t.Errorf("objects (-kustomize +helm):\n%s", diff)
			}
			if diff := cmp.Diff(kSpec, hSpec); diff != "" {
				t.Errorf("the broker's Deployment spec (-kustomize +helm):\n%s", diff)
			}
			for _, name := range []string{"astro-sts-redis"} {
				if kd, hd := k.deployments[name], h.deployments[name]; kd != nil && (hd == nil || !cmp.Equal(kd.Spec, hd.Spec)) {
					t.Errorf("Deployment %s differs (-kustomize +helm):\n%s", name, cmp.Diff(kd, hd))
				}
			}
			for name, kn := range k.netpols {
				if hn := h.netpols[name]; hn == nil || !cmp.Equal(kn.Spec, hn.Spec) {
					t.Errorf("NetworkPolicy %s differs (-kustomize +helm):\n%s", name, cmp.Diff(kn, hn))
				}
			}
			if diff := cmp.Diff(k.configMaps["astro-sts-policy"].Data, h.configMaps["astro-sts-policy"].Data); diff != "" {
				t.Errorf("the policy ConfigMap (-kustomize +helm):\n%s", diff)
			}
			settings := h.configMaps["astro-sts"]
			if settings == nil || settings.Data["ASTRO_STS_AUDIENCE"] == "" || settings.Data["ASTRO_ORGANIZATION_ID"] == "" {
				t.Errorf("the settings ConfigMap = %+v", settings)
			}
		})
	}
}

// TestHelmValues renders the values a release sets, and refuses through
// values.schema.json the ones that would deploy a broken or unsafe broker.
func TestHelmValues(t *testing.T) {
	m := mustRenderHelm(t, map[string]any{
		"image":    map[string]any{"tag": "v1.2.3"},
		"replicas": 4,
		"policy":   "rules: []\n",
		"settings": map[string]any{"ASTRO_STS_REAP_INTERVAL": "1m"},
		"redis":    map[string]any{"enabled": true, "inCluster": false, "url": "rediss://redis.example.com:6380/0"},
		"prometheus": map[string]any{
			"serviceMonitor": true, "rules": true, "labels": map[string]any{"release": "kube-prometheus-stack"},
		},
	})
	d := m.deployments["astro-sts"]
	c := container(t, &d.Spec.Template.Spec, "broker")
	url, _ := envValue(c, "ASTRO_STS_REDIS_URL")
	got := map[string]any{
		"image": c.Image, "replicas": deref(d.Spec.Replicas), "redis url": url,
		"in-cluster redis": m.deployments["astro-sts-redis"] != nil,
		"policy":           m.configMaps["astro-sts-policy"].Data["policy.yaml"],
		"reap interval":    m.configMaps["astro-sts"].Data["ASTRO_STS_REAP_INTERVAL"],
		"checksum":         d.Spec.Template.Annotations["checksum/settings"] != "",
	}
	want := map[string]any{
		"image": "ghcr.io/astro-sts/astro-sts:v1.2.3", "replicas": int32(4), "redis url": "rediss://redis.example.com:6380/0",
		"in-cluster redis": false, "policy": "rules: []\n", "reap interval": "1m", "checksum": true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	pr, sm := m.rules["astro-sts"], m.monitors["astro-sts"]
	if pr == nil || sm == nil {
		t.Fatalf("no PrometheusRule or ServiceMonitor in %q", m.names)
	}
	if diff := cmp.Diff(loadAlerts(t), pr.Spec.Groups); diff != "" {
		t.Errorf("the chart's PrometheusRule groups differ from alerts.yaml (-alerts.yaml +chart):\n%s", diff)
	}
	if pr.Labels["release"] != "kube-prometheus-stack" || sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("labels: PrometheusRule %v, ServiceMonitor %v", pr.Labels, sm.Labels)
	}

	for name, values := range map[string]map[string]any{
		"a misspelled key":         {"audiance": "https://astro-sts.example.com"},
		"an audience with a slash": {"audience": "https://astro-sts.example.com/"},
		"a plain http audience":    {"audience": "http://astro-sts.example.com"},
		"a secret as a setting":    {"settings": map[string]any{"ASTRO_ORGANIZATION_TOKEN": "x"}},
		"a setting the chart sets": {"settings": map[string]any{"ASTRO_STS_ADDR": ":9090"}},
		"a non-string setting":     {"settings": map[string]any{"ASTRO_STS_REAP_CONCURRENCY": 8}},
		"an unknown redis key":     {"redis": map[string]any{"enable": true}},
		"no replicas":              {"replicas": 0},
		"redis without an address": {"redis": map[string]any{"enabled": true, "inCluster": false}},
	} {
		if _, err := renderHelm(t, values); err == nil {
			t.Errorf("%s: %v rendered", name, values)
		}
	}
}
