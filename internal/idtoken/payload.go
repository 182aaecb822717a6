package idtoken

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// payloadFields decodes a token's payload, which must be exactly one JSON
// object, into its members by name, each value left as raw JSON text: what
// json.Unmarshal into a map[string]json.RawMessage gives (the last of
// duplicate names wins, names are unescaped, values are not), in one pass
// over the bytes instead of a reflective decode. The payload is copied into
// a string once; names, raw values and the strings [jsonString] decodes
// from them are substrings of it, not a copy each.
//
// The payload is checked by json.Valid first, with encoding/json's own
// scanner, so what is accepted is exactly what encoding/json accepts; the
// walk that follows only ever sees valid JSON. FuzzPayloadFields holds it
// to json.Unmarshal's result.
func payloadFields(p []byte) (map[string]string, error) {
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' || !json.Valid(p) {
		// strictObject says what is wrong, as it always has.
		if err := strictObject(p, &struct{}{}); err != nil {
			return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
		}
		return nil, fmt.Errorf("%w: payload: invalid JSON", ErrMalformed)
	}
	b := string(p)
	// GitHub's tokens carry about 35 claims.
	fields := make(map[string]string, 40)
	i := skipSpace(b, 1)
	if b[i] == '}' {
		return fields, nil
	}
	for {
		kEnd := stringEnd(b, i)
		name, _ := jsonString(b[i:kEnd])
		i = skipSpace(b, kEnd) // at ':'
		i = skipSpace(b, i+1)  // at the value
		vEnd := valueEnd(b, i)
		fields[name] = b[i:vEnd]
		i = skipSpace(b, vEnd) // at ',' or '}'
		if b[i] == '}' {
			return fields, nil
		}
		i = skipSpace(b, i+1) // at the next name
	}
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

// The walkers below assume valid JSON (payloadFields checked it) and
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
