package idtoken

import (
	"bytes"
	"encoding/json"
	"errors"
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
		kEnd := stringEnd(b, i)
		name, _ := jsonString(b[i:kEnd])
		i = skipSpace(b, kEnd) // at ':'
		i = skipSpace(b, i+1)  // at the value
		vEnd := valueEnd(b, i)
		if s, ok := jsonString(b[i:vEnd]); ok {
			m.strings[name] = s
			delete(m.others, name)
		} else {
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

// jsonString decodes raw, a JSON value, as a string: ok is false when it
// is not a string. Strings without escapes and in valid UTF-8, all of a
// GitHub token's, are returned as substrings of raw; the others go through
// encoding/json, which also replaces invalid UTF-8 as it always does.
func jsonString(raw string) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	plain, ascii := true, true
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		if c == '\\' || c == '"' || c < 0x20 {
			plain = false
			break
		}
		ascii = ascii && c < utf8.RuneSelf
	}
	if plain && (ascii || utf8.ValidString(inner)) {
		return inner, true
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return "", false
	}
	return s, true
}

// The walkers below assume valid JSON (decodeObject checked it) and
// return the index just past what they walked.

func skipSpace(b string, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd: b[i] is the opening quote of a string.
func stringEnd(b string, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++ // the escaped byte cannot end the string
		case '"':
			return i + 1
		}
	}
	return i
}

// valueEnd: b[i] is the first byte of a value.
func valueEnd(b string, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
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
