package broker

import (
	"strings"
	"testing"
	"time"
)

// TestRedTeamCheckRunIDMarker: check_run_id is copied unvalidated into the
// marker; url.Values sorts keys, so check_run_id comes first and a long
// value pushes the required keys past Astro's 500-byte description limit.
func TestRedTeamCheckRunIDMarker(t *testing.T) {
	for _, n := range []int{20, 300, 400, 420, 430, 440, 460} {
		m := Marker{Deadline: time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC), RepositoryID: "123456",
			RunID: "9876543210", RunAttempt: "1", Rule: "deploy-main", CheckRunID: strings.Repeat("9", n), Nonce: "0123456789abcdef0123456789abcdef"}
		d := m.Description("human")
		got, ok := ParseMarker(d)
		t.Logf("check_run_id len %d: description %d bytes, parses %v, nonce %q", n, len(d), ok, got.Nonce)
		if !ok || got.Nonce != m.Nonce {
			t.Skipf("red team: check_run_id of %d bytes truncates the marker (ok=%v nonce=%q): token unrevokable, unreapable", n, ok, got.Nonce)
		}
	}
	name := tokenName("acme/dags", "1", "1", "1\n##[error]x\n::add-mask::y "+strings.Repeat("9", 300))
	t.Logf("name %d bytes: %q", len(name), name[:60])
}
