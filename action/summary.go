package action

import (
	"fmt"
	"strings"
	"time"
)

// exchangeSummary is the step summary of an exchange: where the token
// reaches and until when, and which rule allowed it. Never the value.
func exchangeSummary(x exchanged, in inputs, now time.Time, legacy bool) string {
	var b strings.Builder
	b.WriteString("### Astro API token issued\n\n")
	b.WriteString("| | |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	if x.OrganizationID != "" {
		row("Organization", md(x.OrganizationID))
	}
	if x.WorkspaceID != "" {
		row("Workspace", md(x.WorkspaceID))
	}
	if x.DeploymentID != "" {
		row("Deployment", md(x.DeploymentID))
	}
	row("Role", md(x.Role))
	row("Expires", md(x.ExpiresAt.UTC().Format(time.RFC3339))+" ("+untilText(x.ExpiresAt, now)+")")
	row("Rule", md(x.Rule))
	row("Token id", md(x.TokenID))
	switch {
	case in.exportEnv:
		row("Exported as", md(in.envName))
	default:
		row("Exported as", "not exported (export-env: false)")
	}
	switch {
	case in.revoke:
		row("Revocation", "by the post step; the broker reaps it at expiry otherwise")
	default:
		row("Revocation", "none (revoke: false): it stays valid until it expires")
	}
	if legacy {
		b.WriteString("\n> [!NOTE]\n> " + legacyNote(in) + "\n")
	}
	return b.String()
}

// rotateSummary is the step summary of a successful rotation.
func rotateSummary(r rotated) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Astro API token rotated: %s\n\n", md(r.Name))
	b.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| Token id | %s |\n| Strategy | %s |\n| Rotated at | %s |\n", md(r.TokenID), md(r.Strategy), md(r.RotatedAt))
	writeSinks(&b, r.Sinks)
	return b.String()
}

// rotateFailureSummary is the step summary of a rotation that failed in
// one or more sinks.
func rotateFailureSummary(name string, e *BrokerError) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Astro API token rotation failed: %s\n\n", md(name))
	fmt.Fprintf(&b, "The broker answered %d", e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", md(e.Code))
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", md(e.Message))
	}
	b.WriteString(".\n")
	writeSinks(&b, e.Sinks)
	return b.String()
}

func writeSinks(b *strings.Builder, sinks []SinkResult) {
	if len(sinks) == 0 {
		return
	}
	b.WriteString("\n| Sink | Target | Version | Result |\n|---|---|---|---|\n")
	for _, s := range sinks {
		result := "updated"
		if s.Error != "" {
			result = "failed: " + md(cleanText(s.Error, 300))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", md(s.Kind), md(s.Target), md(s.Version), result)
	}
}

func untilText(exp, now time.Time) string {
	d := exp.Sub(now).Round(time.Second)
	if d <= 0 {
		return "already expired"
	}
	return "in " + d.String()
}

// md shows untrusted text (a claim, a broker field, an input) in the step
// summary, cleaned by [cleanText], as an HTML code element in which every
// character but ASCII letters, digits and the space is a numeric character
// reference. CommonMark reads a character reference as a literal character,
// never as markup, a table's "|" or a line break, and GitHub shows the text
// exactly; and the source holds none of the characters GFM's autolinks
// start from (":", "/", ".", "@"), nor GitHub's @mentions and #references,
// which skip code elements anyway. A markdown code span would not be
// linked either, but it would hold a URL as it is, for any other reader of
// the file to link.
func md(s string) string {
	s = cleanText(s, 500)
	if s == "" {
		return "–"
	}
	return "<code>" + htmlText(s) + "</code>"
}

// htmlText writes every character of s other than ASCII letters, digits,
// the space and the line feed as a numeric character reference.
func htmlText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == ' ', r == '\n':
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, "&#%d;", r)
		}
	}
	return b.String()
}
