package idtoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	"github.com/google/go-cmp/cmp"
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
	f.Add(enc("\u00a0{\"alg\":\"RS256\",\"kid\":\"k\"}\u2028") + "." + enc(`{"iss":"a"}`) + ".c2ln")
	f.Add(enc(`{"alg":"none","alg":"RS256","kid":"k"}`) + "." + enc(`{"iss":"a"}`) + ".c2ln")
	f.Add(enc(`{"alg":"RS256","kid":"k","b64":false}`) + "." + enc(`{"iss":"a"}`) + ".c2ln")
	f.Add(enc(`{"alg":"RS256","KID":"x","kid":"k","x":1e400}`) + "." + enc(`{"iss":"a","ISS":"b"}`) + ".c2ln")
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
		compareHeader(t, raw, tok)
		fields, err := decodeObject(tok.payload, claimNames, 40)
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

// compareHeader holds a header parseJWS accepted to encoding/json and to
// go-jose: json.Unmarshal takes it as it came (no space trimmed), and
// go-jose's parser, which refuses duplicate names, takes the token with
// the same alg and kid. go-jose also decodes a few members the verifier
// never reads (jwk, x5c, nonce, and any number into a float64); a header
// with those is compared with encoding/json only.
func compareHeader(t *testing.T, raw string, tok jws) {
	t.Helper()
	h, _, _ := strings.Cut(raw, ".")
	b, _ := base64.RawURLEncoding.DecodeString(h)
	var hdr map[string]any
	if err := json.Unmarshal(b, &hdr); err != nil {
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) {
			t.Fatalf("parseJWS accepted a header json.Unmarshal refuses: %v", err)
		}
		return
	}
	for _, name := range []string{"jwk", "x5c", "nonce"} {
		if _, ok := hdr[name]; ok {
			return
		}
	}
	j, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatalf("parseJWS accepted a token go-jose refuses: %v", err)
	}
	if got := j.Signatures[0].Header; got.Algorithm != tok.header.Alg || got.KeyID != tok.header.Kid {
		t.Fatalf("parseJWS read alg %q kid %q, go-jose %q %q", tok.header.Alg, tok.header.Kid, got.Algorithm, got.KeyID)
	}
}

// FuzzDecodeObject holds the object decoder to the standards' oracles, on
// the input as it came (nothing trimmed): it accepts exactly the JSON
// objects json.Unmarshal accepts, minus those with a name twice at any
// depth (found on encoding/json's token stream) and those with names that
// strings.EqualFold says differ only by case from each other or from a
// claim this package reads; and its members are encoding/json's.
func FuzzDecodeObject(f *testing.F) {
	f.Add(`{"iss":"i","sub":"s","aud":"a","exp":1700000300,"iat":1700000000,"jti":"j"}`)
	f.Add(` { "a" : [ 1 , "]}" , { "b" : null } ] , "\u00e9\"" : -1.5e3 } `)
	f.Add(`{"a":"\ud800","b":"\xff","c":"\/","d":"x","e":2}`)
	f.Add(`{"d":"x","d":1}`)
	f.Add(`{"n":{"a":1,"a":2}}`)
	f.Add(`{"iss":"a","ISS":"b"}`)
	f.Add(`{"Sub":"a"}`)
	f.Add(`{"x\u212a":"a","xk":"b"}`)
	f.Add(`{}`)
	f.Add(`{"a":1}{"b":2}`)
	f.Add(`{"a":1,}`)
	f.Add("{}\f")
	f.Add("\u00a0{}")
	f.Add("{}\u2028")
	f.Add("\v{}")
	f.Add(`null`)
	f.Add(`["iss"]`)
	f.Add(`{"a":1e400}`)
	f.Fuzz(func(t *testing.T, payload string) {
		got, err := decodeObject([]byte(payload), claimNames, 0)
		var want map[string]json.RawMessage
		werr := json.Unmarshal([]byte(payload), &want)
		if werr == nil && want == nil {
			werr = errors.New("not an object") // "null" decodes to a nil map
		}
		if werr == nil {
			werr = duplicateName(payload)
		}
		if werr == nil {
			werr = caseClash(want)
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("decodeObject error %v, oracle's %v", err, werr)
		}
		if err != nil {
			return
		}
		if n := len(got.strings) + len(got.others); n != len(want) {
			t.Fatalf("decodeObject has %d members, json.Unmarshal %d", n, len(want))
		}
		for k, w := range want {
			s, isString := got.strings[k]
			v, isOther := got.others[k]
			var ws string
			if w[0] == '"' && json.Unmarshal(w, &ws) == nil {
				if !isString || isOther || s != ws {
					t.Fatalf("member %q: decodeObject %q (a string: %v), json.Unmarshal %q", k, s, isString, ws)
				}
				continue
			}
			dec := json.NewDecoder(bytes.NewReader(w))
			dec.UseNumber()
			var wv any
			if err := dec.Decode(&wv); err != nil {
				t.Fatal(err)
			}
			if isString || !isOther {
				t.Fatalf("member %q: decodeObject has no other value, json.Unmarshal %s", k, w)
			}
			if diff := cmp.Diff(wv, stdNumbers(v)); diff != "" {
				t.Fatalf("member %q (-json.Unmarshal +decodeObject):\n%s", k, diff)
			}
		}
	})
}

