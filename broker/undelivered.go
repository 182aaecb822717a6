package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// Nothing minted is lost track of. A token can be made and not handed out
// in three ways, and each ends with the token deleted (or, if Astro cannot
// be reached even for that, left to the reaper by its marker) and audit
// records "undelivered", the intent before the delete and the outcome
// after it:
//
//   - the create's outcome is unknown (a timeout, a reset, a 5xx after
//     sending): the broker looks for the token by the nonce it put in the
//     marker, a few times until [DefaultRecoveryWindow] after the create,
//     and deletes it (see [recoverer]);
//   - the caller hung up, or the request's deadline passed, before the
//     answer was written: the broker deletes what it minted;
//   - the broker is shutting down: in-flight exchanges get a grace period
//     longer than the Astro timeout to finish, and [Server.Drain] waits for
//     the clean-ups of those that did not.

// Why a token was not delivered, as the audit record and the metrics say.
const (
	undeliveredUnknown  = "create_outcome_unknown"
	undeliveredGone     = "caller_gone"
	undeliveredHalfMade = "half_made"
)

// undeliveredDeleting is the outcome of the record of intent written
// before an undelivered token's delete is sent (see
// [Server.deleteUndelivered]); the metrics count outcomes only.
const undeliveredDeleting = "deleting"

// newNonce returns 128 random bits, base64url: unguessable, so no one can
// make the broker delete a token by planting a matching description.
func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// pendingCreate is a create whose outcome is unknown.
type pendingCreate struct {
	marker Marker // with the nonce to look for
	// since is when the create was sent, by the broker's clock (compared
	// with Astro's createdAt); sent is the same instant on the monotonic
	// clock, which schedules the looks.
	since     time.Time
	sent      time.Time
	cause     error
	requestID string // of the exchange that sent the create

	// looked is how many of [recoveryLooks] are behind it.
	looked int
	// floor is a createdAt, on Astro's clock, that its token cannot be
	// older than; zero until a listing says (see [recoverer.look]).
	floor time.Time
	// gen numbers the creates in the order they became pending: a look
	// knows which of them it searched for.
	gen uint64
}

// DefaultRecoveryWindow is how long after a create with an unknown outcome
// was sent the broker still looks for its token: a slow Astro may make it
// long after the broker's call gave up (the action tries four times over
// about 30 s, and a create that Astro finishes a minute late must still be
// found).
const DefaultRecoveryWindow = 90 * time.Second

// The search for the tokens of creates with an unknown outcome costs a
// bounded number of Astro calls whatever the number of such creates and
// the organization's size, and never takes a slot of the bound that
// exchanges wait on.
const (
	// recoveryPageSize is Astro's largest page: one listing of the newest
	// tokens covers every pending create at once.
	recoveryPageSize = 1000
	// recoveryPagesPerLook bounds one look; what it does not reach, a later
	// look may.
	recoveryPagesPerLook = 3
	// recoveryPageOverlap re-reads the end of the previous page, so that
	// tokens deleted meanwhile (revokes, the reaper) do not shift an
	// unread one past the next page's offset.
	recoveryPageOverlap = 50
	// recoverySlack is how much older than the newest token of a listing
	// a token made after that listing may be stamped, on Astro's clock:
	// createdAt has whole seconds, and creates in flight commit out of
	// order.
	recoverySlack = 5 * time.Second
	// recoverySkew is how far the broker's clock and Astro's may differ,
	// for a create sent before any listing the broker remembers.
	recoverySkew = 5 * time.Minute
	// recoveryInFlight is how many tokens below the newest one of an
	// earlier look a look re-reads before it continues where that look
	// stopped: creates in flight when the earlier look listed may commit
	// later, stamped just below its newest.
	recoveryInFlight = 200
	// recoveryDeletes is how many found tokens the recovery deletes at
	// once, in its own lane: 1,000 found at once are gone in about 1,000
	// / 8 Astro latencies, well within the window, and the search goes on
	// looking meanwhile.
	recoveryDeletes = 8
	// recoveryMaxPending bounds the creates searched for at once (about
	// 500 B each). A create with an unknown outcome beyond it is not
	// searched for: its token, if Astro made one, is left to the reaper
	// after its deadline (outcome not_searched).
	recoveryMaxPending = 10_000
)

// recoveryLooks are when, after a create with an unknown outcome was sent,
// the broker looks for its token, as fractions of the recovery window: at
// once, then while a slow Astro may still be making it, the last at the
// window's end. A look serves every pending create at once: under a
// sustained error rate, one look a gap is the whole cost.
var recoveryLooks = []float64{0, 1.0 / 9, 1.0 / 3, 2.0 / 3, 1}

