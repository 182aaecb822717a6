package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/secret"
)

// settings stands for a configuration holding a credential.
type settings struct {
	URL   string
	Token secret.Value
}

func TestValueNeverPrints(t *testing.T) {
	s := settings{URL: "https://vault.example.com", Token: "hvs.hunter2"}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, &s), fmt.Sprintf(verb, s.Token))
	}
	out = append(out, fmt.Sprint(s), fmt.Sprintln(s.Token), s.Token.String(), s.Token.GoString())
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "settings", s, "token", s.Token)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("cfg", "settings", s, "token", s.Token)
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, logs.String(), string(j))
	for _, o := range out {
		if strings.Contains(o, "hunter2") || strings.Contains(o, "68756e74657232") {
			t.Errorf("credential printed: %s", o)
		}
		if !strings.Contains(o, "redacted") {
			t.Errorf("no sign that a credential is set: %s", o)
		}
	}
	if !strings.Contains(fmt.Sprint(s), "vault.example.com") || !strings.Contains(logs.String(), "vault.example.com") {
		t.Errorf("the rest of the settings is not printed: %v\n%s", s, logs.String())
	}
	if got := s.Token.Reveal(); got != "hvs.hunter2" {
		t.Errorf("Reveal = %q", got)
	}
}

func TestEmptyValuePrintsEmpty(t *testing.T) {
	var v secret.Value
	if got := fmt.Sprintf("%v|%#v", v, v); got != `|""` {
		t.Errorf("empty Value prints %q", got)
	}
}

func TestUnmarshalTextTrims(t *testing.T) {
	var v secret.Value
	if err := v.UnmarshalText([]byte("  token-from-a-file\n")); err != nil {
		t.Fatal(err)
	}
	if v.Reveal() != "token-from-a-file" {
		t.Errorf("UnmarshalText kept blanks: %q", v.Reveal())
	}
}
