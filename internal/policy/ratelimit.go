package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/rate"
)

// Bounds of a rate limit, so that a typo cannot make one meaningless.
const (
	MaxRateCount  = 1_000_000
	MinRatePeriod = time.Second
	MaxRatePeriod = 24 * time.Hour
)

// RateLimit bounds how fast one repository (one repository_id of one
// issuer) gets tokens through one rule: on average Rate per Period, and up
// to Burst at once after a quiet spell. The zero value is no limit. It is
// the limit the store counts, as it is.
type RateLimit = rate.Limit

// rateLimit reads a rate_limit block:
//
//	rate_limit: {rate: 30/h, burst: 10}   # 30 an hour, 10 at once
//	rate_limit: none                        # (on a rule) no limit
//
// rate is COUNT/PERIOD, PERIOD being s, m, h or a Go duration (10/15m);
// burst defaults to COUNT. none is allowed only where allowNone is true (a
// rule's override of the default).
func (w *walker) rateLimit(where string, n *yaml.Node, allowNone bool) RateLimit {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && n.Value == "none" {
		if !allowNone {
			w.fail(where, n, "none is only for a rule (to lift the default); leave the default out for no limit")
		}
		return RateLimit{}
	}
	f := w.fields(where, n, "rate", "burst")
	var r RateLimit
	rn, ok := f["rate"]
	if !ok {
		if n.Kind == yaml.MappingNode {
			w.fail(where, n, "rate is required (e.g. rate: 30/h)")
		}
		return RateLimit{}
	}
	s, ok := w.str(where+".rate", rn)
	if !ok {
		return RateLimit{}
	}
	count, period, err := parseRate(s)
	if err != nil {
		w.fail(where+".rate", rn, "%q %v", s, err)
		return RateLimit{}
	}
	r.Rate, r.Period, r.Burst = count, period, count
	if bn, ok := f["burst"]; ok {
		b, ok := w.str(where+".burst", bn)
		if !ok {
			return RateLimit{}
		}
		burst, err := strconv.Atoi(b)
		if err != nil || burst < 1 || burst > MaxRateCount {
			w.fail(where+".burst", bn, "%q is not a whole number from 1 to %d", b, MaxRateCount)
			return RateLimit{}
		}
		r.Burst = burst
	}
	return r
}

// parseRate reads COUNT/PERIOD: "30/h", "5/m", "100/24h", "10/15m".
func parseRate(s string) (int, time.Duration, error) {
	c, p, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("is not COUNT/PERIOD such as 30/h or 10/15m")
	}
	count, err := strconv.Atoi(c)
	if err != nil || count < 1 || count > MaxRateCount {
		return 0, 0, fmt.Errorf("count is not a whole number from 1 to %d", MaxRateCount)
	}
	var period time.Duration
	switch p {
	case "s", "m", "h":
		period, _ = time.ParseDuration("1" + p)
	default:
		period, err = time.ParseDuration(p)
		if err != nil {
			return 0, 0, fmt.Errorf("period is not s, m, h or a duration such as 15m")
		}
	}
	if period < MinRatePeriod || period > MaxRatePeriod {
		return 0, 0, fmt.Errorf("period %s is not within %s..%s", period, MinRatePeriod, MaxRatePeriod)
	}
	return count, period, nil
}

// ParseRate reads a rate written as the policy writes one, COUNT/PERIOD
// (30/h, 10/15m), into a limit whose burst is COUNT: the broker's own
// settings (the revoke budget) take their rates in the same syntax.
func ParseRate(s string) (RateLimit, error) {
	count, period, err := parseRate(s)
	if err != nil {
		return RateLimit{}, err
	}
	return RateLimit{Rate: count, Period: period, Burst: count}, nil
}