// recoverer looks for the tokens of creates with an unknown outcome and
// deletes them. One goroutine runs while anything is pending: its listings
// go to Astro one at a time and the deletes of what it finds at most
// [recoveryDeletes] at once, outside the shared bound (a lane of its own:
// the process has at most the bound's concurrency plus 1 + recoveryDeletes
// calls in flight), each with the bound's timeout.
type recoverer struct {
	s      *Server
	astro  Astro // the unbounded client: recovery has its own lane
	window time.Duration
	// gap is the least time between two looks: window/18, 5 s by
	// default. A listing of the newest tokens is dear for Astro too (at one
	// a second, the emulator's listings under load cost exchanges 40% of
	// their throughput; at one in 5 s, 3%), and a token found 5 s later
	// lives 5 s longer, within a TTL of minutes.
	gap time.Duration

	mu      sync.Mutex
	pending map[*pendingCreate]struct{}
	gen     uint64 // of the last create added to pending
	running bool
	wake    chan struct{}
	// marks are recent listings: when their first page arrived (the
	// broker's clock) and the newest createdAt on it (Astro's).
	marks []lookMark
	// resume is where the last look stopped when its page budget ran out
	// before it reached back far enough; the next look continues there
	// once it has re-read down to that look's newest token.
	resume lookResume
	// deletes bounds the found tokens deleted at once.
	deletes chan struct{}
}

type lookMark struct{ answered, newest time.Time }

// lookResume is a look's coverage, read newest first: every token from
// topID down to the one at asc (its index in the oldest-first order,
// which tokens made later do not shift) was read, while the creates up to
// gen were pending. A look may skip that band if no create pending now
// can have a token in it: each was either searched for by that look or
// sent after it began.
type lookResume struct {
	valid   bool
	started time.Time // the broker's clock
	gen     uint64
	topID   string
	asc     int
}

func newRecoverer(s *Server, raw Astro, window time.Duration) *recoverer {
	window = max(window, 3*s.astroTimeout)
	return &recoverer{s: s, astro: raw, window: window, gap: window / 18, wake: make(chan struct{}, 1),
		pending: map[*pendingCreate]struct{}{}, deletes: make(chan struct{}, recoveryDeletes)}
}

// recoverCreate looks, in the background, for the token a create with an
// unknown outcome may have made, and deletes it. The search is tracked, so
// that [Server.Drain] waits for it; when draining starts it looks once more
// at once instead of waiting, then stops (a token made after that is left
// to the reaper, whose marker it carries).
func (s *Server) recoverCreate(p pendingCreate) {
	r := s.recovery
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= recoveryMaxPending {
		s.metrics.undelivered.WithLabelValues(undeliveredUnknown, "not_searched").Inc()
		s.recordUndelivered(context.Background(), slog.LevelWarn, p.marker, p.requestID, "not_searched", undeliveredUnknown,
			fmt.Sprintf("%d creates are searched for already; if Astro made this one, the reaper deletes it after its deadline: %v", recoveryMaxPending, p.cause))
		return
	}
	// A token made after a listing arrived is stamped no older than that
	// listing's newest, less the slack: the search for it need not go
	// further back.
	for i := len(r.marks) - 1; i >= 0; i-- {
		if !r.marks[i].answered.After(p.since) {
			p.floor = r.marks[i].newest.Add(-recoverySlack)
			break
		}
	}
	r.gen++
	p.gen = r.gen
	r.pending[&p] = struct{}{}
	if r.running {
		select {
		case r.wake <- struct{}{}:
		default:
		}
		return
	}
	r.running = true
	s.track.enter()
	go r.run()
}

func (r *recoverer) due(p *pendingCreate) time.Time {
	return p.sent.Add(time.Duration(recoveryLooks[p.looked] * float64(r.window)))
}

// early is how much ahead of its time a look may stand for a pending
// create's next one: half the wait since its previous, so that creates
// failing close together share their looks. The first look is at once, and
// the last is never early: it is the window's promise.
func (r *recoverer) early(p *pendingCreate) time.Duration {
	i := p.looked
	if i == 0 || i == len(recoveryLooks)-1 {
		return 0
	}
	return time.Duration((recoveryLooks[i] - recoveryLooks[i-1]) / 2 * float64(r.window))
}

