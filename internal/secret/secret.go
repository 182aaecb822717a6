// Package secret holds [Value], a credential that never prints: the
// configuration's tokens and secret ids are Values, so a configuration can
// be printed, logged or marshalled whole and no String method has to list
// its fields by hand to leave the secrets out.
package secret

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// redacted stands in for a Value that is set; an empty Value prints as
// nothing, so a reader can still tell whether a credential was given.
const redacted = "<redacted>"

// Value is a credential. Every way of printing it shows [redacted]: fmt with
// any verb, slog, encoding/json and other text marshallers. Only
// [Value.Reveal] gives the credential, at the one place that sends it.
//
// caarlos0/env fills a Value through [Value.UnmarshalText], which drops
// surrounding blanks: a credential never has them, and a file holding one
// usually ends in a newline.
type Value string

// Reveal returns the credential.
func (v Value) Reveal() string { return string(v) }

// String is [redacted], or "" when v is empty.
func (v Value) String() string {
	if v == "" {
		return ""
	}
	return redacted
}

// GoString is [Value.String] quoted, for %#v.
func (v Value) GoString() string { return strconv.Quote(v.String()) }

// Format prints [Value.String] whatever the verb: without it %d or %x
// would print a string type's bytes.
func (v Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, v.GoString())
		return
	}
	_, _ = io.WriteString(f, v.String())
}

// LogValue keeps the credential out of log/slog's output.
func (v Value) LogValue() slog.Value { return slog.StringValue(v.String()) }

// MarshalText keeps the credential out of encoding/json (which slog's JSON
// handler uses for a struct holding a Value) and other text encodings.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText sets v to text without surrounding blanks.
func (v *Value) UnmarshalText(text []byte) error {
	*v = Value(strings.TrimSpace(string(text)))
	return nil
}
