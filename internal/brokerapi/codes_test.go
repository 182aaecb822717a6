package brokerapi

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestListsAreComplete: every Code* and Reason* constant of codes.go, read
// from the source, is in [Codes] or [Reasons], which clients check their
// explanations against; a new code cannot be left out of them.
func TestListsAreComplete(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes, reasons := Codes(), Reasons()
	n := 0
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Errorf("%s is not a string literal", name.Name)
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				n++
				switch {
				case strings.HasPrefix(name.Name, "Code") && !slices.Contains(codes, v):
					t.Errorf("%s (%q) is not in Codes()", name.Name, v)
				case strings.HasPrefix(name.Name, "Reason") && !slices.Contains(reasons, v):
					t.Errorf("%s (%q) is not in Reasons()", name.Name, v)
				}
			}
		}
	}
	if n != len(codes)+len(reasons) {
		t.Errorf("codes.go declares %d constants; Codes and Reasons list %d", n, len(codes)+len(reasons))
	}
}
