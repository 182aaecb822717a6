package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"

	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/sink"
)

// Every variable of serve's and rotate's configuration is documented: in
// the command's --help, or for the sinks' settings in docs/sinks.md, to
// which both helps point. A setting added to internal/config without its
// line of documentation fails here.
func TestEverySettingDocumented(t *testing.T) {
	sinksDoc, err := os.ReadFile("../../docs/sinks.md")
	if err != nil {
		t.Fatal(err)
	}
	sinkVars := map[string]bool{}
	for _, p := range variables(t, &sink.Config{}) {
		sinkVars[p.Key] = true
	}
	for _, tc := range []struct {
		command, help string
		cfg           any
	}{
		{"serve", serveAbout, &config.Broker{}},
		{"rotate", rotateAbout, &config.Rotate{}},
	} {
		for _, p := range variables(t, tc.cfg) {
			k := p.Key
			doc, where := tc.help, tc.command+" --help"
			if sinkVars[k] {
				doc, where = string(sinksDoc), "docs/sinks.md"
			}
			if !strings.Contains(doc, k) {
				t.Errorf("%s: %s does not mention %s", tc.command, where, k)
				continue
			}
			// The help's line of a variable gives its default.
			if !sinkVars[k] && p.HasDefaultValue && !strings.Contains(helpLine(tc.help, k), p.DefaultValue) {
				t.Errorf("%s --help: the line of %s does not give its default %q", tc.command, k, p.DefaultValue)
			}
		}
	}
}

// The settings are documented once, each in its doc, with the default the
// code has: deploy.md's "Settings" table has one row per variable of serve
// and rotate (outside the sinks' section), naming the default, or
// "required" for exactly those the configuration refuses to go without;
// sinks.md's tables have one row per sink variable. No other table in the
// docs has a row for a setting, so that two docs cannot give two defaults.
func TestSettingsTables(t *testing.T) {
	docs := readDocs(t)
	sinkVars := map[string]env.FieldParams{}
	for _, p := range variables(t, &sink.Config{}) {
		sinkVars[p.Key] = p
	}
	own := map[string]env.FieldParams{}
	for _, cfg := range []any{&config.Broker{}, &config.Rotate{}} {
		for _, p := range variables(t, cfg) {
			if _, ok := sinkVars[p.Key]; !ok {
				own[p.Key] = p
			}
		}
	}
	// What the configuration says of an empty environment: the variables
	// it requires.
	_, emptyErr := config.LoadBroker(map[string]string{})
	if emptyErr == nil {
		t.Fatal("an empty environment loads")
	}

	// rows[variable] lists "doc: row" for every table row whose first cell
	// names the variable.
	rows := map[string][]string{}
	for name, doc := range docs {
		for _, line := range strings.Split(doc, "\n") {
			cells := strings.Split(line, "|")
			if !strings.HasPrefix(line, "|") || len(cells) < 3 {
				continue
			}
			for _, m := range regexp.MustCompile("`([A-Z][A-Z0-9_]*)`").FindAllStringSubmatch(cells[1], -1) {
				rows[m[1]] = append(rows[m[1]], name+": "+line)
			}
		}
	}

	settings := section(t, docs["docs/deploy.md"], "## Settings")
	for k, p := range own {
		var found []string
		for _, r := range rows[k] {
			if strings.HasPrefix(r, "docs/deploy.md: ") && strings.Contains(settings, strings.TrimPrefix(r, "docs/deploy.md: ")) {
				found = append(found, r)
			}
		}
		if len(rows[k]) != 1 || len(found) != 1 {
			t.Errorf("%s: want exactly one row, in docs/deploy.md's Settings; rows:\n%s", k, strings.Join(rows[k], "\n"))
			continue
		}
		def := strings.TrimSpace(strings.Split(found[0], "|")[2])
		required := regexp.MustCompile(`(^|\n)` + k + ` is required`).MatchString(emptyErr.Error())
		switch {
		case p.HasDefaultValue && def != "`"+p.DefaultValue+"`":
			t.Errorf("%s: docs/deploy.md gives the default %s, the code %q", k, def, p.DefaultValue)
		case required != (def == "required"):
			t.Errorf("%s: docs/deploy.md says %q; required by the configuration: %v", k, def, required)
		}
	}
	for k, p := range sinkVars {
		if len(rows[k]) != 1 || !strings.HasPrefix(rows[k][0], "docs/sinks.md: ") {
			t.Errorf("%s: want exactly one row, in docs/sinks.md; rows:\n%s", k, strings.Join(rows[k], "\n"))
			continue
		}
		if p.HasDefaultValue && !strings.Contains(rows[k][0], "`"+p.DefaultValue+"`") {
			t.Errorf("%s: docs/sinks.md's row does not give the default %q", k, p.DefaultValue)
		}
	}
	// And the Settings table names nothing else.
	for _, line := range strings.Split(settings, "\n") {
		if m := regexp.MustCompile("^\\| `([A-Z][A-Z0-9_]*)`").FindStringSubmatch(line); m != nil {
			if _, ok := own[m[1]]; !ok {
				t.Errorf("docs/deploy.md's Settings has a row for %s, which serve and rotate do not read", m[1])
			}
		}
	}
}

