package action

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/sethvargo/go-githubactions"
)

// The runner reads workflow commands out of every line a step prints
// (actions/runner ActionCommand): "::name::data" when the line starts with
// "::" after leading whitespace, and the legacy "##[name]data" anywhere in
// the line. A claim of the job's OIDC token, a broker answer and an input
// are all text someone else chose, and the action prints them; a value
// such as "x##[set-output name=token]FAKE" must stay a value. So every line
// that carries such text goes through [logLine], and every field through
// [cleanText]: no line break (the runner splits on CR and LF, and the log
// viewer on more), no "##[", no "::" at the start, and no invisible
// character that could hide one from the reader or, in a culture-aware
// comparison such as the runner's, from the parser.

// cleanText makes one field of untrusted text safe inside a log line or a
// summary cell: control and space characters become one space, runs of
// them collapse, invisible characters go, and it is cut to limit runes;
// then [defuse] breaks what could read as a workflow command.
func cleanText(s string, limit int) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range s {
		if ignorable(r) {
			continue
		}
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if n >= limit {
			b.WriteString("…")
			break
		}
		if space {
			b.WriteByte(' ')
			n++
			space = false
		}
		b.WriteRune(r)
		n++
	}
	return defuse(b.String())
}

// logLine makes a whole line safe to print: as [cleanText], but it keeps
// the line's spacing (each control or space character becomes one space,
// so indentation and aligned columns survive) and its length.
func logLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case ignorable(r):
		case unicode.IsControl(r) || unicode.IsSpace(r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return defuse(b.String())
}

// defuse breaks, in text without line breaks, what the runner would read
// as a workflow command: "##[" becomes `##\[` and a leading "::" (after
// spaces) `:\:`. The backslash shows the reader that the text was changed.
func defuse(s string) string {
	s = strings.ReplaceAll(s, "##[", `##\[`)
	lead := len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
	if strings.HasPrefix(s[lead:], "::") {
		s = s[:lead+1] + `\` + s[lead+1:]
	}
	return s
}

// ignorable reports the characters that print as nothing: format
// characters (zero-width spaces and joiners, bidirectional controls, the
// soft hyphen, the byte-order mark) and the other default-ignorable ones.
// Between "#", "#" and "[" they would hide the command from the reader and,
// in the runner's culture-aware string search, perhaps not from the parser.
func ignorable(r rune) bool {
	return unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) ||
		unicode.Is(unicode.Variation_Selector, r)
}

// infof prints a line of the job log through [logLine].
func infof(a *githubactions.Action, format string, args ...any) {
	a.Infof("%s", logLine(fmt.Sprintf(format, args...)))
}

// warningf prints a warning annotation through [logLine].
func warningf(a *githubactions.Action, format string, args ...any) {
	a.Warningf("%s", logLine(fmt.Sprintf(format, args...)))
}

// ReportError prints err as the step's error annotation, through
// [logLine]: an error can quote an input or the broker's message.
func ReportError(a *githubactions.Action, err error) {
	a.Errorf("%s", logLine(err.Error()))
}
