package broker

import (
	"strings"
	"testing"
	"time"
)

// TestMarkerRequiredKeysFirst: url.Values would sort check_run_id ahead of
// the keys revoking and reaping need, and the cut at 500 bytes would take
// them. They come first, and a marker that was cut anyway is not complete,
// so the broker refuses to mint rather than leave an unfindable token.
func TestMarkerRequiredKeysFirst(t *testing.T) {
	for _, n := range []int{20, 300, 400, 420, 430, 440, 460} {
		m := Marker{Deadline: time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC), RepositoryID: "123456",
			RunID: "9876543210", RunAttempt: "1", Rule: "deploy-main", CheckRunID: strings.Repeat("9", n), Nonce: "0123456789abcdef0123456789abcdef"}
		d := m.Description("human")
		got, ok := ParseMarker(d)
		if !ok || got.Nonce != m.Nonce || got.RepositoryID != m.RepositoryID || got.RunID != m.RunID || !got.Deadline.Equal(m.Deadline) {
			t.Errorf("check_run_id of %d bytes: ParseMarker = %+v, %v: the keys revoking and reaping need were cut", n, got, ok)
		}
		if want := ok && got.CheckRunID == m.CheckRunID && got.Rule == m.Rule; m.complete(d) != want {
			t.Errorf("check_run_id of %d bytes (description %d bytes): complete = %v, want %v", n, len(d), !want, want)
		}
		if n == 460 && m.complete(d) {
			t.Errorf("check_run_id of %d bytes: a marker cut at %d bytes is complete", n, maxDescription)
		}
	}
}
