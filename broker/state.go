package broker

import (
	"errors"
	"time"

	"github.com/astro-sts/astro-sts/internal/store"
)

// What every call of the broker to its [store.Store] shares: a bound on
// the calls made outside a request, and the count of failures to answer.
// The replay check is [Server.spend], the rate limit beside the exchange,
// the readiness ready.go and the reaper's lease lease.go.

// storeTimeout bounds the readiness probe's ping.
const storeTimeout = 2 * time.Second

// storeErr counts err if it is the store's failure to answer, and returns
// it.
func (s *Server) storeErr(op string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		s.metrics.storeErrors.WithLabelValues(op).Inc()
	}
	return err
}
