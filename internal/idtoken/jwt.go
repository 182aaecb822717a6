package idtoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Signing algorithms the verifier accepts. GitHub signs with RS256; ES256 is
// allowed for issuers that may move to it. "none", HS* and everything else
// are refused before any key is looked at.
const (
	algRS256 = "RS256"
	algES256 = "ES256"
)

func allowedAlg(alg string) bool { return alg == algRS256 || alg == algES256 }

// header is the part of the JOSE header the verifier reads.
type header struct {
	Alg string
	Kid string
}

// parseHeader checks the shape of a compact JWS without verifying it: three
// base64url parts, a JSON object header with an allowed alg and a kid, typ
// JWT when present, no crit, a payload and a signature. The alg is judged
// before the empty signature, so that an alg "none" token is reported as
// such. It never returns raw token bytes in its errors.
func parseHeader(raw string) (header, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return header{}, fmt.Errorf("%w: compact JWS must have 3 parts, got %d", ErrMalformed, len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return header{}, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	var h struct {
		Alg  *string         `json:"alg"`
		Kid  *string         `json:"kid"`
		Typ  *string         `json:"typ"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := strictObject(b, &h); err != nil {
		return header{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if h.Alg == nil {
		return header{}, fmt.Errorf("%w: header has no alg", ErrMalformed)
	}
	if !allowedAlg(*h.Alg) {
		return header{}, fmt.Errorf("%w: alg %q is not allowed (want RS256 or ES256)", ErrBadSignature, safe(*h.Alg))
	}
	if h.Typ != nil && !strings.EqualFold(*h.Typ, "JWT") {
		return header{}, fmt.Errorf("%w: typ %q is not JWT", ErrBadSignature, safe(*h.Typ))
	}
	if h.Crit != nil {
		return header{}, fmt.Errorf("%w: crit header is not supported", ErrBadSignature)
	}
	if h.Kid == nil || *h.Kid == "" {
		return header{}, fmt.Errorf("%w: header has no kid", ErrBadSignature)
	}
	if parts[1] == "" {
		return header{}, fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if parts[2] == "" {
		return header{}, fmt.Errorf("%w: no signature", ErrBadSignature)
	}
	if _, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return header{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	return header{Alg: *h.Alg, Kid: *h.Kid}, nil
}

// payloadJSON decodes the payload part of a compact JWS (already checked by
// [parseHeader]) without verifying anything, and checks that it is a JSON
// object.
func payloadJSON(raw string) ([]byte, error) {
	parts := strings.SplitN(raw, ".", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: compact JWS must have 3 parts", ErrMalformed)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	return b, nil
}

// peekIssuer returns the unverified iss of a token, only to choose which
// issuer's keys to verify it with; everything else waits for the signature.
func peekIssuer(raw string) (string, error) {
	b, err := payloadJSON(raw)
	if err != nil {
		return "", err
	}
	var p struct {
		Iss *string `json:"iss"`
	}
	if err := strictObject(b, &p); err != nil {
		return "", fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if p.Iss == nil || *p.Iss == "" {
		return "", fmt.Errorf("%w: payload has no iss", ErrMalformed)
	}
	return *p.Iss, nil
}

// UnverifiedClaims decodes the string claims of a compact JWS's payload
// without verifying anything: not the signature, not the issuer, not the
// times. Never decide anything on them. The action uses them to show a job
// the identity its own token carries (it fetched the token itself), and
// `astro-sts policy check --token` to try a real token's claims against a
// policy. Like the verifier, it keeps string claims only: they are what a
// policy matches. Errors never contain token bytes.
func UnverifiedClaims(raw string) (map[string]string, error) {
	if len(raw) > DefaultMaxTokenSize*4 {
		return nil, fmt.Errorf("%w: token is %d bytes, more than %d", ErrMalformed, len(raw), DefaultMaxTokenSize*4)
	}
	if n := strings.Count(raw, "."); n != 2 {
		return nil, fmt.Errorf("%w: compact JWS must have 3 parts, got %d", ErrMalformed, n+1)
	}
	b, err := payloadJSON(raw)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := strictObject(b, &fields); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	out := make(map[string]string, len(fields))
	for name, v := range fields {
		var s string
		if len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil {
			out[name] = s
		}
	}
	return out, nil
}

// strictObject decodes b, which must be exactly one JSON object, into v.
// Unknown fields are allowed (JWTs carry many); trailing data is not.
func strictObject(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}

// safe shortens an attacker-controlled header value before it goes into an
// error message: header values are not secret, but they are unbounded.
func safe(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
