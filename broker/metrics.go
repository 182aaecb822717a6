package broker

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// Registry holds what a broker serves on /metrics: its own metrics, in a
// set of its own (a process may run many brokers: the tests do), then the
// Go runtime's and the process's.
//
// The metrics are VictoriaMetrics/metrics rather than Prometheus's
// client_golang: both write the same Prometheus text format, but
// client_golang's data model is protobuf, and the two made up 2.2 MB of
// the 15 MB the image may weigh (docs/architecture.md).
type Registry struct {
	set *metrics.Set

	mu   sync.Mutex
	help map[string]string // by metric family: its HELP text; a name is registered once
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	// The library writes # TYPE lines (and empty # HELP lines, which
	// [Registry.write] fills in) only when told to, for the whole process.
	metrics.ExposeMetadata(true)
	return &Registry{set: metrics.NewSet(), help: map[string]string{}}
}

// register claims name for one metric family, with its help text.
func (r *Registry) register(name, help string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.help[name]; ok {
		return fmt.Errorf("metric %s is registered twice", name)
	}
	r.help[name] = help
	return nil
}

// processHelp is the help of the Go runtime's and the process's metrics
// the dashboard and the alerts use; the library writes none.
var processHelp = map[string]string{
	"go_goroutines":                 "Number of goroutines that currently exist.",
	"process_resident_memory_bytes": "Resident memory size in bytes.",
}

// helpEscaper escapes a HELP text as the text format wants it.
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// write writes the exposition to w: the library's, with the help texts
// filled into its empty # HELP lines.
func (r *Registry) write(w io.Writer) error {
	var page bytes.Buffer
	r.set.WritePrometheus(&page)
	metrics.WriteGoMetrics(&page)
	metrics.WriteProcMetrics(&page)
	metrics.WriteFDMetrics(&page)
	r.mu.Lock()
	defer r.mu.Unlock()
	bw := bufio.NewWriter(w)
	for line := range bytes.Lines(page.Bytes()) {
		if name, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
			name = bytes.TrimSuffix(name, []byte("\n"))
			help, ok := r.help[string(name)]
			if !ok {
				help, ok = processHelp[string(name)]
			}
			if ok {
				fmt.Fprintf(bw, "# HELP %s %s\n", name, helpEscaper.Replace(help))
				continue
			}
		}
		bw.Write(line)
	}
	return bw.Flush()
}

// labelEscaper escapes a label value as the text format wants it.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// family is a metric family with labels: its series are made on first
// use, each named name{l1="v1",...} with its labels in name order, as
// client_golang wrote them (a histogram's le comes last).
type family struct {
	set    *metrics.Set
	name   string
	labels []string
	order  []int // indexes into labels, in name order: sorted once, not per observation
}

func newFamily(set *metrics.Set, name string, labels []string) family {
	order := make([]int, len(labels))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int { return strings.Compare(labels[i], labels[j]) })
	return family{set: set, name: name, labels: labels, order: order}
}

