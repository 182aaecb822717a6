package broker

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the broker's Prometheus metrics. None carries a token value
// or a claim with unbounded cardinality (only rule names, outcomes, routes).
type Metrics struct {
	exchanges       *prometheus.CounterVec
	exchangeLatency *prometheus.HistogramVec
	revokes         *prometheus.CounterVec
	rotations       *prometheus.CounterVec
	upstream        *prometheus.CounterVec
	upstreamLatency *prometheus.HistogramVec
	reaped          prometheus.Counter
	reapErrors      prometheus.Counter
	rateLimited     *prometheus.CounterVec
	storeErrors     *prometheus.CounterVec
	leaseHeld       prometheus.Gauge
}

// NewMetrics registers the broker's metrics in reg.
func NewMetrics(reg *prometheus.Registry) (*Metrics, error) {
	m := &Metrics{
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_exchanges_total", Help: "Token exchanges by outcome and deciding rule.",
		}, []string{"outcome", "rule"}),
		exchangeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "astro_sts_exchange_duration_seconds", Help: "Time to answer an exchange, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"outcome"}),
		revokes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_revokes_total", Help: "Revoke requests by outcome.",
		}, []string{"outcome"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_rotations_total", Help: "Rotations by name and outcome.",
		}, []string{"name", "outcome"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_upstream_requests_total", Help: "Calls to the Astro API by method, route and status (0: no answer).",
		}, []string{"method", "route", "status"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "astro_sts_upstream_request_duration_seconds", Help: "Latency of calls to the Astro API.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"method", "route"}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "astro_sts_reaped_tokens_total", Help: "Tokens deleted by the reaper after their deadline.",
		}),
		reapErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "astro_sts_reap_errors_total", Help: "Reaper passes that failed in part or whole.",
		}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_rate_limited_total", Help: "Exchanges refused (429) by the deciding rule's rate limit.",
		}, []string{"rule"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_store_errors_total", Help: "Failures to reach the store (replay, rate_limit, lease, ping); with Redis, each failed request answered 503.",
		}, []string{"op"}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "astro_sts_reaper_lease_held", Help: "1 while this replica holds the reaper's lease (always, without a shared store).",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.exchanges, m.exchangeLatency, m.revokes, m.rotations, m.upstream, m.upstreamLatency, m.reaped, m.reapErrors, m.rateLimited, m.storeErrors, m.leaseHeld,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Handler serves reg in the Prometheus exposition format.
func (m *Metrics) Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// ObserveUpstream counts one call to the Astro API; it has the signature of
// the Astro client's Observe hook.
func (m *Metrics) ObserveUpstream(method, route string, status int, d time.Duration) {
	m.upstream.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.upstreamLatency.WithLabelValues(method, route).Observe(d.Seconds())
}

// observe counts one finished operation under outcome, in the operation's
// own metric.
func (m *Metrics) observe(e *event, outcome string, end time.Time) {
	switch e.op {
	case opExchange:
		var rule string
		if e.decision != nil {
			rule = e.decision.Rule
		}
		m.exchanges.WithLabelValues(outcome, rule).Inc()
		m.exchangeLatency.WithLabelValues(outcome).Observe(end.Sub(e.start).Seconds())
	case opRevoke:
		m.revokes.WithLabelValues(outcome).Inc()
	case opRotate:
		// Only a name the policy knows: the caller's could be anything.
		m.rotations.WithLabelValues(e.rotation, outcome).Inc()
	}
}
