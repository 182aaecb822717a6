package idtoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// FuzzPeek feeds arbitrary strings to the unverified parsing that runs
// before any signature check (the JOSE header, the payload's members, its
// iss): it must never panic, must classify every failure with a sentinel,
// must only accept an allowed alg with a kid, and must never echo the
// input.
func FuzzPeek(f *testing.F) {
	f.Add(enc(`{"alg":"RS256","kid":"k","typ":"JWT"}`) + "." + enc(`{"iss":"https://token.actions.githubusercontent.com"}`) + ".c2ln")
	f.Add(enc(`{"alg":"none"}`) + "." + enc(`{"iss":"x"}`) + ".")
	f.Add(enc(`{"alg":"HS256","kid":"k"}`) + "." + enc(`{}`) + ".c2ln")
	f.Add(enc(`{"alg":"RS256","kid":"k","crit":["b64"]}`) + "." + enc(`{"iss":1}`) + ".c2ln")
	f.Add(enc(`{"alg":"RS256","kid":"k"} {}`) + "." + enc(`{"iss":"a"}}`) + ".c2ln")
	f.Add(enc(`{"alg":"RS256","kid":"k"}`) + "." + enc(`{"iss":"a\u0041","aud":["x"],"n":{"a":[1,"]"]}}`) + ".c2ln")
	f.Add("a.b.c")
	f.Add("...")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := parseJWS(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("parseJWS error without a sentinel: %v", err)
			}
			if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
				t.Fatalf("parseJWS error echoes the input")
			}
			return
		}
		if !allowedAlg(tok.header.Alg) || tok.header.Kid == "" {
			t.Fatalf("parseJWS accepted alg %q kid %q", tok.header.Alg, tok.header.Kid)
		}
		if strings.Count(raw, ".") != 2 || !strings.HasPrefix(raw, tok.signingInput+".") {
			t.Fatalf("parseJWS accepted %d parts, signing input %q", strings.Count(raw, ".")+1, tok.signingInput)
		}
		fields, err := decodeObject(tok.payload, 40)
		if err != nil {
			if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
				t.Fatalf("payload error echoes the input")
			}
			return
		}
		iss, err := issuerOf(fields)
		switch {
		case err != nil && !errors.Is(err, ErrMalformed):
			t.Fatalf("issuerOf error without ErrMalformed: %v", err)
		case err != nil && len(raw) >= 16 && strings.Contains(err.Error(), raw):
			t.Fatalf("issuerOf error echoes the input")
		case err == nil && iss == "":
			t.Fatal("issuerOf returned an empty issuer without error")
		}
	})
}

// FuzzDecodeObject holds the one-pass object decoder to encoding/json: for
// every input, it accepts exactly the JSON objects json.Unmarshal accepts
// (after the space trimming strictObject has always done), with the same
// members, each string decoded to the same value and each other value the
// same raw JSON.
func FuzzDecodeObject(f *testing.F) {
	f.Add(`{"iss":"i","sub":"s","aud":"a","exp":1700000300,"iat":1700000000,"jti":"j"}`)
	f.Add(` { "a" : [ 1 , "]}" , { "b" : null } ] , "a" : true , "\u00e9\"" : -1.5e3 } `)
	f.Add(`{"a":"\ud800","b":"\xff","c":"\/","d":"x","d":1,"e":2,"e":"y"}`)
	f.Add(`{}`)
	f.Add(`{"a":1}{"b":2}`)
	f.Add(`{"a":1,}`)
	f.Add("{}\f")
	f.Add(`null`)
	f.Add(`["iss"]`)
	f.Fuzz(func(t *testing.T, payload string) {
		got, err := decodeObject([]byte(payload), 0)
		trimmed := strings.TrimSpace(payload)
		var want map[string]json.RawMessage
		werr := json.Unmarshal([]byte(trimmed), &want)
		if werr == nil && !strings.HasPrefix(trimmed, "{") {
			werr = errors.New("not an object") // "null" decodes to a nil map
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("decodeObject error %v, json.Unmarshal error %v", err, werr)
		}
		if err != nil {
			return
		}
		if n := len(got.strings) + len(got.others); n != len(want) {
			t.Fatalf("decodeObject has %d members, json.Unmarshal %d", n, len(want))
		}
		for k, w := range want {
			s, isString := got.strings[k]
			raw, isOther := got.others[k]
			var ws string
			if json.Unmarshal(w, &ws) == nil && w[0] == '"' {
				if !isString || isOther || s != ws {
					t.Fatalf("member %q: decodeObject %q (a string: %v), json.Unmarshal %q", k, s, isString, ws)
				}
				continue
			}
			if isString || !isOther || raw != string(w) {
				t.Fatalf("member %q: decodeObject %q (other: %v), json.Unmarshal %s", k, raw, isOther, w)
			}
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
		fields, err := decodeObject([]byte(payload), 0)
		if err != nil {
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
			if _, present := fields.others[tm.name]; tm.set && !present {
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
