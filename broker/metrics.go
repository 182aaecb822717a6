package broker

import (
	"net/http"
	"strconv"
	"time"

	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the broker's Prometheus metrics. None carries a token value
// or a claim with unbounded cardinality (only rule names, outcomes, routes).
type Metrics struct {
	exchanges        *prometheus.CounterVec
	exchangeLatency  *prometheus.HistogramVec
	revokes          *prometheus.CounterVec
	rotations        *prometheus.CounterVec
	upstream         *prometheus.CounterVec
	upstreamLatency  *prometheus.HistogramVec
	upstreamInFlight prometheus.Gauge
	upstreamWait     prometheus.Histogram
	upstreamQueued   prometheus.Gauge
	reaped           *prometheus.CounterVec
	reapErrors       prometheus.Counter
	reapFailedCalls  prometheus.Counter
	reapDuration     prometheus.Histogram
	reapExpired      prometheus.Gauge
	reapOverdue      prometheus.Gauge
	reapSkipped      prometheus.Counter
	undelivered      *prometheus.CounterVec
	rateLimited      *prometheus.CounterVec
	storeErrors      *prometheus.CounterVec
	leaseHeld        prometheus.Gauge
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
		reaped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_reaped_tokens_total", Help: "Expired tokens the reaper sent a delete for, by outcome: deleted, or already_gone (Astro answered 404: another replica or a revoke got there first).",
		}, []string{"outcome"}),
		reapErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "astro_sts_reap_errors_total", Help: "Reaper passes that failed in part or whole.",
		}),
		upstreamInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "astro_sts_upstream_in_flight", Help: "Calls to the Astro API in flight, the broker's and its rotator's (bounded by ASTRO_STS_ASTRO_CONCURRENCY).",
		}),
		upstreamQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "astro_sts_upstream_queued", Help: "Calls to the Astro API waiting for a free slot.",
		}),
		upstreamWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "astro_sts_upstream_wait_seconds", Help: "Time a call to the Astro API waited for a free slot.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		reapFailedCalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "astro_sts_reap_failed_calls_total", Help: "Astro calls (lists, deletes) of reaper passes that failed.",
		}),
		reapDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "astro_sts_reap_duration_seconds", Help: "Duration of reaper passes.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		reapExpired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "astro_sts_reap_expired_tokens", Help: "Expired broker tokens the last reaper pass found.",
		}),
		reapOverdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "astro_sts_reap_most_overdue_seconds", Help: "How long past its deadline the most overdue token of the last reaper pass was (0: none).",
		}),
		reapSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "astro_sts_reap_skipped_ticks_total", Help: "Reaper ticks skipped because the previous pass was still running.",
		}),
		undelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "astro_sts_undelivered_tokens_total", Help: "Tokens minted and not handed out, by why (create_outcome_unknown, caller_gone, half_made) and what became of them (deleted, delete_failed, not_found).",
		}, []string{"why", "outcome"}),
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
	// The reaper's outcomes are known in advance: each series exists from
	// the start, at 0, so that a rate over it means something before the
	// first reap and the dashboard and alerts find it.
	for _, outcome := range []string{reapDeleted, reapGone} {
		m.reaped.WithLabelValues(outcome)
	}
	for _, c := range []prometheus.Collector{
		m.exchanges, m.exchangeLatency, m.revokes, m.rotations, m.upstream, m.upstreamLatency, m.reaped, m.reapErrors, m.rateLimited, m.storeErrors, m.leaseHeld,
		m.upstreamInFlight, m.upstreamWait, m.upstreamQueued, m.reapFailedCalls, m.reapDuration, m.reapExpired, m.reapOverdue, m.reapSkipped, m.undelivered,
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

// policyHealth is implemented by a policy source that knows how its last
// reload went; *policy.Store does.
type policyHealth interface {
	Health() policy.Health
}

// dataLoss is implemented by a store that can find it lost its data;
// *store.Redis does.
type dataLoss interface {
	DataLost() uint64
}

// registerDataLoss counts the times the shared store was found to have
// lost its data (a new epoch: see restart.go). Each is also an error in
// the log; docs/reliability.md says what to alert on.
func registerDataLoss(reg *prometheus.Registry, dl dataLoss) error {
	return reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "astro_sts_store_data_lost_total", Help: "Times this replica found the shared store had lost its data (flushed, restarted empty, failed over): ID tokens issued before were refused with 503 restarted, rate-limit budgets started afresh.",
	}, func() float64 { return float64(dl.DataLost()) }))
}

// registerPolicyHealth exposes the policy's reload health: a file that
// stopped loading leaves the broker serving the last good policy (right),
// silently (wrong) until the next restart fails. docs/reliability.md says
// what to alert on.
func registerPolicyHealth(reg *prometheus.Registry, ph policyHealth) error {
	unix := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "astro_sts_policy_reload_ok", Help: "1 if the policy file loaded at the last look, 0 while it is invalid, unreadable or gone (the last good policy stays in force).",
		}, func() float64 { return boolGauge(ph.Health().OK) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "astro_sts_policy_last_reload_timestamp_seconds", Help: "When the policy file was last read and found changed or unreadable (Unix time).",
		}, func() float64 { return unix(ph.Health().Checked) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "astro_sts_policy_last_good_timestamp_seconds", Help: "When a good policy file was last read (Unix time).",
		}, func() float64 { return unix(ph.Health().LastGood) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "astro_sts_policy_rules", Help: "Rules of the policy in force.",
		}, func() float64 { return float64(ph.Health().Rules) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
