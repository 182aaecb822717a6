package kubernetes_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The alerting rules (../prometheus/alerts.yaml) and their unit tests, run
// by the real promtool; and the kustomize component that carries the same
// rules as a PrometheusRule. That the rules and the dashboard name only
// metrics the broker serves is checked against a real broker in
// cmd/astro-sts (monitoring_test.go), which the main module can start.

const (
	alertsFile        = "../prometheus/alerts.yaml"
	alertsTestFile    = "../prometheus/alerts_test.yaml"
	promtoolBuild     = "../../tools/promtool/build.sh"
	envPromtool       = "ASTRO_STS_PROMTOOL_BIN"
	promtoolBuildHint = "no promtool: run tools/promtool/build.sh (a few minutes, once) or set " + envPromtool
)

// ruleGroup is a Prometheus rule group, the shape of a rules file's groups
// and of a PrometheusRule's spec.groups; decoded strictly, an unknown or
// misspelled key fails.
type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []struct {
		Alert         string            `json:"alert,omitempty"`
		Record        string            `json:"record,omitempty"`
		Expr          string            `json:"expr"`
		For           string            `json:"for,omitempty"`
		KeepFiringFor string            `json:"keep_firing_for,omitempty"`
		Labels        map[string]string `json:"labels,omitempty"`
		Annotations   map[string]string `json:"annotations,omitempty"`
	} `json:"rules"`
}

// prometheusRule is the Prometheus Operator's PrometheusRule
// (monitoring.coreos.com/v1), as much of it as the component uses.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

// serviceMonitor is the Prometheus Operator's ServiceMonitor, as much of it
// as the component uses.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

func loadAlerts(t *testing.T) []ruleGroup {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []ruleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return f.Groups
}

// TestPrometheusComponent renders the base with the prometheus component,
// as an overlay that adds it would, and checks that its PrometheusRule
// carries exactly the groups of alerts.yaml and that its ServiceMonitor
// scrapes the broker's Service.
func TestPrometheusComponent(t *testing.T) {
	dir := t.TempDir()
	base, _ := filepath.Abs("base")
	component, _ := filepath.Abs(filepath.Join("components", "prometheus"))
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	kust := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [" + rel(base) + "]\ncomponents: [" + rel(component) + "]\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
		t.Fatal(err)
	}
	m := render(t, dir)

	pr := m.rules["astro-sts"]
	if pr == nil {
		t.Fatalf("no PrometheusRule astro-sts in %q", m.names)
	}
	if pr.Namespace != "astro-sts" {
		t.Errorf("PrometheusRule namespace = %q, want the broker's", pr.Namespace)
	}
	if diff := cmp.Diff(loadAlerts(t), pr.Spec.Groups); diff != "" {
		t.Errorf("components/prometheus/prometheusrule.yaml spec.groups differ from %s (-alerts.yaml +PrometheusRule); copy the file's groups:\n%s", alertsFile, diff)
	}

	sm := m.monitors["astro-sts"]
	svc := m.services["astro-sts"]
	if sm == nil || svc == nil {
		t.Fatalf("no ServiceMonitor or Service astro-sts in %q", m.names)
	}
	if !selects(t, sm.Spec.Selector.MatchLabels, svc.Labels) || len(sm.Spec.Selector.MatchExpressions) != 0 {
		t.Errorf("the ServiceMonitor's selector %v does not select the Service's labels %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v: want /metrics on the Service's port %q", sm.Spec.Endpoints, svc.Spec.Ports[0].Name)
	}
}

// promtool returns the promtool binary: $ASTRO_STS_PROMTOOL_BIN, else the
// cache path tools/promtool/build.sh writes, whose version the test reads
// from the script. Outside CI a missing binary skips the test; under
// CI=true it fails it, so CI never passes by skipping.
func promtool(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(envPromtool)
	if bin == "" {
		script, err := os.ReadFile(promtoolBuild)
		if err != nil {
			t.Fatal(err)
		}
		v := regexp.MustCompile(`(?m)^version=(v\S+)$`).FindSubmatch(script)
		if v == nil {
			t.Fatalf("%s sets no version=", promtoolBuild)
		}
		dir := os.Getenv("ASTRO_STS_CACHE")
		if dir == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					t.Fatal(err)
				}
				base = filepath.Join(home, ".cache")
			}
			dir = filepath.Join(base, "astro-sts")
		}
		bin = filepath.Join(dir, "promtool-"+string(v[1]))
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s (looked for %s)", promtoolBuildHint, bin)
		}
		t.Skipf("%s (looked for %s)", promtoolBuildHint, bin)
	}
	return bin
}

// TestPromtool runs `promtool check rules` and `promtool test rules`, the
// checks Prometheus's own parser and evaluator make, on the rules and
// their unit tests.
func TestPromtool(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(alertsFile)},
		{"test", "rules", filepath.Base(alertsTestFile)},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = filepath.Dir(alertsFile)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("promtool %s: %v\n%s", args, err, out.String())
		}
	}
}

// TestEveryAlertIsTested checks that each alert of alerts.yaml fires in at
// least one of the unit tests promtool runs, and that the tests name no
// alert the rules do not have.
func TestEveryAlertIsTested(t *testing.T) {
	alerts := map[string]bool{}
	for _, g := range loadAlerts(t) {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts[r.Alert] = false
			}
		}
	}
	b, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		RuleFiles          []string `json:"rule_files"`
		EvaluationInterval string   `json:"evaluation_interval"`
		Tests              []struct {
			Name        string `json:"name"`
			Interval    string `json:"interval"`
			InputSeries []struct {
				Series string `json:"series"`
				Values string `json:"values"`
			} `json:"input_series"`
			AlertRuleTest []struct {
				EvalTime  string `json:"eval_time"`
				Alertname string `json:"alertname"`
				ExpAlerts []struct {
					ExpLabels      map[string]string `json:"exp_labels"`
					ExpAnnotations map[string]string `json:"exp_annotations"`
				} `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsTestFile, err)
	}
	for _, tc := range f.Tests {
		for _, at := range tc.AlertRuleTest {
			fired, ok := alerts[at.Alertname]
			if !ok {
				t.Errorf("test %q: no alert %s in %s", tc.Name, at.Alertname, alertsFile)
				continue
			}
			alerts[at.Alertname] = fired || len(at.ExpAlerts) > 0
		}
	}
	for name, fired := range alerts {
		if !fired {
			t.Errorf("alert %s fires in no test of %s", name, alertsTestFile)
		}
	}
}
