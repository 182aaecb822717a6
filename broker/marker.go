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
	// CheckRunID is the job's check run (GitHub's check_run_id claim,
	// since 2025-11), which names one job where run_id names the whole
	// workflow run; empty when the token has none. Markers written before
	// it existed have none either, and parse as before.
	CheckRunID string
	// Nonce is random and new for every create: when a create's outcome
	// is unknown (a timeout, a reset, a 5xx), the broker finds the token
	// it may have made by this, and deletes it.
	Nonce string
}

// Description renders m as a token description: the marker (URL query
// encoded, so no claim value can break the format) followed by a sentence
// for the human who finds the token in the Astro UI.
//
// The keys the reaper, the revoke endpoint and the search for an unknown
// create need (deadline, repository_id, run_id, nonce) come first, in a
// fixed order: url.Values.Encode sorts its keys, which would put a long
// check_run_id ahead of them, and the cut at Astro's limit would then
// remove them. [Marker.complete] checks, before a create, that nothing the
// marker holds was cut.
func (m Marker) Description(human string) string {
	var b strings.Builder
	b.WriteString(markerPrefix)
	add := func(key, value string) {
		if b.Len() > len(markerPrefix) {
			b.WriteByte('&')
		}
		b.WriteString(key)
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(value))
	}
	add("deadline", m.Deadline.UTC().Format(time.RFC3339))
	add("repository_id", m.RepositoryID)
	add("run_id", m.RunID)
	if m.Nonce != "" {
		add("nonce", m.Nonce)
	}
	add("run_attempt", m.RunAttempt)
	if m.CheckRunID != "" {
		add("check_run_id", m.CheckRunID)
	}
	add("rule", m.Rule)
	d := b.String()
	if human != "" {
		d += " " + human
	}
	return truncate(d, maxDescription)
}

// complete reports whether description, m's rendering, gives m back whole:
// false when Astro's length limit cut into the marker itself. A token whose
// marker is cut could be neither revoked by its run nor reaped, so the
// broker refuses to mint it.
func (m Marker) complete(description string) bool {
	got, ok := ParseMarker(description)
	return ok && got.Deadline.Equal(m.Deadline) && got.RepositoryID == m.RepositoryID &&
		got.RunID == m.RunID && got.RunAttempt == m.RunAttempt && got.Rule == m.Rule &&
		got.CheckRunID == m.CheckRunID && got.Nonce == m.Nonce
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
//
// Keys are read by name and unknown ones ignored, and only deadline,
// repository_id and run_id are required: a key added later (check_run_id
// was) neither breaks a replica that does not know it yet nor makes the
// markers written before it unreadable.
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
		CheckRunID:   v.Get("check_run_id"),
		Nonce:        v.Get("nonce"),
	}
	if m.RepositoryID == "" || m.RunID == "" {
		return Marker{}, false
	}
	return m, true
}

// maxTokenName is Astro's limit on a token name.
const maxTokenName = 256

// tokenName tells a human what the token is, e.g. "astro-sts acme/dags run
// 123/1 job 456": the repository, the workflow run and attempt, and the job
// (its check run, which is also the job's id in its URL .../runs/123/job/456)
// when the token says. A name too long for Astro loses the end of the
// repository's name first, so the run and job stay readable.
func tokenName(repository, runID, runAttempt, checkRunID string) string {
	const prefix = "astro-sts "
	suffix := fmt.Sprintf(" run %s/%s", runID, runAttempt)
	if checkRunID != "" {
		suffix += " job " + checkRunID
	}
	if room := maxTokenName - len(prefix) - len(suffix); room >= 0 && len(repository) > room {
		repository = truncate(repository, room)
	}
	return truncate(prefix+repository+suffix, maxTokenName)
}

// sameRun reports whether the marker was written for the run identified by
// the given claims. Attempts are compared as numbers when both parse, so
// "01" and "1" cannot be used to dodge the check either way.
func (m Marker) sameRun(repositoryID, runID, runAttempt string) bool {
	return m.RepositoryID == repositoryID && m.RunID == runID &&
		canonicalAttempt(m.RunAttempt) == canonicalAttempt(runAttempt)
}

// canonicalAttempt is a run attempt written as a number when it is one
// ("01" is "1"), else as it is.
func canonicalAttempt(attempt string) string {
	if n, err := strconv.Atoi(attempt); err == nil {
		return strconv.Itoa(n)
	}
	return attempt
}
