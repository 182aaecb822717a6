package action

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// The runner reads workflow commands out of every line a step prints
// (actions/runner ActionCommand): "::name::data" when the line starts with
// "::" after leading white space, and the legacy "##[name]data" anywhere in
// the line. A claim of the job's OIDC token, a broker answer and an input
// are all text someone else chose, and the action prints them; a value
// such as "x##[set-output name=token]FAKE" must stay a value. So every line
// that carries such text goes through [logLine], and every field through
// [cleanText]: no line break (the runner splits on CR and LF, and the log
// viewer on more), no invisible character, and what is left cannot be
// found as a command by the runner's search.
//
// That search is culture-aware: .NET's IndexOf("##[") and StartsWith("::")
// use ICU's collation on Linux, which weighs hundreds of code points (most
// combining marks, U+0640 ARABIC TATWEEL, ...) as nothing, so "#\u0640#["
// matches "##[". No table of such characters is kept; the rules hold
// whatever sits between the "#", "#" and "[", because every printable
// ASCII character has a weight of its own in ICU's root collation:
//   - a "[" that does not directly follow a printable ASCII character other
//     than "#" gets a "\" before it, so between any "#" and any "[" there
//     is a character that the search must match and that is not "#";
//   - a line's first character after its spaces must be printable ASCII
//     other than ":", or a "\" goes before it, so the line cannot start
//     with "::" for the search, whatever comes next.
// The suggested rule's lines pass unchanged: their only "[" follow a space.

// cleanText makes one field of untrusted text safe inside a log line or a
// summary cell: control and space characters become one space, runs of
// them collapse, invisible characters go, and it is cut to limit runes;
// then every "[" is defused as [logLine] does, and a leading ":" too.
func cleanText(s string, limit int) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range s {
		if policy.Invisible(r) {
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
	s = defuseBrackets(b.String())
	if strings.HasPrefix(s, ":") {
		s = `\` + s
	}
	return s
}

// logLine makes a whole line safe to print: as [cleanText], but it keeps
// the line's spacing (each control or space character becomes one space,
// so indentation and aligned columns survive) and its length, and its
// first character after the spaces is always printable ASCII other than
// ":" (else a "\" goes before it).
func logLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case policy.Invisible(r):
		case unicode.IsControl(r) || unicode.IsSpace(r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	s = defuseBrackets(b.String())
	lead := len(s) - len(strings.TrimLeft(s, " "))
	if lead < len(s) && (s[lead] == ':' || !printableASCII(rune(s[lead]))) {
		s = s[:lead] + `\` + s[lead:]
	}
	return s
}

// defuseBrackets puts a "\" before every "[" that does not directly follow
// a printable ASCII character other than "#" (the start of s counts as
// not). The "\" shows the reader where the text was changed; a "[" that
// already follows one is left alone, so defusing twice changes nothing.
func defuseBrackets(s string) string {
	if !strings.Contains(s, "[") {
		return s
	}
	var b strings.Builder
	prev := rune(-1)
	for _, r := range s {
		if r == '[' && (prev == '#' || !printableASCII(prev)) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
		prev = r
	}
	return b.String()
}

// printableASCII reports the characters from space to "~": each has a
// weight of its own in ICU's root collation, so a culture-aware search
// cannot skip over it.
func printableASCII(r rune) bool { return r >= ' ' && r <= '~' }

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