// stdNumbers returns v with go-jose's json.Number, which is encoding/json's
// under another name, made encoding/json's, at any depth.
func stdNumbers(v any) any {
	switch v := v.(type) {
	case josejson.Number:
		return json.Number(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = stdNumbers(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = stdNumbers(e)
		}
		return out
	}
	return v
}

// duplicateName is the oracle of the duplicate rule, on encoding/json's
// token stream: the first name found twice in one object, at any depth.
// The input is valid JSON (json.Unmarshal took it).
func duplicateName(in string) error {
	dec := json.NewDecoder(strings.NewReader(in))
	dec.UseNumber()
	var seen []map[string]bool  // one set of names per open object
	expectName := func() bool { // the next string in an object is a name
		return len(seen) > 0 && seen[len(seen)-1] != nil
	}
	var afterName bool
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen = append(seen, map[string]bool{})
			afterName = false
			continue
		case json.Delim('['):
			seen = append(seen, nil)
			afterName = false
			continue
		case json.Delim('}'), json.Delim(']'):
			seen = seen[:len(seen)-1]
			afterName = false
			continue
		}
		if name, ok := tok.(string); ok && expectName() && !afterName {
			if seen[len(seen)-1][name] {
				return fmt.Errorf("duplicate name %q", name)
			}
			seen[len(seen)-1][name] = true
			afterName = true
			continue
		}
		afterName = false
	}
}

// caseClash is the oracle of decodeObject's case rule, by its definition:
// strings.EqualFold on every pair of names, and of each name with each
// claim read.
func caseClash(obj map[string]json.RawMessage) error {
	var names []string
	for k := range obj {
		names = append(names, k)
	}
	for i, a := range names {
		for _, b := range names[i+1:] {
			if strings.EqualFold(a, b) {
				return fmt.Errorf("%q and %q differ only by case", a, b)
			}
		}
		for r := range claimNames {
			if a != r && strings.EqualFold(a, r) {
				return fmt.Errorf("%q differs only by case from %q", a, r)
			}
		}
	}
	return nil
}

// FuzzFoldKey: two strings have the same foldKey exactly when
// strings.EqualFold says they are equal.
func FuzzFoldKey(f *testing.F) {
	f.Add("iss", "ISS")
	f.Add("k", "\u212a")
	f.Add("s", "\u017f")
	f.Add("\u00e9", "\u00c9")
	f.Add("ß", "ss")
	f.Add("a", "b")
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return // names come out of encoding/json, always valid UTF-8
		}
		if same, fold := foldKey(a) == foldKey(b), strings.EqualFold(a, b); same != fold {
			t.Fatalf("foldKey(%q) = %q, foldKey(%q) = %q, EqualFold %v", a, foldKey(a), b, foldKey(b), fold)
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
		fields, err := decodeObject([]byte(payload), claimNames, 0)
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
