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
	// Each metric is built in one line and kept for registration.
	var cs []prometheus.Collector
	counter := func(name, help string) prometheus.Counter {
		return collect(&cs, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return collect(&cs, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
	}
	gauge := func(name, help string) prometheus.Gauge {
		return collect(&cs, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return collect(&cs, prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}))
	}
	histogramVec := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return collect(&cs, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels))
	}
	m := &Metrics{
		exchanges:        counterVec("astro_sts_exchanges_total", "Token exchanges by outcome and deciding rule.", "outcome", "rule"),
		exchangeLatency:  histogramVec("astro_sts_exchange_duration_seconds", "Time to answer an exchange, by outcome.", prometheus.ExponentialBuckets(0.001, 2, 14), "outcome"),
		revokes:          counterVec("astro_sts_revokes_total", "Revoke requests by outcome.", "outcome"),
		rotations:        counterVec("astro_sts_rotations_total", "Rotations by name and outcome.", "name", "outcome"),
		upstream:         counterVec("astro_sts_upstream_requests_total", "Calls to the Astro API by method, route and status (0: no answer).", "method", "route", "status"),
		upstreamLatency:  histogramVec("astro_sts_upstream_request_duration_seconds", "Latency of calls to the Astro API.", prometheus.ExponentialBuckets(0.001, 2, 14), "method", "route"),
		reaped:           counterVec("astro_sts_reaped_tokens_total", "Expired tokens the reaper sent a delete for, by outcome: deleted, or already_gone (Astro answered 404: another replica or a revoke got there first).", "outcome"),
		reapErrors:       counter("astro_sts_reap_errors_total", "Reaper passes that failed in part or whole."),
		upstreamInFlight: gauge("astro_sts_upstream_in_flight", "Calls to the Astro API in flight, the broker's and its rotator's (bounded by ASTRO_STS_ASTRO_CONCURRENCY)."),
		upstreamQueued:   gauge("astro_sts_upstream_queued", "Calls to the Astro API waiting for a free slot."),
		upstreamWait:     histogram("astro_sts_upstream_wait_seconds", "Time a call to the Astro API waited for a free slot.", prometheus.ExponentialBuckets(0.001, 4, 9)),
		reapFailedCalls:  counter("astro_sts_reap_failed_calls_total", "Astro calls (lists, deletes) of reaper passes that failed."),
		reapDuration:     histogram("astro_sts_reap_duration_seconds", "Duration of reaper passes.", prometheus.ExponentialBuckets(0.05, 2, 14)),
		reapExpired:      gauge("astro_sts_reap_expired_tokens", "Expired broker tokens the last reaper pass found."),
		reapOverdue:      gauge("astro_sts_reap_most_overdue_seconds", "How long past its deadline the most overdue token of the last reaper pass was (0: none)."),
		reapSkipped:      counter("astro_sts_reap_skipped_ticks_total", "Reaper ticks skipped because the previous pass was still running."),
		undelivered:      counterVec("astro_sts_undelivered_tokens_total", "Tokens minted and not handed out, by why (create_outcome_unknown, caller_gone, half_made) and what became of them (deleted, delete_failed, not_found, not_searched).", "why", "outcome"),
		rateLimited:      counterVec("astro_sts_rate_limited_total", "Exchanges refused (429) by the deciding rule's rate limit.", "rule"),
		storeErrors:      counterVec("astro_sts_store_errors_total", "Failures to reach the store (replay, rate_limit, lease, ping); with Redis, each failed request answered 503.", "op"),
		leaseHeld:        gauge("astro_sts_reaper_lease_held", "1 while this replica holds the reaper's lease (always, without a shared store)."),
	}
	// The reaper's outcomes are known in advance: each series exists from
	// the start, at 0, so that a rate over it means something before the
	// first reap and the dashboard and alerts find it.
	for _, outcome := range []string{reapDeleted, reapGone} {
		m.reaped.WithLabelValues(outcome)
	}
	for _, c := range append(cs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// collect appends c to cs and returns it.
func collect[C prometheus.Collector](cs *[]prometheus.Collector, c C) C {
	*cs = append(*cs, c)
	return c
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
// reload went; *policy.Reloader does.
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
	gaugeFunc := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	unix := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	for _, c := range []prometheus.Collector{
		gaugeFunc("astro_sts_policy_reload_ok", "1 if the policy file loaded at the last look, 0 while it is invalid, unreadable or gone (the last good policy stays in force).", func() float64 { return boolGauge(ph.Health().OK) }),
		gaugeFunc("astro_sts_policy_last_reload_timestamp_seconds", "When the policy file was last read and found changed or unreadable (Unix time).", func() float64 { return unix(ph.Health().Checked) }),
		gaugeFunc("astro_sts_policy_last_good_timestamp_seconds", "When a good policy file was last read (Unix time).", func() float64 { return unix(ph.Health().LastGood) }),
		gaugeFunc("astro_sts_policy_rules", "Rules of the policy in force.", func() float64 { return float64(ph.Health().Rules) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
