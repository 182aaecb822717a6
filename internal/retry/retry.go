// Package retry is the one retry policy of astro-sts: capped exponential
// backoff that honours a server's Retry-After, and the parser of that
// header. The Astro client, the rotation's sink writes and the action's
// calls to the runner and the broker all wait with it; each keeps its own
// limits (how many attempts, how long a wait) and its own idea of which
// failures are worth another attempt.
//
// A hand-written package rather than github.com/cenkalti/backoff (which
// the module links through Vault's client): backoff/v4 knows nothing of
// Retry-After, and its jitter spreads a wait on both sides of the interval
// where the Astro client wants a guaranteed minimum pause.
package retry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Policy is one caller's retry limits. The zero value runs an operation
// once.
type Policy struct {
	// Attempts is how many times [Policy.Do] runs the operation at most, the
	// first included; less than 1 means 1.
	Attempts int
	// Base is the wait after the first failed attempt; each later wait
	// doubles, up to Max.
	Base, Max time.Duration
	// Jitter draws each backoff from its upper half, [d/2, d] ("equal
	// jitter"): the lower half guarantees a pause, the random half keeps
	// many clients that failed together from retrying together.
	Jitter bool
	// MaxRetryAfter caps the wait a server asks for with Retry-After; 0
	// means Max.
	MaxRetryAfter time.Duration
	// StopOnLongRetryAfter ends the retries when the server asks for more
	// than MaxRetryAfter, instead of waiting MaxRetryAfter: for a client
	// the server refuses until then anyway (go-github, rate limited), an
	// earlier attempt could only fail.
	StopOnLongRetryAfter bool
	// Sleep waits d, or until ctx ends, and then returns ctx's error. nil
	// means a timer; tests give a function that records d and returns at
	// once.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Backoff is the wait after the attempt-th failed attempt (1-based):
// Base*2^(attempt-1) capped at Max, with [Policy.Jitter] applied.
func (p Policy) Backoff(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := p.Max
	// Shift only while it can neither overflow nor pass the cap.
	if shift := attempt - 1; shift < 62 && p.Base <= p.Max>>shift {
		d = p.Base << shift
	}
	if half := d / 2; p.Jitter && half > 0 {
		d = half + rand.N(half+1)
	}
	return d
}

// Delay is the wait after the attempt-th failed attempt when the server
// asked for retryAfter (0 when it did not): the longer of [Policy.Backoff]
// and retryAfter, the latter capped at MaxRetryAfter. ok is false when the
// retries should stop instead ([Policy.StopOnLongRetryAfter]).
func (p Policy) Delay(attempt int, retryAfter time.Duration) (d time.Duration, ok bool) {
	d = p.Backoff(attempt)
	if retryAfter <= d {
		return d, true
	}
	limit := p.MaxRetryAfter
	if limit <= 0 {
		limit = p.Max
	}
	if retryAfter > limit {
		if p.StopOnLongRetryAfter {
			return 0, false
		}
		retryAfter = limit
	}
	return max(d, retryAfter), true
}

// Wait sleeps d with [Policy.Sleep], or until ctx ends, and returns ctx's
// error in that case.
func (p Policy) Wait(ctx context.Context, d time.Duration) error {
	if p.Sleep != nil {
		return p.Sleep(ctx, d)
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Do runs op (attempt 1, 2, ...) until it returns an error that is not
// marked with [Again] (nil included), the attempts are spent, or ctx ends,
// and returns op's last error without the mark. Between attempts it waits
// [Policy.Delay]. When ctx ends before the next attempt, the error is an
// [*Interrupted] holding op's last error.
func (p Policy) Do(ctx context.Context, op func(attempt int) error) error {
	for attempt := 1; ; attempt++ {
		err := op(attempt)
		// Only op's own mark counts: an error that merely wraps a marked
		// one (a nested retry's) is final here.
		again, ok := err.(*againError)
		if !ok {
			return err
		}
		if attempt >= p.Attempts {
			return again.err
		}
		wait, ok := p.Delay(attempt, again.after)
		if !ok {
			return again.err
		}
		if cerr := ctx.Err(); cerr != nil {
			return &Interrupted{Err: again.err, Cause: cerr}
		}
		if werr := p.Wait(ctx, wait); werr != nil {
			return &Interrupted{Err: again.err, Cause: werr}
		}
	}
}

// Again marks err, returned by an operation given to [Policy.Do], as worth
// another attempt, no sooner than after (the server's Retry-After; 0 when
// it gave none). Again(nil, d) is nil.
func Again(err error, after time.Duration) error {
	if err == nil {
		return nil
	}
	return &againError{err: err, after: after}
}

type againError struct {
	err   error
	after time.Duration
}

func (e *againError) Error() string { return e.err.Error() }
func (e *againError) Unwrap() error { return e.err }

// Interrupted is what [Policy.Do] returns when ctx ended while another
// attempt was still due. errors.Is and errors.As see both the operation's
// last error and the context's.
type Interrupted struct {
	Err   error // the operation's last error
	Cause error // ctx's error
}

func (e *Interrupted) Error() string {
	return fmt.Sprintf("%v (while retrying: %v)", e.Err, e.Cause)
}

func (e *Interrupted) Unwrap() []error { return []error{e.Err, e.Cause} }

// MaxAfter bounds what [ParseAfter] returns, so that an absurd header
// cannot overflow a duration; callers cap it further.
const MaxAfter = 24 * time.Hour

// ParseAfter reads a Retry-After header value: delay-seconds or an
// HTTP-date (RFC 9110, section 10.2.3), at most [MaxAfter]. A date is
// counted from now and rounded up to the whole second, so that a wait never
// ends before the instant the server named. It returns 0 for an absent,
// malformed or past value, which means "use your own backoff".
func ParseAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return MaxAfter
			}
			return 0
		}
		if n > uint64(MaxAfter/time.Second) {
			return MaxAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	d = min(d, MaxAfter) // first: a far date saturates d, which must not overflow below
	if r := d % time.Second; r != 0 {
		d += time.Second - r
	}
	return d
}