func (r *recoverer) run() {
	defer r.s.track.leave()
	var last time.Time
	for {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		var next time.Time
		for p := range r.pending {
			if d := r.due(p); next.IsZero() || d.Before(next) {
				next = d
			}
		}
		r.mu.Unlock()
		if !last.IsZero() && next.Before(last.Add(r.gap)) {
			next = last.Add(r.gap)
		}
		draining := r.s.track.isDraining()
		if wait := time.Until(next); wait > 0 && !draining {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.wake:
				t.Stop()
				continue
			case <-r.s.track.draining():
				draining = true
			}
			t.Stop()
		}
		last = time.Now()
		r.look(draining)
	}
}

// look lists the newest tokens of the organization, once for every pending
// create, as far back as the oldest of them needs (within
// recoveryPagesPerLook pages), deletes those it finds, and gives up on
// those whose last look this was.
func (r *recoverer) look(draining bool) {
	s := r.s
	r.mu.Lock()
	pending := make([]*pendingCreate, 0, len(r.pending))
	for p := range r.pending {
		pending = append(pending, p)
	}
	gen, res := r.gen, r.resume
	r.mu.Unlock()
	started := s.now()
	// The band the last look read may be skipped only if no create
	// pending now can have its token there.
	canJump := res.valid
	for _, p := range pending {
		if p.gen > res.gen && !p.since.After(res.started) {
			canJump = false
		}
	}
	need := func(p *pendingCreate) time.Time {
		if !p.floor.IsZero() {
			return p.floor
		}
		return p.since.Add(-recoverySkew)
	}
	oldestNeed := need(pending[0])
	byNonce := make(map[string]*pendingCreate, len(pending))
	for _, p := range pending {
		byNonce[p.marker.Nonce] = p
		if n := need(p); n.Before(oldestNeed) {
			oldestNeed = n
		}
	}

	found := map[*pendingCreate]string{}
	var (
		newest, reached time.Time // Astro's clock
		listed, all     bool      // a first page arrived; the listing reached its end
		offset          int
		topID           string // the newest token's
		top             = -1   // where the last look's newest is now
		jumped, failed  bool
		stopAsc         int // the oldest token read, oldest-first
	)
	opts := astro.ListTokensOptions{Sorts: []string{"createdAt:desc"}}
	for page := 0; page < recoveryPagesPerLook; page++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.astroTimeout)
		tp, err := r.astro.ListTokensPage(ctx, s.org, opts, offset, recoveryPageSize)
		cancel()
		if err != nil {
			s.log.Warn("looking for the tokens of creates with an unknown outcome", "pending", len(pending), "error", err)
			failed = true
			break
		}
		if page == 0 {
			listed = true
			if len(tp.Tokens) > 0 {
				newest, topID = tp.Tokens[0].CreatedAt, tp.Tokens[0].ID
				r.mark(lookMark{answered: s.now(), newest: newest})
			}
		}
		for i, t := range tp.Tokens {
			if canJump && !jumped && top < 0 && t.ID == res.topID {
				top = offset + i
			}
			if m, ok := ParseMarker(t.Description); ok {
				if p := byNonce[m.Nonce]; p != nil {
					found[p] = t.ID
				}
			}
		}
		if len(tp.Tokens) < recoveryPageSize || offset+len(tp.Tokens) >= tp.TotalCount {
			all = true
			break
		}
		reached = tp.Tokens[len(tp.Tokens)-1].CreatedAt
		stopAsc = tp.TotalCount - offset - len(tp.Tokens)
		if reached.Before(oldestNeed) {
			break
		}
		next := offset + len(tp.Tokens) - recoveryPageOverlap
		if top >= 0 && !jumped && offset+len(tp.Tokens) > top+recoveryInFlight {
			// Down to the last look's newest and the creates then in
			// flight: continue where that look stopped (tokens deleted
			// since only make this re-read some).
			next = max(next, tp.TotalCount-res.asc-recoveryPageOverlap)
			jumped = true
		}
		offset = next
	}
	capped := listed && !failed && !all && !reached.Before(oldestNeed)
	switch {
	case capped && (jumped || !canJump || !res.valid):
		// Everything from this look's newest down to stopAsc is read
		// (with the last look's band, if it continued there).
		r.setResume(lookResume{valid: true, started: started, gen: gen, topID: topID, asc: stopAsc})
	case listed && !failed && !capped:
		r.setResume(lookResume{})
	}

	now := time.Now()
	var gone []*pendingCreate
	r.mu.Lock()
	for _, p := range pending {
		if _, ok := found[p]; ok {
			gone = append(gone, p)
			continue
		}
		// Listed back past where its token could be and not found: a
		// token made later is stamped no older than this listing's newest,
		// less the slack.
		if listed && !newest.IsZero() && (all || reached.Before(need(p))) {
			p.floor = newest.Add(-recoverySlack)
		}
		for p.looked < len(recoveryLooks) && !r.due(p).After(now.Add(r.early(p))) {
			p.looked++
		}
		if p.looked == len(recoveryLooks) || draining {
			gone = append(gone, p)
		}
	}
	for _, p := range gone {
		delete(r.pending, p)
	}
	r.mu.Unlock()

	for _, p := range gone {
		ctx := context.WithValue(context.Background(), requestIDKey{}, p.requestID)
		if id, ok := found[p]; ok {
			// Deleted a few at once, without holding up the next look;
			// tracked, so that a shutdown waits for them.
			s.track.enter()
			go func() {
				defer s.track.leave()
				r.deletes <- struct{}{}
				defer func() { <-r.deletes }()
				s.deleteUndeliveredWith(ctx, r.astro, id, p.marker, undeliveredUnknown, p.cause)
			}()
			continue
		}
		s.metrics.undelivered.WithLabelValues(undeliveredUnknown, "not_found").Inc()
		s.recordUndelivered(ctx, slog.LevelWarn, p.marker, p.requestID, "not_found", undeliveredUnknown,
			"no token with this create's nonce was found; if Astro made one late, the reaper deletes it after its deadline: "+p.cause.Error())
	}
}

