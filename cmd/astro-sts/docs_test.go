package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestDocsTestCommands: every `go test` command in the README and docs/
// names packages that exist and -run and -bench patterns that select at
// least one test or benchmark there (at the top level: sub-tests are named
// at run time), so that a renamed test does not leave a command that
// quietly runs nothing.
func TestDocsTestCommands(t *testing.T) {
	n := 0
	for path, doc := range readDocs(t) {
		for _, cmd := range goTestCommands(doc) {
			n++
			args := shellWords(cmd)
			var pkgs []string
			patterns := map[string]string{} // flag -> pattern
			for i := 0; i < len(args); i++ {
				switch a := args[i]; {
				case (a == "-run" || a == "-bench") && i+1 < len(args):
					patterns[a] = args[i+1]
					i++
				case strings.HasPrefix(a, "./"):
					pkgs = append(pkgs, a)
				}
			}
			if len(pkgs) == 0 {
				t.Errorf("%s: %q names no package", path, cmd)
			}
			for _, pkg := range pkgs {
				dir := filepath.Join("../..", strings.TrimSuffix(strings.TrimSuffix(pkg, "..."), "/"))
				if st, err := os.Stat(dir); err != nil || !st.IsDir() {
					t.Errorf("%s: %q: no package %s", path, cmd, pkg)
					continue
				}
				if strings.HasSuffix(pkg, "...") {
					continue
				}
				funcs := testFuncs(t, dir)
				for flag, pattern := range patterns {
					kinds := "Test|Example|Fuzz"
					if flag == "-bench" {
						kinds = "Benchmark"
					}
					if !selectsAny(pattern, kinds, funcs) {
						t.Errorf("%s: %q: %s %s selects nothing in %s", path, cmd, flag, pattern, pkg)
					}
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("found %d go test commands in the docs; the parse is wrong", n)
	}
}

// TestArchitectureNamesEveryPackage: docs/architecture.md's tables are the
// map of internal/ and of the test support in internal/testkit/: a package
// missing from them is one a newcomer cannot place.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	doc := readDocs(t)["docs/architecture.md"]
	dirs, err := os.ReadDir("../../internal")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if d.IsDir() && !strings.Contains(doc, "`internal/"+d.Name()+"`") {
			t.Errorf("docs/architecture.md does not name `internal/%s`", d.Name())
		}
	}
	kits, err := os.ReadDir("../../internal/testkit")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range kits {
		if d.IsDir() && !strings.Contains(doc, "`"+d.Name()+"`") && !strings.Contains(doc, "`internal/testkit/"+d.Name()+"`") {
			t.Errorf("docs/architecture.md does not name `internal/testkit/%s`", d.Name())
		}
	}
}

// goTestCommands are the `go test` commands of doc: in fenced code blocks,
// one per line, and in code spans, which a paragraph may wrap.
func goTestCommands(doc string) []string {
	var cmds []string
	add := func(s string) {
		for {
			i := strings.Index(s, "go test ")
			if i < 0 {
				return
			}
			s = s[i:]
			end := len(s)
			if j := strings.IndexAny(s, "#\n"); j >= 0 {
				end = j
			}
			cmds = append(cmds, strings.TrimSpace(s[:end]))
			s = s[end:]
		}
	}
	fence := regexp.MustCompile("(?ms)^```[^\n]*\n(.*?)^```")
	for _, m := range fence.FindAllStringSubmatch(doc, -1) {
		add(m[1])
	}
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(fence.ReplaceAllString(doc, ""), -1) {
		add(strings.ReplaceAll(m[1], "\n", " "))
	}
	return cmds
}

// shellWords splits a command line at blanks, honouring single and double
// quotes.
func shellWords(s string) []string {
	var (
		words []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// testFuncs lists the Test, Example, Fuzz and Benchmark functions of the
// test files in dir.
func testFuncs(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Example|Fuzz|Benchmark)\w*)\(`)
	var funcs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			funcs = append(funcs, m[1])
		}
	}
	return funcs
}

// selectsAny reports whether pattern, as go test reads it (its first
// level, before an unbracketed /), matches a function of kinds. '^$' is
// the usual "no tests" and selects nothing on purpose.
func selectsAny(pattern, kinds string, funcs []string) bool {
	if pattern == "^$" {
		return true
	}
	top, _, _ := strings.Cut(pattern, "/")
	re, err := regexp.Compile(top)
	if err != nil {
		return false
	}
	kind := regexp.MustCompile(`^(?:` + kinds + `)`)
	for _, f := range funcs {
		if kind.MatchString(f) && re.MatchString(f) {
			return true
		}
	}
	return false
}

// TestEmulatorFlagsDocumented: docs/emulator.md's table of flags has a row
// for every flag of `astro-sts emulator`, with the default its --help
// gives, and none for a flag the command does not take.
func TestEmulatorFlagsDocumented(t *testing.T) {
	var stdout, stderr strings.Builder
	if err := run(t.Context(), []string{"astro-sts", "emulator", "--help"}, nil, &stdout, &stderr); exitCode(err, &stderr) != 0 {
		t.Fatalf("emulator --help: %v\n%s", err, stderr.String())
	}
	flags := map[string]string{} // name -> default, "" when the zero value
	var last string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if m := regexp.MustCompile(`^  -([a-z-]+)`).FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = ""
		}
		if m := regexp.MustCompile(`\(default "?([^"]*?)"?\)$`).FindStringSubmatch(line); m != nil && last != "" {
			flags[last] = m[1]
		}
	}
	if len(flags) < 5 {
		t.Fatalf("found %d flags in emulator --help; the parse is wrong:\n%s", len(flags), stderr.String())
	}
	doc := readDocs(t)["docs/emulator.md"]
	rows := map[string]string{} // name -> default cell
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z-]+)` \\| ([^|]*) \\|").FindAllStringSubmatch(doc, -1) {
		rows[m[1]] = strings.TrimSpace(m[2])
	}
	for name, def := range flags {
		cell, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("docs/emulator.md has no row for --%s", name)
		case def != "" && strings.Trim(cell, "`") != def:
			t.Errorf("docs/emulator.md gives --%s the default %s; --help says %q", name, cell, def)
		}
	}
	for name := range rows {
		if _, ok := flags[name]; !ok {
			t.Errorf("docs/emulator.md has a row for --%s, which the emulator does not take", name)
		}
	}
}

