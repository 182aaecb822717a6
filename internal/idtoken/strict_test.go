package idtoken_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
)

// TestVerifyIsAsStrictAsTheStandards: tokens well signed by the issuer's
// own key, which go-jose or encoding/json refuse, are refused: space that
// is not JSON's around the header or the payload, a name twice, b64
// without crit, names that differ only by case from a claim read.
func TestVerifyIsAsStrictAsTheStandards(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	v := newVerifier(t, clk.Now, http.DefaultTransport, a.URL())

	good := mint(t, a, issuer.Claims{})
	header := `{"alg":"RS256","kid":"` + a.KeyID() + `","typ":"JWT"}`
	payload := b64Decode(t, strings.Split(good, ".")[1])
	signed := func(h, p string) string {
		tok, err := a.SignBytes([]byte(h), []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if _, err := v.Verify(context.Background(), signed(header, payload)); err != nil {
		t.Fatalf("the untouched token: %v", err)
	}
	// withMember adds a member at the start of the payload.
	withMember := func(m string) string { return "{" + m + "," + payload[1:] }
	long := strings.Repeat("n", 5000)

	type row struct {
		name string
		tok  string
		want error
	}
	tests := []row{
		{"JSON space around header and payload is fine", signed(" \t"+header+"\r\n", "\n"+payload+" "), nil},
		{"header with a name twice: alg none, then RS256", signed(`{"alg":"none","alg":"RS256","kid":"`+a.KeyID()+`"}`, payload), idtoken.ErrMalformed},
		{"header with kid twice", signed(`{"alg":"RS256","kid":"other","kid":"`+a.KeyID()+`"}`, payload), idtoken.ErrMalformed},
		{"header with ALG beside alg", signed(`{"alg":"RS256","ALG":"none","kid":"`+a.KeyID()+`"}`, payload), idtoken.ErrMalformed},
		{"header with b64 false without crit", signed(`{"alg":"RS256","kid":"`+a.KeyID()+`","b64":false}`, payload), idtoken.ErrBadSignature},
		{"header with b64 true", signed(`{"alg":"RS256","kid":"`+a.KeyID()+`","b64":true}`, payload), idtoken.ErrBadSignature},
		{"header with crit null", signed(`{"alg":"RS256","kid":"`+a.KeyID()+`","crit":null}`, payload), idtoken.ErrBadSignature},
		{"payload with iss and ISS", signed(header, withMember(`"ISS":"https://evil.example"`)), idtoken.ErrMalformed},
		{"payload with Repository_ID beside repository_id", signed(header, withMember(`"Repository_ID":"1"`)), idtoken.ErrMalformed},
		{"payload with sub spelt with the long s (U+017F)", signed(header, withMember(`"\u017fub":"x"`)), idtoken.ErrMalformed},
		{"payload with two names that differ only by case", signed(header, withMember(`"Tier":"a","tier":"b"`)), idtoken.ErrMalformed},
		{"payload with repository_id twice", signed(header, withMember(`"repository_id":"1"`)), idtoken.ErrMalformed},
		{"payload with a name twice in a nested object", signed(header, withMember(`"x":{"a":1,"a":2}`)), idtoken.ErrMalformed},
		{"payload with a long name twice (the error stays short)", signed(header, withMember(`"`+long+`":1,"`+long+`":2`)), idtoken.ErrMalformed},
	}
	// Every space Unicode knows that JSON does not (U+000B, U+000C, U+0085,
	// U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F,
	// U+3000), before and after the header and the payload.
	for _, sp := range []string{"\v", "\f", "\u0085", "\u00a0", "\u1680", "\u2000", "\u2007", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"} {
		name := fmt.Sprintf("U+%04X", []rune(sp)[0])
		tests = append(tests,
			row{"space " + name + " before the header", signed(sp+header, payload), idtoken.ErrMalformed},
			row{"space " + name + " after the payload", signed(header, payload+sp), idtoken.ErrMalformed},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tt.tok)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want it accepted", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			assertNoToken(t, err, tt.tok)
		})
	}
}

// TestJWKSKeyOps: a key the issuer publishes with a use or key_ops that
// do not allow verifying signatures (RFC 7517 4.2, 4.3) is not used.
func TestJWKSKeyOps(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(map[string]any)
		accept bool
	}{
		{"no use, no key_ops", func(k map[string]any) { delete(k, "use") }, true},
		{"key_ops verify", func(k map[string]any) { delete(k, "use"); k["key_ops"] = []string{"verify"} }, true},
		{"key_ops sign and verify", func(k map[string]any) { delete(k, "use"); k["key_ops"] = []string{"sign", "verify"} }, true},
		{"key_ops sign", func(k map[string]any) { delete(k, "use"); k["key_ops"] = []string{"sign"} }, false},
		{"key_ops encrypt", func(k map[string]any) { delete(k, "use"); k["key_ops"] = []string{"encrypt"} }, false},
		{"key_ops empty", func(k map[string]any) { delete(k, "use"); k["key_ops"] = []string{} }, false},
		{"key_ops a string", func(k map[string]any) { delete(k, "use"); k["key_ops"] = "verify" }, false},
		{"use enc", func(k map[string]any) { k["use"] = "enc" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.Stopped(t0)
			a := startIssuer(t, clk.Now)
			other := startIssuer(t, clk.Now)
			f := startRotating(t, a, other)
			// Only a's key is edited: other's keeps the set usable, so
			// that a's being skipped shows as an unknown kid.
			f.editKey = func(k map[string]any) {
				if k["kid"] == a.KeyID() {
					tt.edit(k)
				}
			}
			v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
			_, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url}))
			switch {
			case tt.accept && err != nil:
				t.Fatalf("Verify = %v, want it accepted", err)
			case !tt.accept && !errors.Is(err, idtoken.ErrBadSignature):
				t.Fatalf("Verify = %v, want the key not used (an unknown kid)", err)
			}
		})
	}
}