func (r *recoverer) setResume(res lookResume) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resume = res
}

// mark remembers a listing for the creates that fail after it, for as long
// as one of them may still be pending.
func (r *recoverer) mark(m lookMark) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks = append(r.marks, m)
	if len(r.marks) > 256 {
		r.marks = slices.Delete(r.marks, 0, len(r.marks)-256)
	}
}

// deleteUndelivered deletes a token that was made and not handed out, with
// a context of its own (the caller's may be what ended), and writes its
// audit records. If the delete fails, the reaper deletes the token after
// its deadline.
//
// The record of intent ("deleting": the token, the request and why) is
// written before the delete is sent, and the outcome's ("deleted",
// "delete_failed") after it. A broker killed between the two leaves a gone
// token whose intent record names it, never a gone token with no record;
// killed before the delete, the token is still there, and the reaper
// deletes it, with a record of its own, after its deadline.
func (s *Server) deleteUndelivered(ctx context.Context, tokenID string, m Marker, why string, cause error) {
	s.deleteUndeliveredWith(ctx, s.astro, tokenID, m, why, cause)
}

// deleteUndeliveredWith is [Server.deleteUndelivered] through a, which is
// the recovery's own lane for the tokens it finds.
func (s *Server) deleteUndeliveredWith(ctx context.Context, a Astro, tokenID string, m Marker, why string, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*s.astroTimeout)
	defer cancel()
	reason := ""
	if cause != nil {
		reason = cause.Error()
	}
	record := func(level slog.Level, outcome, reason string) {
		s.recordUndelivered(ctx, level, m, requestID(ctx), outcome, why, reason, slog.String("token_id", tokenID))
	}
	record(slog.LevelWarn, undeliveredDeleting, reason)
	outcome, level := "deleted", slog.LevelWarn
	if err := a.DeleteToken(ctx, s.org, tokenID); err != nil {
		outcome, level = "delete_failed", slog.LevelError
		reason = fmt.Sprintf("%s; the delete failed too, the reaper deletes it after its deadline: %v", reason, err)
	}
	s.metrics.undelivered.WithLabelValues(why, outcome).Inc()
	record(level, outcome, reason)
}

// recordUndelivered writes one "undelivered" audit record: the marker m
// of a token that was (or may have been) minted for request requestID and
// not handed out, what became of it (outcome), why it was not handed out,
// and the reason; token (its id, once the broker knows one) goes before
// the reason. Every record of an undelivered token is written here, so
// that they all carry the same fields.
func (s *Server) recordUndelivered(ctx context.Context, level slog.Level, m Marker, requestID, outcome, why, reason string, token ...slog.Attr) {
	attrs := append(markerAttrs(m),
		slog.String("audit", "undelivered"),
		slog.String("request_id", requestID),
		slog.String("outcome", outcome),
		slog.String("why", why),
	)
	attrs = append(attrs, token...)
	attrs = append(attrs, slog.String("reason", reason))
	s.log.LogAttrs(ctx, level, "undelivered", attrs...)
}

func markerAttrs(m Marker) []slog.Attr {
	return []slog.Attr{
		slog.String("repository_id", m.RepositoryID),
		slog.String("run_id", m.RunID),
		slog.String("run_attempt", m.RunAttempt),
		slog.String("rule", m.Rule),
		slog.Time("deadline", m.Deadline),
	}
}
