package astro

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// backoff returns the wait after the attempt-th failed attempt (1-based):
// base*2^(attempt-1) capped at maxDelay, of which the upper half is random
// ("equal jitter"). The lower half guarantees a minimum pause; the random
// half keeps many clients that failed together from retrying together.
func backoff(attempt int, base, maxDelay time.Duration) time.Duration {
	d := maxDelay
	if attempt < 1 {
		attempt = 1
	}
	// Shift only while it cannot overflow or pass the cap.
	if shift := attempt - 1; shift < 62 && base <= maxDelay>>shift {
		d = base << shift
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}

// maxRetryAfterHeader bounds what parseRetryAfter accepts before the
// client's own cap applies, so that an absurd header cannot overflow.
const maxRetryAfterHeader = 24 * time.Hour

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date (RFC 9110 section 10.2.3). It returns 0 for an absent,
// malformed or past value, which means "use the client's own backoff".
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return maxRetryAfterHeader
			}
			return 0
		}
		if n > uint64(maxRetryAfterHeader/time.Second) {
			return maxRetryAfterHeader
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
	return min(d, maxRetryAfterHeader)
}