// TestDocsLinksResolve: every relative link of the README and docs/ names
// a file of the repository and, with a #fragment into a doc, one of its
// headings (as GitHub makes anchors of them), so that a renamed section
// does not strand its readers.
func TestDocsLinksResolve(t *testing.T) {
	docs := readDocs(t)
	anchors := map[string]map[string]bool{}
	fence := regexp.MustCompile("(?ms)^```.*?^```")
	for path, doc := range docs {
		anchors[path] = map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^#+ (.*)$`).FindAllStringSubmatch(fence.ReplaceAllString(doc, ""), -1) {
			anchors[path][githubAnchor(m[1])] = true
		}
	}
	links := 0
	for path, doc := range docs {
		for _, m := range regexp.MustCompile(`\]\(([^)\s]+)\)`).FindAllStringSubmatch(doc, -1) {
			target, fragment, _ := strings.Cut(m[1], "#")
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			file := path
			if target != "" {
				file = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(path), target)))
				if _, err := os.Stat(filepath.Join("../..", file)); err != nil {
					t.Errorf("%s links %s: no such file", path, m[1])
					continue
				}
			}
			if a, ok := anchors[file]; ok && fragment != "" && !a[fragment] {
				t.Errorf("%s links %s: %s has no such heading", path, m[1], file)
			}
		}
	}
	if links < 30 {
		t.Fatalf("found %d links; the parse is wrong", links)
	}
}

// githubAnchor is the fragment GitHub gives a heading: lower case, spaces
// as hyphens, punctuation other than - and _ dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
