package dockertest

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// directive is a Dockerfile parser directive: a "# key=value" comment
// before anything else in the file.
var directive = regexp.MustCompile(`^#\s*([a-zA-Z]+)\s*=\s*\S.*$`)

// DropSyntaxDirective returns src without its `# syntax=` parser
// directive, which makes BuildKit pull the named frontend image; BuildKit's
// built-in frontend builds the rest. Every other byte is kept.
func DropSyntaxDirective(src []byte) []byte {
	var out bytes.Buffer
	lines := bytes.SplitAfter(src, []byte("\n"))
	inDirectives := true
	for _, line := range lines {
		if inDirectives {
			m := directive.FindSubmatch(bytes.TrimRight(line, "\r\n"))
			if m == nil {
				inDirectives = false
			} else if strings.EqualFold(string(m[1]), "syntax") {
				continue
			}
		}
		out.Write(line)
	}
	return out.Bytes()
}

// BaseImages returns the images the Dockerfile's stages start from, in
// order and without repeats: every FROM's image except scratch and the
// names of earlier stages. An image written with a build argument
// ($VAR) is an error: which image it means depends on the build.
func BaseImages(src []byte) ([]string, error) {
	stages := map[string]bool{}
	seen := map[string]bool{}
	var images []string
	found := false
	for i, line := range strings.Split(string(src), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.EqualFold(fields[0], "FROM") {
			continue
		}
		found = true
		fields = fields[1:]
		for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
			fields = fields[1:] // --platform=...
		}
		if len(fields) == 0 {
			return nil, fmt.Errorf("dockertest: Dockerfile line %d: FROM without an image", i+1)
		}
		image := fields[0]
		earlierStage := stages[strings.ToLower(image)]
		if len(fields) >= 3 && strings.EqualFold(fields[1], "AS") {
			stages[strings.ToLower(fields[2])] = true
		}
		switch {
		case strings.Contains(image, "$"):
			return nil, fmt.Errorf("dockertest: Dockerfile line %d: FROM %s depends on a build argument", i+1, image)
		case image == "scratch", earlierStage, seen[image]:
			continue
		}
		seen[image] = true
		images = append(images, image)
	}
	if !found {
		return nil, errNoFrom
	}
	return images, nil
}
