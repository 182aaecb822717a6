package dockertest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDropSyntaxDirective(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"syntax first", "# syntax=docker/dockerfile:1\n\n# comment\nFROM scratch\n", "\n# comment\nFROM scratch\n"},
		{"among directives", "# escape=`\n#syntax = docker/dockerfile:1.7\r\nFROM scratch\n", "# escape=`\nFROM scratch\n"},
		{"upper case key", "# SYNTAX=docker/dockerfile:1\nFROM scratch\n", "FROM scratch\n"},
		{"no directive", "FROM scratch\n", "FROM scratch\n"},
		// After the first non-directive line a "# syntax=" is a comment:
		// BuildKit ignores it, and so does the copy.
		{"syntax after a comment", "# hello\n# syntax=docker/dockerfile:1\nFROM scratch\n", "# hello\n# syntax=docker/dockerfile:1\nFROM scratch\n"},
		{"syntax after an instruction", "FROM scratch\n# syntax=x\n", "FROM scratch\n# syntax=x\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, string(DropSyntaxDirective([]byte(tt.in)))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestBaseImages(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		wantErr  bool
	}{
		{"two stages", "FROM --platform=$BUILDPLATFORM golang:1.26 AS build\nRUN x\nFROM scratch\nCOPY --from=build / /\n", []string{"golang:1.26"}, false},
		{"stage reused", "from alpine:3 as base\nFROM base AS two\nFROM golang:1.26\nFROM alpine:3\n", []string{"alpine:3", "golang:1.26"}, false},
		{"stage named like its image", "FROM foo AS foo\n", []string{"foo"}, false},
		{"argument in the image", "ARG V=1\nFROM golang:$V\n", nil, true},
		{"no image", "FROM --platform=linux/amd64\n", nil, true},
		{"no FROM", "RUN true\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BaseImages([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestProjectDockerfile: the project's Dockerfile starts from one golang
// image (the one the stand-in replaces) and scratch, and its only
// directive is the syntax line the build copy drops.
func TestProjectDockerfile(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	bases, err := BaseImages(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(bases) != 1 || len(bases[0]) < len("golang:") || bases[0][:len("golang:")] != "golang:" {
		t.Errorf("base images %q, want one golang image", bases)
	}
	if got, want := len(src)-len(DropSyntaxDirective(src)), len("# syntax=docker/dockerfile:1\n"); got != want {
		t.Errorf("the build copy is %d bytes shorter, want %d (the syntax line only)", got, want)
	}
}
