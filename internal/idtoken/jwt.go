package idtoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
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

// headerNames are the JOSE header parameters the verifier reads (or
// refuses): a name that differs from one of them only by case is refused.
var headerNames = nameSet("alg", "kid", "typ", "crit", "b64")

// header is the part of the JOSE header the verifier reads.
type header struct {
	Alg string
	Kid string
}

// jws is a compact JWS split, and each of its parts decoded, exactly once:
// the verifier reads the header, the signature check hashes signingInput,
// and the claims are decoded from payload, the very bytes the signature
// covers.
type jws struct {
	header       header
	signingInput string // base64url header "." base64url payload
	payload      []byte
	signature    []byte
}

// parseJWS checks the shape of a compact JWS without verifying it: three
// base64url parts, a JSON object header with an allowed alg and a kid, typ
// JWT when present, no crit, a payload and a signature. The alg is judged
// before the empty signature, so that an alg "none" token is reported as
// such. It never returns raw token bytes in its errors.
func parseJWS(raw string) (jws, error) {
	h, rest, ok := strings.Cut(raw, ".")
	p, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sig, ".") {
		return jws{}, fmt.Errorf("%w: compact JWS must have 3 parts, got %d", ErrMalformed, strings.Count(raw, ".")+1)
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return jws{}, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	hdr, err := decodeObject(b, headerNames, 8)
	if err != nil {
		return jws{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	for _, name := range []string{"alg", "kid", "typ"} {
		if _, isString, present := hdr.stringMember(name); present && !isString {
			return jws{}, fmt.Errorf("%w: header: %s is not a string", ErrMalformed, name)
		}
	}
	alg, _, present := hdr.stringMember("alg")
	if !present {
		return jws{}, fmt.Errorf("%w: header has no alg", ErrMalformed)
	}
	if !allowedAlg(alg) {
		return jws{}, fmt.Errorf("%w: alg %q is not allowed (want RS256 or ES256)", ErrBadSignature, safe(alg))
	}
	if typ, isString, _ := hdr.stringMember("typ"); isString && !strings.EqualFold(typ, "JWT") {
		return jws{}, fmt.Errorf("%w: typ %q is not JWT", ErrBadSignature, safe(typ))
	}
	// No extension is understood, so none may be critical; and b64 (RFC
	// 7797) changes what the signature covers, so it is refused whether
	// crit lists it (as it must) or not, rather than ignored.
	for _, name := range []string{"crit", "b64"} {
		if hdr.has(name) {
			return jws{}, fmt.Errorf("%w: %s header is not supported", ErrBadSignature, name)
		}
	}
	kid := hdr.strings["kid"]
	if kid == "" {
		return jws{}, fmt.Errorf("%w: header has no kid", ErrBadSignature)
	}
	if p == "" {
		return jws{}, fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if sig == "" {
		return jws{}, fmt.Errorf("%w: no signature", ErrBadSignature)
	}
	t := jws{header: header{Alg: alg, Kid: kid}, signingInput: raw[:len(h)+1+len(p)]}
	if t.signature, err = base64.RawURLEncoding.DecodeString(sig); err != nil {
		return jws{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	if t.payload, err = base64.RawURLEncoding.DecodeString(p); err != nil {
		return jws{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	return t, nil
}

// verifySignature checks the signature over signingInput with pub, which
// [keyForAlg] has already matched to the header's alg: RSASSA-PKCS1-v1_5
// with SHA-256 (RS256) or ECDSA P-256 with SHA-256, r||s (ES256), as RFC
// 7518 3.3 and 3.4 define them and as go-jose checks them, with the
// standard library's crypto.
func verifySignature(t jws, pub crypto.PublicKey) error {
	digest := sha256.Sum256([]byte(t.signingInput))
	switch key := pub.(type) {
	case *rsa.PublicKey:
		if t.header.Alg != algRS256 {
			break
		}
		return rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], t.signature)
	case *ecdsa.PublicKey:
		if t.header.Alg != algES256 {
			break
		}
		if len(t.signature) != 64 {
			return fmt.Errorf("ES256 signature is %d bytes, want 64", len(t.signature))
		}
		r := new(big.Int).SetBytes(t.signature[:32])
		s := new(big.Int).SetBytes(t.signature[32:])
		if !ecdsa.Verify(key, digest[:], r, s) {
			return errors.New("crypto/ecdsa: verification error")
		}
		return nil
	}
	return fmt.Errorf("a %T key cannot verify %s", pub, t.header.Alg)
}

// issuerOf returns the unverified iss of a token's payload, only to choose
// which issuer's keys to verify it with; everything else waits for the
// signature.
func issuerOf(p members) (string, error) {
	iss, isString, present := p.stringMember("iss")
	switch {
	case present && !isString:
		return "", fmt.Errorf("%w: payload: iss is not a string", ErrMalformed)
	case iss == "":
		return "", fmt.Errorf("%w: payload has no iss", ErrMalformed)
	}
	return iss, nil
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
	_, rest, _ := strings.Cut(raw, ".")
	p, _, _ := strings.Cut(rest, ".")
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	fields, err := decodeObject(b, claimNames, 40)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	return fields.strings, nil
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
