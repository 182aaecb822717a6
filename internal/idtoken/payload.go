package idtoken

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"
)

// members are a JSON object's members by name, decoded in one pass:
// strings holds every member whose value is a JSON string, decoded (for a
// token's payload, what the policy matches on: [Claims.Strings]); others
// holds the raw JSON text of every other member (exp as 1700000000, an
// array, null). Each name is in one of the two, as the last of duplicate
// members says, as with encoding/json.
type members struct {
	strings map[string]string
	others  map[string]string // nil when empty
}

// decodeObject decodes p, which must be exactly one JSON object (space
// around it aside), into its members, in one pass over the bytes instead
// of a reflective decode. p is copied into a string once: names, raw
// values and decoded strings are substrings of it, not a copy each.
//
// p is checked by json.Valid first, with encoding/json's own scanner, so
// what is accepted is exactly what encoding/json accepts; the walk that
// follows only ever sees valid JSON. FuzzDecodeObject holds the result to
// json.Unmarshal's.
func decodeObject(p []byte, sizeHint int) (members, error) {
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' || !json.Valid(p) {
		// strictObject says what is wrong, as it always has.
		if err := strictObject(p, &struct{}{}); err != nil {
			return members{}, err
		}
		return members{}, errors.New("invalid JSON")
	}
	b := string(p)
	m := members{strings: make(map[string]string, sizeHint)}
	i := skipSpace(b, 1)
	if b[i] == '}' {
		return m, nil
	}
	for {
		kEnd, escaped := stringEnd(b, i)
		name := unquote(b[i:kEnd], escaped)
		i = skipSpace(b, kEnd) // at ':'
		i = skipSpace(b, i+1)  // at the value
		var vEnd int
		if b[i] == '"' {
			vEnd, escaped = stringEnd(b, i)
			m.strings[name] = unquote(b[i:vEnd], escaped)
			delete(m.others, name)
		} else {
			vEnd = valueEnd(b, i)
			if m.others == nil {
				m.others = make(map[string]string, 4)
			}
			m.others[name] = b[i:vEnd]
			delete(m.strings, name)
		}
		i = skipSpace(b, vEnd) // at ',' or '}'
		if b[i] == '}' {
			return m, nil
		}
		i = skipSpace(b, i+1) // at the next name
	}
}

// stringMember returns the named member if it is a string; present tells
// a member of another kind (null aside) from an absent one.
func (m members) stringMember(name string) (s string, isString, present bool) {
	if s, ok := m.strings[name]; ok {
		return s, true, true
	}
	raw, ok := m.others[name]
	return "", false, ok && raw != "null"
}

// unquote decodes raw, a valid JSON string (quotes included) that holds a
// backslash only if escaped is true. A string without escapes in valid
// UTF-8, as all of a GitHub token's are, is raw without its quotes, a
// substring; the others go through encoding/json, which also replaces
// invalid UTF-8 as it always does.
func unquote(raw string, escaped bool) string {
	inner := raw[1 : len(raw)-1]
	if !escaped && utf8.ValidString(inner) {
		return inner
	}
	var s string
	// raw is valid JSON (decodeObject checked it): this cannot fail.
	_ = json.Unmarshal([]byte(raw), &s)
	return s
}

// The walkers below assume valid JSON (decodeObject checked it) and
// return the index just past what they walked.

func skipSpace(b string, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd: b[i] is the opening quote of a string. escaped says whether
// it holds a backslash. The common case, no escape, is found with
// strings.IndexByte rather than byte by byte.
func stringEnd(b string, i int) (end int, escaped bool) {
	i++
	if q := strings.IndexByte(b[i:], '"'); q >= 0 && strings.IndexByte(b[i:i+q], '\\') < 0 {
		return i + q + 1, false
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++ // the escaped byte cannot end the string
		case '"':
			return i + 1, true
		}
	}
	return i, true
}

// valueEnd: b[i] is the first byte of a value.
func valueEnd(b string, i int) int {
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _ = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	// A number, true, false or null.
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}
