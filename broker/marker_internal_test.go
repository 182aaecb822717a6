package broker

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestTokenNameLimit: a name stays within Astro's 256 characters however
// long the repository, and it is the repository's name that gives way, not
// the run and job that tell one token from another.
func TestTokenNameLimit(t *testing.T) {
	tests := []struct {
		repository, checkRunID string
		want                   string // the name's end
	}{
		{"acme/dags", "31337000001", "astro-sts acme/dags run 9876543210/1 job 31337000001"},
		{"acme/dags", "", "astro-sts acme/dags run 9876543210/1"},
		{"acme/" + strings.Repeat("r", 300), "31337000001", " run 9876543210/1 job 31337000001"},
		{"acme/" + strings.Repeat("é", 200), "31337000001", " run 9876543210/1 job 31337000001"},
	}
	for _, tt := range tests {
		got := tokenName(tt.repository, "9876543210", "1", tt.checkRunID)
		if len(got) > maxTokenName || !strings.HasSuffix(got, tt.want) || !strings.HasPrefix(got, "astro-sts acme/") {
			t.Errorf("tokenName(%.20q...) = %q (%d bytes), want it to end %q within %d", tt.repository, got, len(got), tt.want, maxTokenName)
		}
		if !utf8.ValidString(got) {
			t.Errorf("tokenName split a character: %q", got)
		}
	}
}
