package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A refusal tells the caller a stable reason and nothing about the policy:
// any workflow on GitHub can ask, and the rules are the platform team's.
// What came close, and why it failed, is for the operator's log and for
// `astro-sts policy check`, which the platform team runs; this file works
// it out.

// Miss is the first entry of a rule's match that does not hold for a set of
// claims: which claim, what the rule expects (as the policy file writes
// it) and what the token carries. Expected comes from the policy and Actual
// from the token: both are for the operator's eyes only.
type Miss struct {
	// Rule names the rule, or the rotation for [Rotation.Explain].
	Rule string `json:"rule"`
	// Held and Of count the rule's match entries that hold, and all of
	// them: 3 of 4 is closer than 1 of 2.
	Held int `json:"held"`
	Of   int `json:"of"`
	// Key is the claim of the first entry, in file order, that fails.
	Key string `json:"key"`
	// Expected is that entry's value as the policy file writes it, e.g.
	// "refs/heads/main", ["push", "workflow_dispatch"] or {glob: "acme/*"}.
	Expected string `json:"expected"`
	// Actual is the claim's value in the token, quoted, or "(absent)".
	Actual string `json:"actual"`
}

// absentClaim is a Miss's Actual when the token does not carry the claim.
const absentClaim = "(absent)"

// maxShown bounds the values a Miss quotes: a claim is the caller's text,
// and a pattern can be long.
const maxShown = 200

// Explain returns, for the rules whose match does not hold for c, the first
// match entry that fails, the closest rules first (fewest failing entries,
// then file order), at most n of them (n <= 0: all). Rules whose match
// holds are left out: if such a rule refused, it was the request that was
// too wide ([WidenError] says how), not the identity.
func (p *Policy) Explain(c Claims, n int) []Miss {
	if p == nil {
		return nil
	}
	type scored struct {
		miss  Miss
		fails int
	}
	var all []scored
	for i := range p.rules {
		ru := &p.rules[i]
		m, fails := ru.match.explain(c)
		if fails == 0 {
			continue
		}
		m.Rule = ru.name
		all = append(all, scored{m, fails})
	}
	// A stable sort keeps file order among rules equally close.
	slices.SortStableFunc(all, func(a, b scored) int { return cmp.Compare(a.fails, b.fails) })
	if n > 0 && len(all) > n {
		all = all[:n]
	}
	out := make([]Miss, len(all))
	for i, s := range all {
		out[i] = s.miss
	}
	return out
}

// Explain returns the first entry of the rotation's allow block that fails
// for c, and false if the block holds.
func (r *Rotation) Explain(c Claims) (Miss, bool) {
	if r == nil {
		return Miss{}, false
	}
	m, fails := r.allow.explain(c)
	m.Rule = r.Name
	return m, fails > 0
}

// explain counts the entries of ms that fail for c and describes the first.
func (ms matchSet) explain(c Claims) (Miss, int) {
	m := Miss{Of: len(ms)}
	fails := 0
	for _, mt := range ms {
		if mt.match(c) {
			m.Held++
			continue
		}
		if fails == 0 {
			m.Key, m.Expected = mt.claim, mt.describe()
			m.Actual = absentClaim
			if v, ok := c[mt.claim]; ok {
				m.Actual = quoteShown(v)
			}
		}
		fails++
	}
	return m, fails
}

// describe writes the matcher's value as the policy file would.
func (mt matcher) describe() string {
	if len(mt.alts) == 1 {
		return mt.alts[0].describe()
	}
	parts := make([]string, len(mt.alts))
	for i, a := range mt.alts {
		parts[i] = a.describe()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (a alt) describe() string {
	switch a.kind {
	case altGlob:
		return "{glob: " + quoteShown(a.value) + "}"
	case altRegex:
		return "{regex: " + quoteShown(a.value) + "}"
	}
	return quoteShown(a.value)
}

// quoteShown quotes s as a JSON string (also a YAML double-quoted scalar),
// shortened to maxShown bytes.
func quoteShown(s string) string {
	if len(s) > maxShown {
		s = strings.ToValidUTF8(s[:maxShown], "") + "..."
	}
	return jsonString(s)
}

// jsonString quotes s as a double-quoted string that YAML reads back as
// s: quotes, backslashes and everything YAML does not print as is
// (controls, DEL, the C1 range, NEL and the line and paragraph separators,
// U+FFFE and U+FFFF) are escaped, so a value stays on its line. Up to the
// basic plane the escapes are JSON's too.
//
// A suggested rule is printed in the job log, where the runner reads
// "##[name]" anywhere in a line as a workflow command: every "[" is
// written \u005b, so no claim can form one. White space other than the
// space and the invisible characters (zero-width, bidirectional controls,
// the soft hyphen, variation selectors) are escaped too: the platform team
// reviewing the rule sees them, and the action, which prints a space for
// the one and drops the other, prints the rule unchanged. Beyond the basic
// plane they take YAML's \U escape, which JSON does not have.
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20, r >= 0x7f && r <= 0x9f, r == 0x2028, r == 0x2029, r == 0xfffe, r == 0xffff, r == utf8.RuneError,
			r == '[', unicode.IsSpace(r) && r != ' ', Invisible(r) && r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		case Invisible(r):
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Invisible reports the characters that print as nothing: format
// characters (zero-width spaces and joiners, bidirectional controls, the
// soft hyphen, the byte-order mark), variation selectors and the other
// default-ignorable code points. A suggested rule escapes them, and the
// action leaves them out of every line it prints: one definition for both,
// so that the action prints a suggested rule unchanged.
func Invisible(r rune) bool {
	return unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) ||
		unicode.Is(unicode.Variation_Selector, r)
}
