package policy

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// walker decodes the policy from a yaml.Node tree, collecting every problem
// instead of stopping at the first.
//
// Decoding by hand rather than into tagged structs with
// yaml.Decoder.KnownFields(true) gives the same strictness (unknown keys
// are errors) and more: it refuses duplicate keys, null values, aliases and
// merge keys, and each message names the rule and the key
// (`rules[2] "deploy-main": grant.max_role: ...`), which the line numbers of
// KnownFields' messages do not.
type walker struct {
	errs []error
}

func (w *walker) fail(where string, n *yaml.Node, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n != nil && n.Line > 0 {
		w.errs = append(w.errs, fmt.Errorf("%s: %s (line %d)", where, msg, n.Line))
		return
	}
	w.errs = append(w.errs, fmt.Errorf("%s: %s", where, msg))
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "something else"
}

// pair is one key/value of a mapping, in document order.
type pair struct {
	key   string
	kn, v *yaml.Node
}

// pairs returns the entries of mapping n. Keys must be plain strings and
// unique; aliases and merge keys are refused (a policy is read by humans
// during review: what it says must be visible where it says it).
func (w *walker) pairs(where string, n *yaml.Node) ([]pair, bool) {
	if n.Kind != yaml.MappingNode {
		w.fail(where, n, "must be a mapping, not %s", kindName(n))
		return nil, false
	}
	ok := true
	seen := make(map[string]bool, len(n.Content)/2)
	out := make([]pair, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" || (k.ShortTag() != "!!str" && k.ShortTag() != "!!int") {
			w.fail(where, k, "keys must be plain strings (no merge keys or aliases)")
			ok = false
			continue
		}
		if seen[k.Value] {
			w.fail(where, k, "key %q appears twice", k.Value)
			ok = false
			continue
		}
		seen[k.Value] = true
		if v.Kind == yaml.AliasNode {
			w.fail(where+"."+k.Value, v, "aliases are not supported in a policy")
			ok = false
			continue
		}
		out = append(out, pair{key: k.Value, kn: k, v: v})
	}
	return out, ok
}

// fields returns the entries of mapping n by key, reporting every key not in
// allowed.
func (w *walker) fields(where string, n *yaml.Node, allowed ...string) map[string]*yaml.Node {
	ps, _ := w.pairs(where, n)
	out := make(map[string]*yaml.Node, len(ps))
	for _, p := range ps {
		if !slices.Contains(allowed, p.key) {
			w.fail(where, p.kn, "unknown key %q (allowed: %s)", p.key, strings.Join(allowed, ", "))
			continue
		}
		out[p.key] = p.v
	}
	return out
}

// str returns the text of a scalar. Strings, integers and booleans are
// taken as written (repository_id: 123456 is the string "123456", as
// GitHub sends it); null is refused, so that an empty value has to be
// written "" on purpose.
func (w *walker) str(where string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		w.fail(where, n, "must be a string, not %s", kindName(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!bool":
		return n.Value, true
	case "!!null":
		w.fail(where, n, `must be a string, not null (write "" for an empty string)`)
	default:
		w.fail(where, n, "must be a string, not %s %q (quote it)", n.ShortTag(), n.Value)
	}
	return "", false
}

// list returns the items of sequence n.
func (w *walker) list(where string, n *yaml.Node) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		w.fail(where, n, "must be a list, not %s", kindName(n))
		return nil, false
	}
	for i, it := range n.Content {
		if it.Kind == yaml.AliasNode {
			w.fail(fmt.Sprintf("%s[%d]", where, i), it, "aliases are not supported in a policy")
			return nil, false
		}
	}
	return n.Content, true
}

// topList returns the items of the top-level list named where (rules,
// rotations), which may hold at most limit of them: the bound keeps a huge
// file from costing a broker its memory at every reload.
func (w *walker) topList(where string, n *yaml.Node, limit int) ([]*yaml.Node, bool) {
	items, ok := w.list(where, n)
	if ok && len(items) > limit {
		w.fail(where, n, "has %d %s, more than %d", len(items), where, limit)
		return nil, false
	}
	return items, ok
}

// nonEmptyList returns the items of sequence n, which must have at least
// one: an empty list in a policy is a mistake, never "none" or "any".
func (w *walker) nonEmptyList(where string, n *yaml.Node) ([]*yaml.Node, bool) {
	items, ok := w.list(where, n)
	if ok && len(items) == 0 {
		w.fail(where, n, "must not be empty")
		return nil, false
	}
	return items, ok
}

// strList returns a non-empty list of strings without duplicates.
func (w *walker) strList(where string, n *yaml.Node) ([]string, bool) {
	return uniqueList(w, where, n, "%q", w.str)
}

// uniqueList returns the items of the non-empty list n, each read by item
// at where[i], and refuses an item that appears twice (verb formats it in
// the message: %q, %d). ok is false when any item was refused; the
// refused ones are left out.
func uniqueList[T comparable](w *walker, where string, n *yaml.Node, verb string, item func(at string, n *yaml.Node) (T, bool)) ([]T, bool) {
	items, ok := w.nonEmptyList(where, n)
	if !ok {
		return nil, false
	}
	out := make([]T, 0, len(items))
	seen := make(map[T]bool, len(items))
	for i, it := range items {
		at := fmt.Sprintf("%s[%d]", where, i)
		v, ok2 := item(at, it)
		if !ok2 {
			ok = false
			continue
		}
		if seen[v] {
			w.fail(at, it, verb+" appears twice", v)
			ok = false
			continue
		}
		seen[v] = true
		out = append(out, v)
	}
	return out, ok
}