// series is the name of the series with these label values, in the order
// of the family's labels. It panics if values are not as many as labels,
// as client_golang did: a call site out of step with its metric's
// definition.
func (f family) series(values []string) string {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("metric %s: %d label values for labels %v", f.name, len(values), f.labels))
	}
	var b strings.Builder
	b.WriteString(f.name)
	b.WriteByte('{')
	for n, i := range f.order {
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(f.labels[i])
		b.WriteString(`="`)
		// Not UTF-8 would make Prometheus drop the whole scrape.
		labelEscaper.WriteString(&b, strings.ToValidUTF8(values[i], "\uFFFD"))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// counter is a counter without labels, or one series of a counterVec.
type counter struct{ c *metrics.Counter }

func (c counter) Inc() { c.c.Inc() }

// Add adds n, a count.
func (c counter) Add(n float64) { c.c.AddInt64(int64(n)) }

// counterVec is a counter family with labels.
type counterVec struct{ family }

func (v *counterVec) WithLabelValues(values ...string) counter {
	return counter{v.set.GetOrCreateCounter(v.series(values))}
}

// histogram is a histogram without labels, or one series of a
// histogramVec.
type histogram struct{ h *metrics.PrometheusHistogram }

func (h histogram) Observe(v float64) { h.h.Update(v) }

// histogramVec is a histogram family with labels.
type histogramVec struct {
	family
	buckets []float64
}

func (v *histogramVec) WithLabelValues(values ...string) histogram {
	return histogram{v.set.GetOrCreatePrometheusHistogramExt(v.series(values), v.buckets)}
}

// Metrics are the broker's Prometheus metrics. None carries a token value
// or a claim with unbounded cardinality (only rule names, outcomes, routes).
type Metrics struct {
	exchanges        *counterVec
	exchangeLatency  *histogramVec
	revokes          *counterVec
	rotations        *counterVec
	upstream         *counterVec
	upstreamLatency  *histogramVec
	upstreamInFlight *metrics.Gauge
	upstreamWait     histogram
	upstreamQueued   *metrics.Gauge
	reaped           *counterVec
	reapErrors       counter
	reapFailedCalls  counter
	reapDuration     histogram
	reapExpired      *metrics.Gauge
	reapOverdue      *metrics.Gauge
	reapSkipped      counter
	undelivered      *counterVec
	rateLimited      *counterVec
	storeErrors      *counterVec
	leaseHeld        *metrics.Gauge
}

// NewMetrics registers the broker's metrics in reg.
func NewMetrics(reg *Registry) (*Metrics, error) {
	// Each metric is built in one line; the first name registered twice
	// is the error.
	var errs []error
	claim := func(name, help string) {
		if err := reg.register(name, help); err != nil {
			errs = append(errs, err)
		}
	}
	counterOf := func(name, help string) counter {
		claim(name, help)
		return counter{reg.set.GetOrCreateCounter(name)}
	}
	counterVecOf := func(name, help string, labels ...string) *counterVec {
		claim(name, help)
		return &counterVec{newFamily(reg.set, name, labels)}
	}
	gauge := func(name, help string) *metrics.Gauge {
		claim(name, help)
		return reg.set.GetOrCreateGauge(name, nil)
	}
	histogramOf := func(name, help string, buckets []float64) histogram {
		claim(name, help)
		return histogram{reg.set.GetOrCreatePrometheusHistogramExt(name, buckets)}
	}
	histogramVecOf := func(name, help string, buckets []float64, labels ...string) *histogramVec {
		claim(name, help)
		return &histogramVec{newFamily(reg.set, name, labels), buckets}
	}
	m := &Metrics{
		exchanges:        counterVecOf("astro_sts_exchanges_total", "Token exchanges by outcome and deciding rule.", "outcome", "rule"),
		exchangeLatency:  histogramVecOf("astro_sts_exchange_duration_seconds", "Time to answer an exchange, by outcome.", metrics.ExponentialBuckets(0.001, 2, 14), "outcome"),
		revokes:          counterVecOf("astro_sts_revokes_total", "Revoke requests by outcome.", "outcome"),
		rotations:        counterVecOf("astro_sts_rotations_total", "Rotations by name and outcome.", "name", "outcome"),
		upstream:         counterVecOf("astro_sts_upstream_requests_total", "Calls to the Astro API by method, route and status (0: no answer).", "method", "route", "status"),
		upstreamLatency:  histogramVecOf("astro_sts_upstream_request_duration_seconds", "Latency of calls to the Astro API.", metrics.ExponentialBuckets(0.001, 2, 14), "method", "route"),
		reaped:           counterVecOf("astro_sts_reaped_tokens_total", "Expired tokens the reaper sent a delete for, by outcome: deleted, or already_gone (Astro answered 404: another replica or a revoke got there first).", "outcome"),
		reapErrors:       counterOf("astro_sts_reap_errors_total", "Reaper passes that failed in part or whole."),
		upstreamInFlight: gauge("astro_sts_upstream_in_flight", "Calls to the Astro API in flight, the broker's and its rotator's (bounded by ASTRO_STS_ASTRO_CONCURRENCY)."),
		upstreamQueued:   gauge("astro_sts_upstream_queued", "Calls to the Astro API waiting for a free slot."),
		upstreamWait:     histogramOf("astro_sts_upstream_wait_seconds", "Time a call to the Astro API waited for a free slot.", metrics.ExponentialBuckets(0.001, 4, 9)),
		reapFailedCalls:  counterOf("astro_sts_reap_failed_calls_total", "Astro calls (lists, deletes) of reaper passes that failed."),
		reapDuration:     histogramOf("astro_sts_reap_duration_seconds", "Duration of reaper passes.", metrics.ExponentialBuckets(0.05, 2, 14)),
		reapExpired:      gauge("astro_sts_reap_expired_tokens", "Expired broker tokens the last reaper pass found."),
		reapOverdue:      gauge("astro_sts_reap_most_overdue_seconds", "How long past its deadline the most overdue token of the last reaper pass was (0: none)."),
		reapSkipped:      counterOf("astro_sts_reap_skipped_ticks_total", "Reaper ticks skipped because the previous pass was still running."),
		undelivered:      counterVecOf("astro_sts_undelivered_tokens_total", "Tokens minted and not handed out, by why (create_outcome_unknown, caller_gone, half_made) and what became of them (deleted, delete_failed, not_found, not_searched).", "why", "outcome"),
		rateLimited:      counterVecOf("astro_sts_rate_limited_total", "Exchanges refused (429) by the deciding rule's rate limit.", "rule"),
		storeErrors:      counterVecOf("astro_sts_store_errors_total", "Failures to reach the store (replay, rate_limit, lease, ping); with Redis, each failed request answered 503.", "op"),
		leaseHeld:        gauge("astro_sts_reaper_lease_held", "1 while this replica holds the reaper's lease (always, without a shared store)."),
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	// The reaper's outcomes are known in advance: each series exists from
	// the start, at 0, so that a rate over it means something before the
	// first reap and the dashboard and alerts find it.
	for _, outcome := range []string{reapDeleted, reapGone} {
		m.reaped.WithLabelValues(outcome)
	}
	return m, nil
}

// Handler serves reg in the Prometheus text format, compressed for a
// client that takes gzip (Prometheus does).
func (m *Metrics) Handler(reg *Registry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if !acceptsGzip(r) {
			reg.write(w)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		gz := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(gz)
		gz.Reset(w)
		reg.write(gz)
		gz.Close()
	})
}

// gzipWriters are reused across scrapes, as client_golang's were: a
// writer holds several hundred KB of compression state, and concurrent
// scrapes each allocating one raised the peak memory by half (200 at
// once: 71-78 MB with client_golang, 115-131 MB without a pool).
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// acceptsGzip tells whether r's Accept-Encoding names gzip.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				return true
			}
		}
	}
	return false
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
func registerDataLoss(reg *Registry, dl dataLoss) error {
	const name = "astro_sts_store_data_lost_total"
	if err := reg.register(name, "Times this replica found the shared store had lost its data (flushed, restarted empty, failed over): ID tokens issued before were refused with 503 restarted, rate-limit budgets started afresh."); err != nil {
		return err
	}
	// A counter read at scrape time: the library's own read-at-scrape
	// metric is a gauge.
	reg.set.RegisterMetricsWriter(func(w io.Writer) { metrics.WriteCounterUint64(w, name, dl.DataLost()) })
	return nil
}

// registerPolicyHealth exposes the policy's reload health: a file that
// stopped loading leaves the broker serving the last good policy (right),
// silently (wrong) until the next restart fails. docs/reliability.md says
// what to alert on.
func registerPolicyHealth(reg *Registry, ph policyHealth) error {
	unix := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	for _, g := range []struct {
		name, help string
		f          func() float64
	}{
		{"astro_sts_policy_reload_ok", "1 if the policy file loaded at the last look, 0 while it is invalid, unreadable or gone (the last good policy stays in force).", func() float64 { return boolGauge(ph.Health().OK) }},
		{"astro_sts_policy_last_reload_timestamp_seconds", "When the policy file was last read and found changed or unreadable (Unix time).", func() float64 { return unix(ph.Health().Checked) }},
		{"astro_sts_policy_last_good_timestamp_seconds", "When a good policy file was last read (Unix time).", func() float64 { return unix(ph.Health().LastGood) }},
		{"astro_sts_policy_rules", "Rules of the policy in force.", func() float64 { return float64(ph.Health().Rules) }},
	} {
		if err := reg.register(g.name, g.help); err != nil {
			return err
		}
		reg.set.GetOrCreateGauge(g.name, g.f)
	}
	return nil
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
