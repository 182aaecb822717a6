package policy

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxPatternLen bounds every string, glob and regex of a match block.
const MaxPatternLen = 1024

// identityClaims are the claims that say who is asking. Every rule and
// rotation must constrain at least one of them, as vault-plugin-auth-jwt
// refuses a role without bound claims: a rule on event_name alone would
// grant every repository on GitHub.
var identityClaims = []string{"repository", "repository_id", "repository_owner", "repository_owner_id", "sub", "job_workflow_ref"}

// numericClaims are never strings in a GitHub token, so a matcher on them
// could never hold: refusing it at load catches the mistake.
var numericClaims = map[string]bool{"exp": true, "iat": true, "nbf": true}

// claimNameRE is every claim name a GitHub token can carry: its own claims
// are lower-case letters, digits and '_'; a repository custom property
// arrives as repo_property_<name>, and a property's name may hold capitals,
// digits and '_', '-', '$' and '#', up to 75 characters (GitHub's rule for
// custom property names). Anything else is a typo, not a claim.
var claimNameRE = regexp.MustCompile(`^(?:[a-z][a-z0-9_]{0,127}|repo_property_[A-Za-z0-9_$#-]{1,75})$`)

type altKind int

const (
	altExact altKind = iota
	altGlob
	altRegex
)

// alt is one alternative of a matcher.
type alt struct {
	kind  altKind
	value string         // the exact string, glob or regex source
	re    *regexp.Regexp // altRegex: compiled as ^(?:value)$
}

func (a alt) match(s string) bool {
	switch a.kind {
	case altExact:
		return s == a.value
	case altGlob:
		if s == "" {
			return false // an empty claim matches only an explicit ""
		}
		ok, err := path.Match(a.value, s)
		return err == nil && ok
	case altRegex:
		return s != "" && a.re.MatchString(s)
	}
	return false
}

