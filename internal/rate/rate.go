// Package rate is a rate limit as the trust policy writes it
// (policy.RateLimit) and the shared store counts it (store.Limit): one
// type, so that the broker hands a rule's limit to the store as it is.
package rate

import (
	"fmt"
	"time"
)

// Limit is on average Rate events per Period, and up to Burst at once
// after a quiet spell (the generic cell rate algorithm: one event's worth
// of budget comes back every [Limit.Interval]). The zero value is no
// limit.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// IsZero reports whether l is "no limit".
func (l Limit) IsZero() bool { return l == Limit{} }

// String is how the policy writes it: "30/1h0m0s, burst 10".
func (l Limit) String() string {
	if l.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%d/%s, burst %d", l.Rate, l.Period, l.Burst)
}

// Validate refuses a limit the algorithm cannot apply.
func (l Limit) Validate() error {
	if l.Rate < 1 || l.Burst < 1 || l.Period <= 0 {
		return fmt.Errorf("invalid limit %d per %s, burst %d", l.Rate, l.Period, l.Burst)
	}
	return nil
}

// Interval is the time one event's worth of budget takes to come back.
func (l Limit) Interval() time.Duration { return l.Period / time.Duration(l.Rate) }
