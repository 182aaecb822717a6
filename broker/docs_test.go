package broker_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestRefusalCodesDocumented: every code and reason the broker can answer
// (the Code* and Reason* constants of internal/brokerapi/codes.go, read from the source so
// that a new one cannot be forgotten) is in docs/policy.md's "Why was I
// refused?", which a workflow's author reads to act on it.
func TestRefusalCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Why was I refused?\n")
	if !ok {
		t.Fatal(`docs/policy.md has no "## Why was I refused?" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	consts := answerConstants(t, "../internal/brokerapi/codes.go")
	if len(consts) < 20 {
		t.Fatalf("found %d Code* and Reason* constants in brokerapi/codes.go; the parse is wrong", len(consts))
	}
	for name, value := range consts {
		if !strings.Contains(section, "`"+value+"`") {
			t.Errorf("%s (`%s`) is not in docs/policy.md's \"Why was I refused?\"", name, value)
		}
	}
}

// TestMetricsDocumented: every metric the broker registers (the
// "astro_sts_*" names of metrics.go, read from the source) is in
// docs/operations.md's list, which operators build their alerts from.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "metrics.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if v, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(v, "astro_sts_") {
				names = append(names, v)
			}
		}
		return true
	})
	if len(names) < 10 {
		t.Fatalf("found %d metric names in metrics.go; the parse is wrong", len(names))
	}
	for _, name := range names {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("metric %s is not in docs/operations.md", name)
		}
	}
}

// TestEndpointsDocumented: every route the broker registers (the
// "METHOD /path" patterns of broker.go, read from the source) is in
// docs/architecture.md's "Endpoints", and that table lists no other.
func TestEndpointsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Endpoints\n")
	if !ok {
		t.Fatal(`docs/architecture.md has no "## Endpoints" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	f, err := parser.ParseFile(token.NewFileSet(), "broker.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if v, err := strconv.Unquote(lit.Value); err == nil && regexp.MustCompile(`^(GET|POST) /\S+$`).MatchString(v) {
				routes[v] = true
			}
		}
		return true
	})
	if len(routes) < 5 {
		t.Fatalf("found %d routes in broker.go; the parse is wrong", len(routes))
	}
	for r := range routes {
		if !strings.Contains(section, "| `"+r+"` |") {
			t.Errorf("route %s is not in docs/architecture.md's Endpoints", r)
		}
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `((?:GET|POST) /[^`?]+)(?:\\?[^`]*)?` \\|").FindAllStringSubmatch(section, -1) {
		if !routes[m[1]] {
			t.Errorf("docs/architecture.md's Endpoints lists %s, which the broker does not serve", m[1])
		}
	}
}

// TestBrokerFilesDocumented: docs/architecture.md's "The broker's files"
// is the map of this package: every file of it (tests aside) has a row,
// and the table names no file that is gone.
func TestBrokerFilesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## The broker's files\n")
	if !ok {
		t.Fatal(`docs/architecture.md has no "## The broker's files" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+\\.go)` \\|").FindAllStringSubmatch(section, -1) {
		rows[m[1]] = true
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			files[n] = true
			if !rows[n] {
				t.Errorf("broker/%s has no row in docs/architecture.md's \"The broker's files\"", n)
			}
		}
	}
	for n := range rows {
		if !files[n] {
			t.Errorf("docs/architecture.md's \"The broker's files\" lists %s, which broker/ does not have", n)
		}
	}
}

// answerConstants returns the string constants of file whose names start
// with Code or Reason, by name.
func answerConstants(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		gd, ok := n.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			return true
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, id := range vs.Names {
				if !strings.HasPrefix(id.Name, "Code") && !strings.HasPrefix(id.Name, "Reason") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[id.Name] = v
			}
		}
		return false
	})
	return out
}
