package broker

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		want    brokerapi.ExchangeRequest
		wantErr string // "" means accepted
	}{
		{"empty", "", brokerapi.ExchangeRequest{}, ""},
		{"blank", " \n", brokerapi.ExchangeRequest{}, ""},
		{"empty object", "{}", brokerapi.ExchangeRequest{}, ""},
		{"all fields", `{"workspace_id":"ws","deployment_id":"d","role":"WORKSPACE_AUTHOR","ttl":"5m"}`,
			brokerapi.ExchangeRequest{WorkspaceID: "ws", DeploymentID: "d", Role: "WORKSPACE_AUTHOR", TTL: "5m"}, ""},
		{"escaped key is the same name", `{"r\u006fle":"X"}`, brokerapi.ExchangeRequest{Role: "X"}, ""},
		{"upper case key", `{"ROLE":"WORKSPACE_OWNER"}`, brokerapi.ExchangeRequest{}, `unknown field "ROLE"`},
		{"mixed case key", `{"Ttl":"1h"}`, brokerapi.ExchangeRequest{}, `unknown field "Ttl"`},
		{"duplicate key", `{"role":"WORKSPACE_MEMBER","role":"WORKSPACE_OWNER"}`, brokerapi.ExchangeRequest{}, `duplicate field "role"`},
		{"unknown key", `{"rolee":"x"}`, brokerapi.ExchangeRequest{}, "unknown field"},
		{"long unknown key is cut", `{"` + strings.Repeat("k", 500) + `":1}`, brokerapi.ExchangeRequest{}, `..."`},
		{"not an object", `["role"]`, brokerapi.ExchangeRequest{}, "must be a JSON object"},
		{"null", `null`, brokerapi.ExchangeRequest{}, "must be a JSON object"},
		{"two objects", `{} {}`, brokerapi.ExchangeRequest{}, "single JSON object"},
		{"trailing garbage", `{}x`, brokerapi.ExchangeRequest{}, "single JSON object"},
		{"truncated", `{"role":`, brokerapi.ExchangeRequest{}, "not valid JSON"},
		{"wrong type", `{"ttl":5}`, brokerapi.ExchangeRequest{}, `field "ttl" has the wrong type`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got brokerapi.ExchangeRequest
			err := decodeStrict(strings.NewReader(tc.body), &got)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
				return
			}
			var bad *badRequestError
			if !errors.As(err, &bad) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want a bad request containing %q", err, tc.wantErr)
			}
			if len(err.Error()) > 200 {
				t.Errorf("message of %d bytes", len(err.Error()))
			}
		})
	}
}

func TestDecodeStrictKeepsTheSizeError(t *testing.T) {
	rec := httptest.NewRecorder()
	body := http.MaxBytesReader(rec, http.NoBody, 0)
	big := http.MaxBytesReader(rec, readCloser{strings.NewReader(`{"role":"` + strings.Repeat("A", 100) + `"}`)}, 10)
	var req brokerapi.ExchangeRequest
	if err := decodeStrict(body, &req); err != nil {
		t.Fatalf("empty body: %v", err)
	}
	var maxErr *http.MaxBytesError
	if err := decodeStrict(big, &req); !errors.As(err, &maxErr) {
		t.Fatalf("oversized body: %v, want *http.MaxBytesError", err)
	}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

// FuzzDecodeStrict: any body either is refused with a safe error or
// decodes to what a JSON object with exactly those keys, each once, holds.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{"", "{}", `{"role":"A","ttl":"5m"}`, `{"ROLE":1}`, `{"role":"a","role":"b"}`, `[1]`, `{"a":{"b":[1,2]}}`, `{"ttl":"5m"}{}`} {
		f.Add(s)
	}
	fields := jsonFields(&brokerapi.ExchangeRequest{})
	f.Fuzz(func(t *testing.T, body string) {
		var got brokerapi.ExchangeRequest
		err := decodeStrict(strings.NewReader(body), &got)
		if err != nil {
			var bad *badRequestError
			if !errors.As(err, &bad) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if strings.TrimSpace(body) == "" {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("accepted a body that is not a JSON object: %q", body)
		}
		for k := range m {
			if !fields[k] {
				t.Fatalf("accepted key %q", k)
			}
		}
		var want brokerapi.ExchangeRequest
		if err := json.Unmarshal([]byte(body), &want); err != nil || want != got {
			t.Fatalf("decoded %+v, encoding/json says %+v (%v)", got, want, err)
		}
	})
}