// literalPrefix is the fixed text every match of a starts with, and whether
// that is all of it (the pattern has no wildcard).
func (a alt) literalPrefix() (string, bool) {
	switch a.kind {
	case altExact:
		return a.value, true
	case altGlob:
		if i := strings.IndexAny(a.value, `*?[\`); i >= 0 {
			return a.value[:i], false
		}
		return a.value, true
	case altRegex:
		return a.re.LiteralPrefix()
	}
	return "", false
}

// pinsIdentity reports whether a, as a matcher of claim, pins down who is
// asking at least to one owner. An exact value does; a pattern does only if
// its fixed prefix includes the owner ("acme/..." for repository and
// job_workflow_ref, "repo:acme/..." for sub). Patterns on ids and on
// repository_owner never do: "acme*" also matches "acme-evil".
func (a alt) pinsIdentity(claim string) bool {
	prefix, complete := a.literalPrefix()
	if complete {
		return true
	}
	switch claim {
	case "repository", "job_workflow_ref":
		i := strings.Index(prefix, "/")
		return i > 0
	case "sub":
		rest, ok := strings.CutPrefix(prefix, "repo:")
		i := strings.Index(rest, "/")
		return ok && i > 0
	}
	return false
}

// matcher holds when the claim is present and any alternative matches it.
type matcher struct {
	claim string
	alts  []alt
}

func (m matcher) match(c Claims) bool {
	v, ok := c[m.claim]
	if !ok {
		return false
	}
	for _, a := range m.alts {
		if a.match(v) {
			return true
		}
	}
	return false
}

// matchSet holds when every matcher holds. It is never empty once compiled.
type matchSet []matcher

func (ms matchSet) match(c Claims) bool {
	if len(ms) == 0 {
		return false // fail closed; compile refuses empty sets anyway
	}
	for _, m := range ms {
		if !m.match(c) {
			return false
		}
	}
	return true
}

// constrainsIdentity reports whether some matcher on an identity claim
// pins every one of its alternatives to an owner or narrower.
func (ms matchSet) constrainsIdentity() bool {
	for _, m := range ms {
		if !isIdentityClaim(m.claim) {
			continue
		}
		all := len(m.alts) > 0
		for _, a := range m.alts {
			all = all && a.pinsIdentity(m.claim)
		}
		if all {
			return true
		}
	}
	return false
}

func isIdentityClaim(c string) bool {
	for _, id := range identityClaims {
		if c == id {
			return true
		}
	}
	return false
}

// matchBlock compiles a match (or allow) mapping.
func (w *walker) matchBlock(where string, n *yaml.Node) matchSet {
	ps, _ := w.pairs(where, n)
	if n.Kind == yaml.MappingNode && len(n.Content) == 0 {
		w.fail(where, n, "must not be empty")
		return nil
	}
	var ms matchSet
	identityFailed := false // an identity matcher that did not compile may have been the constraint
	for _, p := range ps {
		at := where + "." + p.key
		if !claimNameRE.MatchString(p.key) {
			w.fail(at, p.kn, "%q is not a claim name (lower-case letters, digits and _, or repo_property_ and a custom property's name)", p.key)
			continue
		}
		if numericClaims[p.key] {
			w.fail(at, p.kn, "%s is a number in a token and can never match", p.key)
			continue
		}
		m, ok := w.matcher(at, p.key, p.v)
		if !ok {
			identityFailed = identityFailed || isIdentityClaim(p.key)
			continue
		}
		ms = append(ms, m)
	}
	if len(ps) > 0 && !ms.constrainsIdentity() && !identityFailed {
		w.fail(where, n, "needs at least one identity constraint that pins an owner: %s (an exact value, or a glob/regex whose fixed prefix includes the owner)", strings.Join(identityClaims, ", "))
	}
	return ms
}

// matcher compiles one claim's value: a string, a list, or a {glob}/{regex}
// mapping; list items may be strings or such mappings.
func (w *walker) matcher(where, claim string, n *yaml.Node) (matcher, bool) {
	m := matcher{claim: claim}
	switch n.Kind {
	case yaml.ScalarNode:
		a, ok := w.exactAlt(where, n)
		if !ok {
			return m, false
		}
		m.alts = []alt{a}
	case yaml.MappingNode:
		a, ok := w.patternAlt(where, n)
		if !ok {
			return m, false
		}
		m.alts = []alt{a}
	case yaml.SequenceNode:
		items, ok := w.list(where, n)
		if !ok {
			return m, false
		}
		if len(items) == 0 {
			w.fail(where, n, "an empty list can never match")
			return m, false
		}
		for i, it := range items {
			at := fmt.Sprintf("%s[%d]", where, i)
			var a alt
			var ok2 bool
			switch it.Kind {
			case yaml.ScalarNode:
				a, ok2 = w.exactAlt(at, it)
			case yaml.MappingNode:
				a, ok2 = w.patternAlt(at, it)
			default:
				w.fail(at, it, "must be a string or a {glob: ...} / {regex: ...} mapping, not %s", kindName(it))
			}
			if !ok2 {
				ok = false
				continue
			}
			m.alts = append(m.alts, a)
		}
		if !ok {
			return m, false
		}
	default:
		w.fail(where, n, "must be a string, a list or a {glob: ...} / {regex: ...} mapping, not %s", kindName(n))
		return m, false
	}
	return m, true
}

func (w *walker) exactAlt(where string, n *yaml.Node) (alt, bool) {
	s, ok := w.str(where, n)
	if !ok {
		return alt{}, false
	}
	if len(s) > MaxPatternLen {
		w.fail(where, n, "is %d bytes, more than %d", len(s), MaxPatternLen)
		return alt{}, false
	}
	return alt{kind: altExact, value: s}, true
}

func (w *walker) patternAlt(where string, n *yaml.Node) (alt, bool) {
	f := w.fields(where, n, "glob", "regex")
	if len(f) != 1 {
		w.fail(where, n, "must have exactly one of glob or regex")
		return alt{}, false
	}
	for key, v := range f {
		at := where + "." + key
		s, ok := w.str(at, v)
		if !ok {
			return alt{}, false
		}
		if s == "" {
			w.fail(at, v, "must not be empty")
			return alt{}, false
		}
		if len(s) > MaxPatternLen {
			w.fail(at, v, "is %d bytes, more than %d", len(s), MaxPatternLen)
			return alt{}, false
		}
		if key == "glob" {
			if _, err := path.Match(s, ""); err != nil {
				w.fail(at, v, "invalid glob %q: %v", s, err)
				return alt{}, false
			}
			return alt{kind: altGlob, value: s}, true
		}
		// Anchoring the whole group, not the ends of the source, keeps an
		// alternation like "a|b" from matching "a..." or "...b".
		re, err := regexp.Compile("^(?:" + s + ")$")
		if err != nil {
			w.fail(at, v, "invalid regex: %v", err)
			return alt{}, false
		}
		return alt{kind: altRegex, value: s, re: re}, true
	}
	return alt{}, false
}
