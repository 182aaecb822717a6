package idtoken

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	josejson "github.com/go-jose/go-jose/v4/json"
)

// members are a JSON object's members by name: strings holds every member
// whose value is a JSON string (for a token's payload, what the policy
// matches on: [Claims.Strings]); others holds every other member's value
// as it decodes into an any, with numbers as their JSON text (go-jose's
// json.Number), null as nil, arrays as []any and objects as
// map[string]any. Each name is in one of the two.
type members struct {
	strings map[string]string
	others  map[string]any
}

// decodeObject decodes b, which must be exactly one JSON object, with
// go-jose's JSON decoder: the one go-jose reads every JOSE header with, a
// fork of encoding/json changed in two ways, both stricter, both what a
// reader of JOSE objects needs (RFC 7515 5.2, RFC 7519 4):
//
//   - it refuses a name twice in one object, at any depth: encoding/json
//     keeps the last, another library may keep the first, and the two
//     would read different tokens from the same bytes;
//   - it matches names by case (here, into a map, so does encoding/json).
//
// decodeObject adds the rule the fork leaves out: no two names that differ
// only by case, and no name that differs only by case from one of read
// (the names the caller reads, in lower case). encoding/json matches a
// struct's fields without regard to case, so a consumer decoding "ISS"
// into its Issuer field would read what this package ignores.
//
// Like encoding/json, it allows only JSON's own whitespace (space, tab,
// LF, CR) around the object and between its tokens, and nothing after it.
// FuzzDecodeObject holds it to json.Unmarshal and to a duplicate finder on
// encoding/json's token stream.
func decodeObject(b []byte, read map[string]bool, sizeHint int) (members, error) {
	dec := josejson.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	all := make(map[string]any, sizeHint)
	if err := dec.Decode(&all); err != nil {
		var typeErr *josejson.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return members{}, errors.New("not a JSON object")
		}
		// A duplicate name is in the error's text: bound it.
		return members{}, fmt.Errorf("invalid JSON: %s", safeLong(err.Error()))
	}
	if all == nil { // null
		return members{}, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return members{}, errors.New("trailing data after the JSON object")
	}
	m := members{strings: make(map[string]string, len(all))}
	for name, v := range all {
		if s, ok := v.(string); ok {
			m.strings[name] = s
			continue
		}
		if m.others == nil {
			m.others = make(map[string]any, 4)
		}
		m.others[name] = v
	}
	if err := m.checkCase(read); err != nil {
		return members{}, err
	}
	return m, nil
}

func (m members) has(name string) bool {
	_, isString := m.strings[name]
	_, isOther := m.others[name]
	return isString || isOther
}

// checkCase refuses two names that differ only by case (strings.EqualFold)
// and a name that differs only by case from one of read. Only a name that
// is not its own [foldKey] can clash, so a payload of lower-case names, as
// GitHub's are, costs one look at each name.
func (m members) checkCase(read map[string]bool) error {
	var folded map[string]string // the names that are not their own key, by key
	check := func(name string) error {
		key := foldKey(name)
		if key == name {
			return nil
		}
		if read[key] || m.has(key) {
			return fmt.Errorf("member %q differs only by case from %q", safe(name), key)
		}
		if other, ok := folded[key]; ok {
			return fmt.Errorf("members %q and %q differ only by case", safe(other), safe(name))
		}
		if folded == nil {
			folded = make(map[string]string)
		}
		folded[key] = name
		return nil
	}
	for name := range m.strings {
		if err := check(name); err != nil {
			return err
		}
	}
	for name := range m.others {
		if err := check(name); err != nil {
			return err
		}
	}
	return nil
}

// foldKey maps s to one spelling per class of strings.EqualFold, rune by
// rune: an ASCII letter to its lower case, any other rune to the least of
// its case orbit (unicode.SimpleFold), or to the lower-case ASCII letter
// in it, so that the Kelvin sign (U+212A) folds to "k" as EqualFold says
// it does. A name in lower-case ASCII is its own key, without a copy.
func foldKey(s string) string { return strings.Map(foldRune, s) }

func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	}
	key := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return foldRune(f)
		}
		key = min(key, f)
	}
	return key
}

// nameSet is the set of names a caller of decodeObject reads.
func nameSet(names ...string) map[string]bool {
	s := make(map[string]bool, len(names))
	for _, n := range names {
		s[n] = true
	}
	return s
}

// stringMember returns the named member if it is a string; present tells
// a member of another kind (null aside) from an absent one.
func (m members) stringMember(name string) (s string, isString, present bool) {
	if s, ok := m.strings[name]; ok {
		return s, true, true
	}
	v, ok := m.others[name]
	return "", false, ok && v != nil
}
