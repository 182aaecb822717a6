package broker

import (
	"net/url"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

// FuzzCheckQuery: whatever the query, checkQuery never panics; what it
// accepts is exactly what the endpoint takes (dry_run once, no ';'), and
// its refusal, which goes back to the caller, stays short (64 bytes of
// the input, each at most 4 once quoted).
func FuzzCheckQuery(f *testing.F) {
	for _, s := range []string{"", "dry_run=true", "DRY_RUN=true", "dry_run=true;", "x=1;dry_run=true",
		"dry_run=true&dry_run=false", "dry%5Frun=true", "%zz", "&&dry_run=true&", strings.Repeat("a", 300) + "=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := checkQuery(raw, "dry_run")
		if err != nil {
			if ae := classify(err); ae.code != brokerapi.CodeBadRequest || len(ae.message) > 400 {
				t.Fatalf("refusal %d %s %q", ae.status, ae.code, ae.message)
			}
			return
		}
		if strings.Contains(raw, ";") {
			t.Fatalf("accepted %q with a ';'", raw)
		}
		q, perr := url.ParseQuery(raw)
		if perr != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, perr)
		}
		for k, vs := range q {
			if k != "dry_run" || len(vs) != 1 {
				t.Fatalf("accepted %q: %s given %d times", raw, k, len(vs))
			}
		}
	})
}
