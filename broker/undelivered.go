package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
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
//     marker, a few times over a short window, and deletes it;
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
	// filter narrows the listing to where the token would be.
	filter astro.ListTokensOptions
	// since is when the create was sent, by the broker's clock.
	since     time.Time
	cause     error
	requestID string // of the exchange that sent the create
}

// recoveryLooks are when, after a create with an unknown outcome, the
// broker looks for the token, as fractions of the Astro timeout: at once,
// then while a slow Astro may still be making it.
var recoveryLooks = []float64{0, 0.25, 0.75, 1.75}

// recoverCreate looks, in the background, for the token a create with an
// unknown outcome may have made, and deletes it. It is tracked, so that
// [Server.Drain] waits for it; when draining starts it looks once more at
// once instead of waiting, then stops (a token made after that is left to
// the reaper, whose marker it carries).
func (s *Server) recoverCreate(p pendingCreate) {
	s.track.enter()
	go func() {
		defer s.track.leave()
		ctx, cancel := context.WithTimeout(context.Background(), 4*s.astroTimeout)
		defer cancel()
		start := time.Now()
		for i, at := range recoveryLooks {
			// Once draining, one more look (at once) is the last.
			last := s.track.isDraining()
			if wait := time.Duration(at*float64(s.astroTimeout)) - time.Since(start); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-s.track.draining():
				case <-ctx.Done():
				}
				t.Stop()
			}
			id, err := s.findByNonce(ctx, p)
			if err != nil {
				s.log.Warn("looking for a token whose create had an unknown outcome", "look", i+1, "error", err)
			}
			if id != "" {
				s.deleteUndelivered(context.WithValue(ctx, requestIDKey{}, p.requestID), id, p.marker, undeliveredUnknown, p.cause)
				return
			}
			if last || ctx.Err() != nil {
				break
			}
		}
		s.metrics.undelivered.WithLabelValues(undeliveredUnknown, "not_found").Inc()
		s.log.LogAttrs(ctx, slog.LevelWarn, "undelivered", append(markerAttrs(p.marker),
			slog.String("audit", "undelivered"),
			slog.String("request_id", p.requestID),
			slog.String("outcome", "not_found"),
			slog.String("why", undeliveredUnknown),
			slog.String("reason", "no token with this create's nonce was found; if Astro made one late, the reaper deletes it after its deadline: "+p.cause.Error()),
		)...)
	}()
}

// findByNonce lists the newest tokens where the create would have put its
// token and returns the id of the one carrying the nonce, or "".
func (s *Server) findByNonce(ctx context.Context, p pendingCreate) (string, error) {
	const pageSize, maxPages = 100, 10
	opts := p.filter
	opts.Sorts = []string{"createdAt:desc"}
	// Astro's clock and the broker's may differ: look a little further
	// back than the create.
	oldest := p.since.Add(-5 * time.Minute)
	for page := range maxPages {
		tp, err := s.astro.ListTokensPage(ctx, s.org, opts, page*pageSize, pageSize)
		if err != nil {
			return "", err
		}
		for _, t := range tp.Tokens {
			if m, ok := ParseMarker(t.Description); ok && m.Nonce == p.marker.Nonce {
				return t.ID, nil
			}
		}
		if len(tp.Tokens) < pageSize || (page+1)*pageSize >= tp.TotalCount || tp.Tokens[len(tp.Tokens)-1].CreatedAt.Before(oldest) {
			return "", nil
		}
	}
	return "", nil
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
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*s.astroTimeout)
	defer cancel()
	reason := ""
	if cause != nil {
		reason = cause.Error()
	}
	record := func(level slog.Level, outcome, reason string) {
		s.log.LogAttrs(ctx, level, "undelivered", append(markerAttrs(m),
			slog.String("audit", "undelivered"),
			slog.String("request_id", requestID(ctx)),
			slog.String("outcome", outcome),
			slog.String("why", why),
			slog.String("token_id", tokenID),
			slog.String("reason", reason),
		)...)
	}
	record(slog.LevelWarn, undeliveredDeleting, reason)
	outcome, level := "deleted", slog.LevelWarn
	if err := s.astro.DeleteToken(ctx, s.org, tokenID); err != nil {
		outcome, level = "delete_failed", slog.LevelError
		reason = fmt.Sprintf("%s; the delete failed too, the reaper deletes it after its deadline: %v", reason, err)
	}
	s.metrics.undelivered.WithLabelValues(why, outcome).Inc()
	record(level, outcome, reason)
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

// tracker counts the operations in flight and the clean-ups they started,
// so that a shutdown can wait for them. Unlike a sync.WaitGroup, it may be
// entered while someone waits (a clean-up started by an operation that is
// finishing).
type tracker struct {
	mu       sync.Mutex
	n        int
	idle     chan struct{} // closed while n == 0
	drainCh  chan struct{} // closed once draining starts
	drainOne sync.Once
}

func newTracker() *tracker {
	t := &tracker{idle: make(chan struct{}), drainCh: make(chan struct{})}
	close(t.idle)
	return t
}

func (t *tracker) enter() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.idle = make(chan struct{})
	}
	t.n++
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.idle)
	}
}

func (t *tracker) draining() <-chan struct{} { return t.drainCh }

func (t *tracker) isDraining() bool {
	select {
	case <-t.drainCh:
		return true
	default:
		return false
	}
}

// wait starts draining and waits until nothing is in flight, or ctx ends.
func (t *tracker) wait(ctx context.Context) (left int, err error) {
	t.drainOne.Do(func() { close(t.drainCh) })
	for {
		t.mu.Lock()
		idle, n := t.idle, t.n
		t.mu.Unlock()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			t.mu.Lock()
			defer t.mu.Unlock()
			return t.n, ctx.Err()
		}
	}
}

// Drain waits until the exchanges and revokes in flight, and the clean-ups
// they started (deleting what was minted and not delivered, finding the
// token of a create with an unknown outcome), have finished, or ctx ends.
// Call it after the HTTP server's Shutdown (and Close, if Shutdown's grace
// ran out): then no new operation can start, and an exchange cut off by
// Close deletes what it minted before Drain returns. A token whose
// clean-up is still running when ctx ends is left to the reaper.
func (s *Server) Drain(ctx context.Context) error {
	left, err := s.track.wait(ctx)
	if err != nil {
		s.log.Error("shutdown: clean-ups still running; the reaper deletes what they leave after its deadline", "left", left, "error", err)
		return fmt.Errorf("broker: %d operations or clean-ups still running: %w", left, err)
	}
	return nil
}

var errCallerGone = errors.New("the caller had gone, or the request's deadline had passed, before the answer was written")
