package action

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sethvargo/go-githubactions"
	yaml "go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/runner"
)

type actionYML struct {
	Name     string            `yaml:"name"`
	Branding map[string]string `yaml:"branding"`
	Inputs   yaml.Node         `yaml:"inputs"`
	Outputs  yaml.Node         `yaml:"outputs"`
	Runs     map[string]string `yaml:"runs"`
}

type ymlInput struct {
	Description string  `yaml:"description"`
	Required    bool    `yaml:"required"`
	Default     *string `yaml:"default"`
}

// orderedKeys returns a mapping node's entries in file order.
func orderedKeys[T any](t *testing.T, n yaml.Node) ([]string, map[string]T) {
	t.Helper()
	if n.Kind != yaml.MappingNode {
		t.Fatalf("not a mapping: line %d", n.Line)
	}
	var keys []string
	vals := map[string]T{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		var v T
		if err := n.Content[i+1].Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, n.Content[i].Value)
		vals[n.Content[i].Value] = v
	}
	return keys, vals
}

func loadActionYML(t *testing.T) (actionYML, []string, map[string]ymlInput, []string, map[string]ymlInput) {
	t.Helper()
	raw, err := os.ReadFile("../action.yml")
	if err != nil {
		t.Fatal(err)
	}
	var a actionYML
	if err := yaml.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	in, inputs := orderedKeys[ymlInput](t, a.Inputs)
	out, outputs := orderedKeys[ymlInput](t, a.Outputs)
	return a, in, inputs, out, outputs
}

// TestActionYML keeps action.yml, the code and docs/action.md in step: the
// same inputs and outputs in the same order, the defaults the code applies
// to empty inputs, and the entrypoints main.go dispatches on.
func TestActionYML(t *testing.T) {
	a, inNames, ymlInputs, outNames, outputs := loadActionYML(t)

	if diff := cmp.Diff(InputNames(), inNames); diff != "" {
		t.Errorf("inputs (-code +action.yml):\n%s", diff)
	}
	if diff := cmp.Diff(OutputNames(), outNames); diff != "" {
		t.Errorf("outputs (-code +action.yml):\n%s", diff)
	}
	wantRuns := map[string]string{
		"using":           "docker",
		"image":           "docker://ghcr.io/astro-sts/astro-sts:v1",
		"entrypoint":      "/usr/local/bin/astro-sts-action",
		"post-entrypoint": "/usr/local/bin/astro-sts-post",
		"post-if":         "always()",
	}
	if diff := cmp.Diff(wantRuns, a.Runs); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}
	if a.Name == "" || a.Branding["icon"] == "" || a.Branding["color"] == "" {
		t.Errorf("name or branding missing: %q %v", a.Name, a.Branding)
	}
	for name, in := range ymlInputs {
		if in.Description == "" || strings.Contains(in.Description, "\n") {
			t.Errorf("input %s: description empty or not one line", name)
		}
		if in.Required != (name == InputBrokerURL) {
			t.Errorf("input %s: required = %v", name, in.Required)
		}
		if in.Default == nil && !in.Required {
			t.Errorf("input %s: no default (give \"\" so that it always arrives)", name)
		}
	}

	// The defaults in action.yml and the code's handling of empty inputs
	// must agree: an old runner or `astro-sts action` run by hand passes
	// nothing at all.
	withDefaults := map[string]string{InputBrokerURL: "https://sts.example.com"}
	empty := map[string]string{InputBrokerURL: "https://sts.example.com"}
	for name, in := range ymlInputs {
		if in.Default != nil {
			withDefaults[name] = *in.Default
		}
	}
	got1, err1 := readInputsFrom(t, withDefaults)
	got2, err2 := readInputsFrom(t, empty)
	if err1 != nil || err2 != nil {
		t.Fatalf("readInputs: %v / %v", err1, err2)
	}
	if diff := cmp.Diff(got1, got2, cmp.AllowUnexported(inputs{})); diff != "" {
		t.Errorf("action.yml defaults differ from the code's (-action.yml +code):\n%s", diff)
	}

	docs, err := os.ReadFile("../docs/action.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range inNames {
		in := ymlInputs[name]
		req, def := "no", ""
		if in.Required {
			req = "yes"
		}
		if in.Default != nil && *in.Default != "" {
			def = "`" + *in.Default + "` "
		}
		row := fmt.Sprintf("| `%s` | %s | %s| %s |\n", name, req, def, in.Description)
		if !strings.Contains(string(docs), row) {
			t.Errorf("docs/action.md lacks the row\n%s", row)
		}
	}
	for _, name := range outNames {
		row := fmt.Sprintf("| `%s` | %s |\n", name, outputs[name].Description)
		if !strings.Contains(string(docs), row) {
			t.Errorf("docs/action.md lacks the row\n%s", row)
		}
	}
}

func readInputsFrom(t *testing.T, in map[string]string) (inputs, error) {
	env := map[string]string{}
	for k, v := range in {
		env[runner.InputEnvName(k)] = v
	}
	return readInputs(githubactions.New(githubactions.WithGetenv(func(k string) string { return env[k] })))
}

// TestDockerfile checks by reading what cannot be built here: a static,
// trimmed binary, the two entrypoint links made in the builder (scratch
// has no shell), no USER line, and the entrypoint.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, want := range []string{
		"FROM --platform=$BUILDPLATFORM golang:1.26 AS build",
		"CGO_ENABLED=0",
		`go build -trimpath -ldflags "-s -w -X main.version=${VERSION}"`,
		"-o /out/usr/local/bin/astro-sts ./cmd/astro-sts",
		"ln -s astro-sts /out/usr/local/bin/astro-sts-action",
		"ln -s astro-sts /out/usr/local/bin/astro-sts-post",
		"cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/",
		"FROM scratch\n",
		"COPY --from=build /out/ /\n",
		`ENTRYPOINT ["/usr/local/bin/astro-sts"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*USER\b`).MatchString(df) {
		t.Error("Dockerfile has a USER line: GitHub runs container actions as the image's default user")
	}
}
