package policy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// compileSchema compiles the embedded schema, checking it against the
// draft 2020-12 meta-schema on the way.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(policy.Schema()))
	if err != nil {
		t.Fatalf("schema.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(policy.SchemaURL, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(policy.SchemaURL)
	if err != nil {
		t.Fatalf("schema.json does not compile: %v", err)
	}
	return s
}

// validateYAML validates a policy's YAML source against the schema, as an
// editor does: the YAML read as JSON values.
func validateYAML(t *testing.T, s *jsonschema.Schema, src string) error {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(src), &v); err != nil {
		return err
	}
	data, err := json.Marshal(jsonValue(v))
	if err != nil {
		t.Fatalf("%v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return s.Validate(inst)
}

// jsonValue turns what yaml.v3 decodes into values encoding/json takes:
// mappings with non-string keys become objects keyed by the key's text.
func jsonValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = jsonValue(x)
		}
		return v
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[fmt.Sprint(k)] = jsonValue(x)
		}
		return out
	case []any:
		for i, x := range v {
			v[i] = jsonValue(x)
		}
		return v
	}
	return v
}

// TestSchemaRefusesWhatParseRefuses: a file Parse refuses for a value of
// the wrong type, a missing key or an unknown key, the schema refuses too,
// so an editor flags it before the broker does.
func TestSchemaRefusesWhatParseRefuses(t *testing.T) {
	s := compileSchema(t)
	rule := func(match, grant string) string {
		return "rules:\n  - name: r\n    match: " + match + "\n    grant: " + grant + "\n"
	}
	okMatch := `{repository_id: "1", ref: refs/heads/main, event_name: push}`
	okGrant := "{workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}"
	rotation := func(body string) string {
		return "rotations:\n  - name: r\n    token_id: cltok\n    strategy: rotate\n    allow: " + okMatch + "\n" + body
	}
	tests := []struct{ name, src string }{
		{"top level is a list", "- a\n"},
		{"no rules nor rotations", "{}\n"},
		{"unknown top-level key", "rule: []\n"},
		{"rules is a mapping", "rules: {}\n"},
		{"unknown rule key", strings.Replace(rule(okMatch, okGrant), "    match:", "    mach: {}\n    match:", 1)},
		{"rule without a name", strings.Replace(rule(okMatch, okGrant), "  - name: r\n    match:", "  - match:", 1)},
		{"rule without match", "rules:\n  - name: r\n    grant: " + okGrant + "\n"},
		{"rule without grant", "rules:\n  - name: r\n    match: " + okMatch + "\n"},
		{"name is a list", strings.Replace(rule(okMatch, okGrant), "name: r", "name: [r]", 1)},
		{"name with a space", strings.Replace(rule(okMatch, okGrant), "name: r", "name: 'a b'", 1)},
		{"match is a list", rule(`[repository_id]`, okGrant)},
		{"empty match", rule(`{}`, okGrant)},
		{"no identity claim", rule(`{ref: refs/heads/main, event_name: push}`, okGrant)},
		{"claim name with a capital", rule(`{repository_id: "1", Ref: x}`, okGrant)},
		{"claim name with a hyphen", rule(`{repository_id: "1", event-name: push}`, okGrant)},
		{"numeric claim", rule(`{repository_id: "1", exp: "1"}`, okGrant)},
		{"null value", rule(`{repository_id: "1", ref: null}`, okGrant)},
		{"float value", rule(`{repository_id: 1.5}`, okGrant)},
		{"empty list", rule(`{repository_id: "1", event_name: []}`, okGrant)},
		{"nested list", rule(`{repository_id: "1", event_name: [[push]]}`, okGrant)},
		{"unknown pattern key", rule(`{repository_id: "1", ref: {globb: x}}`, okGrant)},
		{"glob and regex together", rule(`{repository_id: "1", ref: {glob: x, regex: y}}`, okGrant)},
		{"empty glob", rule(`{repository_id: "1", ref: {glob: ""}}`, okGrant)},
		{"pattern is a list", rule(`{repository_id: "1", ref: {glob: [x]}}`, okGrant)},
		{"value too long", rule(`{repository_id: "`+strings.Repeat("1", 1025)+`"}`, okGrant)},
		{"unknown grant key", rule(okMatch, "{workspace: [ws], workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"grant is a list", rule(okMatch, "[ws]")},
		{"both kinds", rule(okMatch, "{workspaces: [ws], deployments: [d], max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"neither kind", rule(okMatch, "{max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"workspaces is a string", rule(okMatch, "{workspaces: ws, max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"empty workspaces", rule(okMatch, "{workspaces: [], max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"duplicate Workspace", rule(okMatch, "{workspaces: [a, a], max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"bad Workspace id", rule(okMatch, "{workspaces: [ws/x], max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"Workspace id is a mapping", rule(okMatch, "{workspaces: [{id: ws}], max_role: WORKSPACE_MEMBER, max_ttl: 5m}")},
		{"no max_role", rule(okMatch, "{workspaces: [ws], max_ttl: 5m}")},
		{"unknown role", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_BOSS, max_ttl: 5m}")},
		{"Organization role", rule(okMatch, "{workspaces: [ws], max_role: ORGANIZATION_OWNER, max_ttl: 5m}")},
		{"Workspace role on Deployments", rule(okMatch, "{deployments: [d], max_role: WORKSPACE_OWNER, max_ttl: 5m}")},
		{"DEPLOYMENT_ADMIN on Workspaces", rule(okMatch, "{workspaces: [ws], max_role: DEPLOYMENT_ADMIN, max_ttl: 5m}")},
		{"no max_ttl", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_MEMBER}")},
		{"max_ttl is a number", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 30}")},
		{"max_ttl is not a duration", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: half an hour}")},
		{"rate_limit none at the top", "rate_limit: none\n" + rule(okMatch, okGrant)},
		{"rate_limit is a number", rule(okMatch, okGrant) + "    rate_limit: 5\n"},
		{"rate_limit without rate", rule(okMatch, okGrant) + "    rate_limit: {burst: 5}\n"},
		{"unknown rate_limit key", rule(okMatch, okGrant) + "    rate_limit: {rate: 5/m, per: repo}\n"},
		{"rate without a period", rule(okMatch, okGrant) + "    rate_limit: {rate: \"5\"}\n"},
		{"burst is a list", rule(okMatch, okGrant) + "    rate_limit: {rate: 5/m, burst: [5]}\n"},
		{"rotations is a mapping", "rotations: {}\n"},
		{"unknown rotation key", rotation("    vault: {mount: secret, path: a, field: f}\n    schedule: daily\n")},
		{"rotation without a sink", rotation("")},
		{"unknown strategy", strings.Replace(rotation("    vault: {mount: secret, path: a, field: f}\n"), "strategy: rotate", "strategy: renew", 1)},
		{"rotation without token_id", strings.Replace(rotation("    vault: {mount: secret, path: a, field: f}\n"), "    token_id: cltok\n", "", 1)},
		{"unknown vault key", rotation("    vault: {mount: secret, path: a, field: f, version: 2}\n")},
		{"vault without field", rotation("    vault: {mount: secret, path: a}\n")},
		{"vault path is a list", rotation("    vault: {mount: secret, path: [a], field: f}\n")},
		{"github is a mapping", rotation("    github: {repository: acme/dags, secret: S}\n")},
		{"empty github", rotation("    github: []\n")},
		{"unknown github key", rotation("    github: [{repository: acme/dags, secret: S, name: x}]\n")},
		{"github target without a secret", rotation("    github: [{repository: acme/dags}]\n")},
		{"github target without an owner", rotation("    github: [{secret: S}]\n")},
		{"repository and organization", rotation("    github: [{repository: acme/dags, organization: acme, secret: S, visibility: all}]\n")},
		{"repository without a slash", rotation("    github: [{repository: dags, secret: S}]\n")},
		{"environment of an organization", rotation("    github: [{organization: acme, environment: prod, secret: S, visibility: all}]\n")},
		{"organization without visibility", rotation("    github: [{organization: acme, secret: S}]\n")},
		{"unknown visibility", rotation("    github: [{organization: acme, secret: S, visibility: public}]\n")},
		{"repository ids as strings", rotation("    github: [{organization: acme, secret: S, visibility: selected, selected_repository_ids: [\"1\"]}]\n")},
		{"repository ids without selected", rotation("    github: [{organization: acme, secret: S, selected_repository_ids: [1]}]\n")},
		{"secret name with a hyphen", rotation("    github: [{repository: acme/dags, secret: MY-SECRET}]\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := policy.Parse([]byte(tt.src)); err == nil {
				t.Fatalf("Parse accepts it; the table is wrong:\n%s", tt.src)
			}
			if err := validateYAML(t, s, tt.src); err == nil {
				t.Errorf("the schema accepts what Parse refuses:\n%s", tt.src)
			}
		})
	}
}

// TestSchemaAcceptsWhatParseAccepts: the forms the parser takes that a
// strict schema could easily refuse (numbers and booleans where strings
// go, a repo_property_ with capitals, none on a rule) pass both.
func TestSchemaAcceptsWhatParseAccepts(t *testing.T) {
	s := compileSchema(t)
	tests := []struct{ name, src string }{
		{"numbers where strings go", "rules:\n  - name: 7\n    match: {repository_id: 123456, ref_protected: true, ref: refs/heads/main, event_name: push}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}\n"},
		{"custom properties", "rules:\n  - name: r\n    match: {repository_owner_id: \"65\", repo_property_Astro-Team: data, repo_property_cost$center: \"42\", ref: refs/heads/main, event_name: push}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}\n"},
		{"patterns and lists", "rules:\n  - name: r\n    match: {repository: [acme/dags, {glob: \"acme/dags-*\"}], sub: {regex: \"repo:acme@65/.*\"}, repository_id: \"1\", ref: refs/heads/main, event_name: push}\n    grant: {deployments: [d1, d2], max_ttl: 24h}\n"},
		{"rate limits", "rate_limit: {rate: 30/h, burst: 10}\nrules:\n  - name: r\n    match: {repository_id: \"1\", ref: refs/heads/main, event_name: push}\n    grant: {workspaces: [ws], max_role: WORKSPACE_OWNER, max_ttl: 1h30m}\n    rate_limit: none\n  - name: s\n    match: {repository_id: \"1\", ref: refs/heads/main, event_name: push}\n    grant: {deployments: [d], max_role: DEPLOYMENT_ADMIN, max_ttl: 90s}\n    rate_limit: {rate: 10/15m, burst: \"3\"}\n"},
		{"a rotation", "rotations:\n  - name: r\n    token_id: cltok\n    strategy: replace\n    allow: {repository_id: \"1\", ref: refs/heads/main, event_name: schedule}\n    github:\n      - {repository: acme/dags, environment: prod, secret: S}\n      - {organization: acme, secret: S, visibility: selected, selected_repository_ids: [1, 2]}\n"},
		{"empty rules", "rules: []\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := policy.Parse([]byte(tt.src)); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := validateYAML(t, s, tt.src); err != nil {
				t.Errorf("the schema refuses what Parse accepts: %v", err)
			}
		})
	}
}

// yamlBlockRE finds the yaml code blocks of a Markdown file.
var yamlBlockRE = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestSchemaDocExamples: every example policy in docs/ (the policy files
// of docs/examples/ and every yaml block of the Markdown docs that is a
// whole policy) passes the schema; and each example policy file names the
// schema for editors in its first line.
func TestSchemaDocExamples(t *testing.T) {
	s := compileSchema(t)
	root := filepath.Join("..", "..", "docs")
	files, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := policy.Parse(data); err != nil {
			continue // not a policy (a file of policy test cases, say)
		}
		checked++
		if err := validateYAML(t, s, string(data)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		first, _, _ := strings.Cut(string(data), "\n")
		if want := "# yaml-language-server: $schema=" + policy.SchemaURL; first != want {
			t.Errorf("%s: first line %q, want %q", f, first, want)
		}
	}
	docs, err := filepath.Glob(filepath.Join(root, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range docs {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range yamlBlockRE.FindAllStringSubmatch(string(data), -1) {
			if _, err := policy.Parse([]byte(m[1])); err != nil {
				continue // a fragment (a grant, a workflow), not a policy
			}
			checked++
			if err := validateYAML(t, s, m[1]); err != nil {
				t.Errorf("%s: a policy example fails the schema: %v\n%s", f, err, m[1])
			}
		}
	}
	if checked < 4 {
		t.Errorf("checked %d example policies: the paths are wrong", checked)
	}
}
