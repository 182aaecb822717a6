package broker

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// markerPrefix opens the description of every token the broker mints. The
// reaper and the revoke endpoint act only on tokens that carry it, so a
// token made by hand in the Astro UI is never touched.
const markerPrefix = "astro-sts/v1?"

// maxDescription is Astro's limit on a token description.
const maxDescription = 500

// Marker is what the broker writes, machine-readably, into the description
// of a token it minted: enough for any replica, with no state of its own, to
// know when the token must die and which run may revoke it.
type Marker struct {
	Deadline     time.Time // now + TTL: the reaper deletes the token after it
	RepositoryID string
	RunID        string
	RunAttempt   string
	Rule         string
	// Nonce is random and new for every create: when a create's outcome
	// is unknown (a timeout, a reset, a 5xx), the broker finds the token
	// it may have made by this, and deletes it.
	Nonce string
}

// Description renders m as a token description: the marker (URL query
// encoded, so no claim value can break the format) followed by a sentence
// for the human who finds the token in the Astro UI.
func (m Marker) Description(human string) string {
	v := url.Values{}
	v.Set("deadline", m.Deadline.UTC().Format(time.RFC3339))
	v.Set("repository_id", m.RepositoryID)
	v.Set("run_id", m.RunID)
	v.Set("run_attempt", m.RunAttempt)
	v.Set("rule", m.Rule)
	if m.Nonce != "" {
		v.Set("nonce", m.Nonce)
	}
	d := markerPrefix + v.Encode()
	if human != "" {
		d += " " + human
	}
	return truncate(d, maxDescription)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 character
// (a split one would reach Astro as U+FFFD, three bytes, and could push the
// description over its limit).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ParseMarker reads the marker back from a description. ok is false for a
// token the broker did not mint (or whose description was edited beyond
// recognition): such a token is left alone.
func ParseMarker(description string) (m Marker, ok bool) {
	rest, found := strings.CutPrefix(description, markerPrefix)
	if !found {
		return Marker{}, false
	}
	query, _, _ := strings.Cut(rest, " ")
	v, err := url.ParseQuery(query)
	if err != nil {
		return Marker{}, false
	}
	deadline, err := time.Parse(time.RFC3339, v.Get("deadline"))
	if err != nil {
		return Marker{}, false
	}
	m = Marker{
		Deadline:     deadline,
		RepositoryID: v.Get("repository_id"),
		RunID:        v.Get("run_id"),
		RunAttempt:   v.Get("run_attempt"),
		Rule:         v.Get("rule"),
		Nonce:        v.Get("nonce"),
	}
	if m.RepositoryID == "" || m.RunID == "" {
		return Marker{}, false
	}
	return m, true
}

// tokenName tells a human what the token is, e.g. "astro-sts acme/dags run
// 123/1". Astro allows at most 256 characters.
func tokenName(repository, runID, runAttempt string) string {
	return truncate(fmt.Sprintf("astro-sts %s run %s/%s", repository, runID, runAttempt), 256)
}

// sameRun reports whether the marker was written for the run identified by
// the given claims. Attempts are compared as numbers when both parse, so
// "01" and "1" cannot be used to dodge the check either way.
func (m Marker) sameRun(repositoryID, runID, runAttempt string) bool {
	if m.RepositoryID != repositoryID || m.RunID != runID {
		return false
	}
	a, errA := strconv.Atoi(m.RunAttempt)
	b, errB := strconv.Atoi(runAttempt)
	if errA == nil && errB == nil {
		return a == b
	}
	return m.RunAttempt == runAttempt
}
