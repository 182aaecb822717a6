package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
)

// decodeStrict decodes a JSON object body into v, a pointer to a struct,
// more strictly than encoding/json: field names must match v's json tags
// exactly (encoding/json would take {"ROLE": ...} as role), a field may
// appear once (encoding/json keeps the last of two), and nothing but one
// object may be sent. An empty body leaves v as it is. The error is a
// [badRequestError] whose message is safe to return, or the
// [http.MaxBytesError] of an oversized body.
func decodeStrict(body io.Reader, v any) error {
	data, err := io.ReadAll(body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return err
		}
		return badRequest("the body could not be read")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	fields := jsonFields(v)
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return badRequest("the body is not valid JSON for this endpoint: %s", jsonProblem(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badRequest("the body must be a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badRequest("the body is not valid JSON for this endpoint: %s", jsonProblem(err))
		}
		key, _ := tok.(string) // inside an object, Token returns keys as strings
		switch {
		case seen[key]:
			return badRequest("duplicate field %s", quoteShort(key))
		case !fields[key]:
			return badRequest("unknown field %s (field names are exact and case-sensitive)", quoteShort(key))
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return badRequest("the body is not valid JSON for this endpoint: %s", jsonProblem(err))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return badRequest("the body is not valid JSON for this endpoint: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("the body must hold a single JSON object")
	}
	// Every key is now one of v's exact names, once: encoding/json's own
	// leniencies no longer matter, only the value types.
	if err := json.Unmarshal(data, v); err != nil {
		return badRequest("the body is not valid JSON for this endpoint: %s", jsonProblem(err))
	}
	return nil
}

// jsonFields is the set of JSON names of the struct v points to.
func jsonFields(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		out[name] = true
	}
	return out
}

// quoteShort quotes a caller's input (a field name, a query parameter, a
// ttl) for an error message, cut so that a long one cannot bloat the
// answer or the log.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = truncate(s, 64) + "..."
	}
	return fmt.Sprintf("%q", s)
}

// checkQuery refuses a query that is not exactly what the endpoint takes:
// a parameter not among params, one given twice, or a ';' anywhere.
// Leniency here is how a misspelt dry run (?dry-run=true, ?DRY_RUN=true,
// ?dry_run=true;) became a real exchange: net/http ignores unknown
// parameters and drops a pair that holds a ';' without a word.
func checkQuery(raw string, params ...string) error {
	if raw == "" {
		return nil
	}
	if strings.Contains(raw, ";") {
		return badRequest("the query must not contain ';' (separate parameters with '&')")
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return badRequest("the query is not valid URL encoding")
	}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	slices.Sort(names) // one answer for one query, whatever map order
	for _, name := range names {
		if !slices.Contains(params, name) {
			if len(params) == 0 {
				return badRequest("unknown query parameter %s (this endpoint takes none)", quoteShort(name))
			}
			return badRequest("unknown query parameter %s (this endpoint takes only %s; names are exact and case-sensitive)", quoteShort(name), strings.Join(params, ", "))
		}
		if len(q[name]) > 1 {
			return badRequest("query parameter %s is given more than once", quoteShort(name))
		}
	}
	return nil
}

// readRequest reads what every endpoint takes: a query of at most the
// parameters params (see [checkQuery]), the caller's ID token, as a Bearer
// token, and a strict JSON body into v (see [decodeStrict]; an empty body
// leaves v as it is).
func readRequest(r *http.Request, v any, params ...string) (rawIDToken string, err error) {
	if err := checkQuery(r.URL.RawQuery, params...); err != nil {
		return "", err
	}
	raw, err := bearer(r)
	if err != nil {
		return "", err
	}
	return raw, decodeStrict(r.Body, v)
}

// bearer extracts the Bearer token from the Authorization header. More
// than one Authorization header is refused: which one counts differs from
// one proxy or log to the next, so that the identity the broker judged
// could be another than the one they record.
func bearer(r *http.Request) (string, error) {
	if n := len(r.Header.Values("Authorization")); n > 1 {
		return "", badRequest("%d Authorization headers; send exactly one", n)
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errMissingToken
	}
	return strings.TrimSpace(tok), nil
}

// jsonProblem describes a JSON decoding error without echoing the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed"
}