// notSettings are the ASTRO_* names the docs and manifests may use that
// are not the configuration's: what the action exports, example secret
// names, and the test tooling's variables.
var notSettings = map[string]string{
	"ASTRO_API_TOKEN":     "the token the action exports, as the astro CLI reads it",
	"ASTRO_CI_TOKEN":      "an example GitHub secret name",
	"ASTRO_TOKEN":         "an example variable of a workflow step",
	"ASTRO_STS_SOAK_LONG": "the soak test's long run",
	"ASTRO_STS_VAULT_BIN": "the Vault binary the tests use",
	"ASTRO_STS_CACHE":     "where tools/vault/build.sh caches Vault",
}

// TestNoUnknownSettingDocumented: every ASTRO_* variable the README, the
// docs, their examples and the manifests in deploy/ name is one the
// configuration reads (or one of notSettings): a misspelled or retired
// variable in a doc or a manifest is silently ignored by the broker.
func TestNoUnknownSettingDocumented(t *testing.T) {
	known := map[string]bool{}
	for _, cfg := range []any{&config.Broker{}, &config.Rotate{}, &sink.Config{}} {
		for _, p := range variables(t, cfg) {
			known[p.Key] = true
		}
	}
	files := readDocs(t)
	for _, pattern := range []string{"../../docs/examples/*", "../../deploy/*.yaml", "../../deploy/kubernetes/*/*.yaml", "../../deploy/kubernetes/overlays/*/*.yaml"} {
		paths, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(p, "../../")] = string(b)
		}
	}
	if len(files) < 20 {
		t.Fatalf("read %d files; the paths are wrong", len(files))
	}
	name := regexp.MustCompile(`\bASTRO_[A-Z0-9_]*[A-Z0-9]\b(?:_?\*)?`)
	for path, text := range files {
		for _, v := range name.FindAllString(text, -1) {
			if strings.HasSuffix(v, "*") { // a family: ASTRO_STS_VAULT_*
				continue
			}
			if _, ok := notSettings[v]; !known[v] && !ok {
				t.Errorf("%s names %s, which no configuration reads", path, v)
			}
		}
	}
}

// TestReadmeLinksEveryDoc: the README's overview is the way into docs/.
func TestReadmeLinksEveryDoc(t *testing.T) {
	docs := readDocs(t)
	for path := range docs {
		if path != "README.md" && !strings.Contains(docs["README.md"], "("+path+")") {
			t.Errorf("README.md does not link %s", path)
		}
	}
}

// readDocs returns README.md and docs/*.md by path from the module root.
func readDocs(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, "../../README.md")
	docs := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs[strings.TrimPrefix(p, "../../")] = string(b)
	}
	if len(docs) < 10 {
		t.Fatalf("read %d docs; the paths are wrong", len(docs))
	}
	return docs
}

// section returns the part of doc from heading to the next heading of the
// same level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("no %q section", heading)
	}
	level := heading[:strings.Index(heading, " ")+1]
	if end := strings.Index(rest, "\n"+level); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

// helpLine is the line of help that lists variable k.
func helpLine(help, k string) string {
	for _, line := range strings.Split(help, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == k {
			return line
		}
	}
	return ""
}

// variables are the settings of cfg, each once (a *_FILE variable is read
// both as a name and as a file's content).
func variables(t *testing.T, cfg any) []env.FieldParams {
	t.Helper()
	params, err := env.GetFieldParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []env.FieldParams
	for _, p := range params {
		if !slices.ContainsFunc(out, func(q env.FieldParams) bool { return q.Key == p.Key }) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no variables in %T", cfg)
	}
	return out
}
