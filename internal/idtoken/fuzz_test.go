package idtoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// FuzzPeek feeds arbitrary strings to the unverified header and payload
// peeking that runs before any signature check: it must never panic,
// must classify every failure with a sentinel, must only accept an
// allowed alg with a kid, and must never echo the input.
func FuzzPeek(f *testing.F) {
	f.Add(enc(`{"alg":"RS256","kid":"k","typ":"JWT"}`) + "." + enc(`{"iss":"https://token.actions.githubusercontent.com"}`) + ".c2ln")
	f.Add(enc(`{"alg":"none"}`) + "." + enc(`{"iss":"x"}`) + ".")
	f.Add(enc(`{"alg":"HS256","kid":"k"}`) + "." + enc(`{}`) + ".c2ln")
	f.Add(enc(`{"alg":"RS256","kid":"k","crit":["b64"]}`) + "." + enc(`{"iss":1}`) + ".c2ln")
	f.Add(enc(`{"alg":"RS256","kid":"k"} {}`) + "." + enc(`{"iss":"a"}}`) + ".c2ln")
	f.Add("a.b.c")
	f.Add("...")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		h, err := parseHeader(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("parseHeader error without a sentinel: %v", err)
			}
			if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
				t.Fatalf("parseHeader error echoes the input")
			}
		} else {
			if !allowedAlg(h.Alg) || h.Kid == "" {
				t.Fatalf("parseHeader accepted alg %q kid %q", h.Alg, h.Kid)
			}
			if strings.Count(raw, ".") != 2 {
				t.Fatalf("parseHeader accepted %d parts", strings.Count(raw, ".")+1)
			}
		}
		iss, err := peekIssuer(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("peekIssuer error without ErrMalformed: %v", err)
			}
			if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
				t.Fatalf("peekIssuer error echoes the input")
			}
		} else if iss == "" {
			t.Fatal("peekIssuer returned an empty issuer without error")
		}
	})
}

// FuzzNewClaims feeds arbitrary (verified-looking) payloads to the claim
// decoder: no panic, failures are ErrInvalidToken, and every named claim
// that is set is also in Strings with the same value.
func FuzzNewClaims(f *testing.F) {
	f.Add(`{"iss":"i","sub":"s","aud":"a","exp":1700000300,"iat":1700000000,"nbf":1699999400,"jti":"j","repository_id":"1"}`)
	f.Add(`{"aud":["a","b"],"exp":1.5e9}`)
	f.Add(`{"exp":-1}`)
	f.Add(`{"exp":"1"}`)
	f.Add(`{"exp":1e400}`)
	f.Add(`{"repository":5}`)
	f.Add(`{"ref":null}`)
	f.Fuzz(func(t *testing.T, payload string) {
		var fields map[string]json.RawMessage
		if json.Unmarshal([]byte(payload), &fields) != nil {
			return
		}
		c, err := newClaims(fields)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("newClaims error without ErrInvalidToken: %v", err)
			}
			return
		}
		for name, v := range map[string]string{"iss": c.Issuer, "sub": c.Subject, "jti": c.JTI, "repository_id": c.RepositoryID, "ref": c.Ref} {
			if v != "" && c.Strings[name] != v {
				t.Fatalf("%s = %q but Strings has %q", name, v, c.Strings[name])
			}
		}
		for _, tm := range []struct {
			name string
			set  bool
		}{{"exp", !c.Expiry.IsZero()}, {"iat", !c.IssuedAt.IsZero()}} {
			if _, present := fields[tm.name]; tm.set && !present {
				t.Fatalf("%s set from nothing", tm.name)
			}
		}
	})
}

// FuzzUnverifiedClaims: no input panics; a failure is ErrMalformed and
// never echoes the input; what is decoded is only string claims.
func FuzzUnverifiedClaims(f *testing.F) {
	f.Add(enc(`{"alg":"RS256"}`) + "." + enc(`{"repository_id":"1","exp":5,"aud":["a"]}`) + ".c2ln")
	f.Add("a." + enc(`{"x":"\u2028"}`) + ".")
	f.Add("a.b")
	f.Add("a.b.c.d")
	f.Add("..")
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := UnverifiedClaims(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
				t.Fatal("the error echoes the input")
			}
			return
		}
		payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[1])
		var fields map[string]any
		if err := json.Unmarshal(payload, &fields); err != nil {
			t.Fatalf("accepted a payload encoding/json refuses: %v", err)
		}
		for k, v := range c {
			if fields[k] != v {
				t.Fatalf("claim %q = %q, payload has %#v", k, v, fields[k])
			}
		}
	})
}
