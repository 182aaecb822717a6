package astro_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// TestTokenNeverPrintsItsValue: every way a Token reaches a log line or a
// formatted string (fmt verbs, slog's text and JSON handlers, by value and
// by pointer) shows the id and never the value. slog's JSON handler would
// otherwise marshal the struct with its json tags, value included, and the
// broker logs through a JSON handler.
func TestTokenNeverPrintsItsValue(t *testing.T) {
	const secret = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0.c2lnbmF0dXJl"
	tok := astro.Token{ID: "cltokenid", Name: "gh-run-1", Scope: astro.ScopeWorkspace, Token: secret}
	render := map[string]func() string{
		"%v":         func() string { return fmt.Sprintf("%v", tok) },
		"%+v":        func() string { return fmt.Sprintf("%+v", tok) },
		"%#v":        func() string { return fmt.Sprintf("%#v", tok) },
		"%#v ptr":    func() string { return fmt.Sprintf("%#v", &tok) },
		"%s slice":   func() string { return fmt.Sprintf("%s", []astro.Token{tok}) },
		"slog text":  func() string { return logWith(textHandler, "tok", tok) },
		"slog json":  func() string { return logWith(jsonHandler, "tok", tok) },
		"slog ptr":   func() string { return logWith(jsonHandler, "tok", &tok) },
		"slog slice": func() string { return logWith(textHandler, "toks", []astro.Token{tok}) },
	}
	for name, f := range render {
		t.Run(name, func(t *testing.T) {
			out := f()
			if strings.Contains(out, secret) || strings.Contains(out, "c2lnbmF0dXJl") {
				t.Errorf("the value leaks: %s", out)
			}
			if !strings.Contains(out, tok.ID) {
				t.Errorf("the id is missing: %s", out)
			}
		})
	}
}

func textHandler(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) }
func jsonHandler(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }

func logWith(newHandler func(io.Writer) slog.Handler, key string, v any) string {
	var buf bytes.Buffer
	slog.New(newHandler(&buf)).Info("m", key, v)
	return buf.String()
}

// A Config's bearer token never shows when it is printed or logged.
func TestConfigNeverPrintsItsToken(t *testing.T) {
	cfg := astro.Config{BaseURL: "https://api.astronomer.io/v1", Token: "secret-bearer"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", &cfg), buf.String()} {
		if strings.Contains(s, "secret-bearer") || !strings.Contains(s, "api.astronomer.io") {
			t.Errorf("printed: %s", s)
		}
	}
}
