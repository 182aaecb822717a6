package broker_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/astro-sts/astro-sts/broker"
)

// /metrics is the Prometheus text format as Prometheus's own parser reads
// it, plain or gzipped: every family typed and with its help, a label
// value with a quote, a backslash and a newline read back as it was, the
// histograms with their buckets, and the Go runtime's and the process's
// metrics the dashboard and the alerts use.
func TestMetricsExposition(t *testing.T) {
	reg := broker.NewRegistry()
	m, err := broker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	const route = "a\"b\\c\nd\\"
	m.ObserveUpstream(http.MethodGet, route, http.StatusOK, 3*time.Millisecond)
	srv := httptest.NewServer(m.Handler(reg))
	defer srv.Close()
	// The client leaves the Accept-Encoding to the test, and the body as
	// sent.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}

	for _, gz := range []bool{false, true} {
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
			t.Errorf("gzip %v: Content-Type %q", gz, ct)
		}
		var body io.Reader = resp.Body
		if got := resp.Header.Get("Content-Encoding"); got != map[bool]string{true: "gzip"}[gz] {
			t.Fatalf("gzip %v: Content-Encoding %q", gz, got)
		}
		if gz {
			if body, err = gzip.NewReader(resp.Body); err != nil {
				t.Fatal(err)
			}
		}
		page, err := io.ReadAll(body)
		if err != nil {
			t.Fatal(err)
		}
		// The line as client_golang wrote it, byte for byte.
		if want := `astro_sts_upstream_requests_total{method="GET",route="a\"b\\c\nd\\",status="200"} 1` + "\n"; !strings.Contains(string(page), want) {
			t.Errorf("gzip %v: no line %q in\n%s", gz, want, page)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(page))
		if err != nil {
			t.Fatalf("gzip %v: %v", gz, err)
		}

		for name, mf := range families {
			if strings.HasPrefix(name, "astro_sts_") && mf.GetHelp() == "" {
				t.Errorf("%s has no help", name)
			}
		}
		for name, typ := range map[string]dto.MetricType{
			"astro_sts_upstream_requests_total":           dto.MetricType_COUNTER,
			"astro_sts_upstream_request_duration_seconds": dto.MetricType_HISTOGRAM,
			"astro_sts_reaped_tokens_total":               dto.MetricType_COUNTER,
			"astro_sts_upstream_in_flight":                dto.MetricType_GAUGE,
			"astro_sts_upstream_wait_seconds":             dto.MetricType_HISTOGRAM,
			"go_goroutines":                               dto.MetricType_GAUGE,
			"process_resident_memory_bytes":               dto.MetricType_GAUGE,
		} {
			if mf := families[name]; mf == nil || mf.GetType() != typ {
				t.Errorf("gzip %v: %s is %v, want a %v", gz, name, mf.GetType(), typ)
			}
		}

		calls := families["astro_sts_upstream_requests_total"]
		if calls.GetHelp() != "Calls to the Astro API by method, route and status (0: no answer)." || len(calls.GetMetric()) != 1 {
			t.Fatalf("gzip %v: %v", gz, calls)
		}
		call := calls.GetMetric()[0]
		if d := cmp.Diff(map[string]string{"method": "GET", "route": route, "status": "200"}, labels(call)); d != "" {
			t.Errorf("gzip %v: labels (-want +got):\n%s", gz, d)
		}
		if call.GetCounter().GetValue() != 1 {
			t.Errorf("gzip %v: %v calls, want 1", gz, call.GetCounter().GetValue())
		}

		latency := families["astro_sts_upstream_request_duration_seconds"].GetMetric()
		if len(latency) != 1 {
			t.Fatalf("gzip %v: %d latency series, want 1", gz, len(latency))
		}
		if d := cmp.Diff(map[string]string{"method": "GET", "route": route}, labels(latency[0])); d != "" {
			t.Errorf("gzip %v: latency labels (-want +got):\n%s", gz, d)
		}
		h := latency[0].GetHistogram()
		var bounds []float64
		var counts []uint64
		for _, b := range h.GetBucket() {
			bounds = append(bounds, b.GetUpperBound())
			counts = append(counts, b.GetCumulativeCount())
		}
		wantBounds := []float64{0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, math.Inf(1)}
		if d := cmp.Diff(wantBounds, bounds); d != "" {
			t.Errorf("gzip %v: latency buckets (-want +got):\n%s", gz, d)
		}
		if d := cmp.Diff([]uint64{0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, counts); d != "" {
			t.Errorf("gzip %v: latency bucket counts (-want +got):\n%s", gz, d)
		}
		if h.GetSampleCount() != 1 || h.GetSampleSum() != 0.003 {
			t.Errorf("gzip %v: latency count %d, sum %v", gz, h.GetSampleCount(), h.GetSampleSum())
		}

		// The reaper's outcomes are there before its first pass.
		var outcomes []string
		for _, s := range families["astro_sts_reaped_tokens_total"].GetMetric() {
			outcomes = append(outcomes, labels(s)["outcome"])
		}
		if d := cmp.Diff([]string{"already_gone", "deleted"}, outcomes); d != "" {
			t.Errorf("gzip %v: reaped outcomes (-want +got):\n%s", gz, d)
		}
	}

	// A registry holds each metric once, as client_golang's did.
	if _, err := broker.NewMetrics(reg); err == nil {
		t.Error("NewMetrics registered the broker's metrics twice in one registry")
	}
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// A label value that is not UTF-8 must not make the page unreadable:
// Prometheus drops a whole scrape over one such value, and with it every
// alert.
func TestMetricsLabelValueNotUTF8(t *testing.T) {
	reg := broker.NewRegistry()
	m, err := broker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveUpstream(http.MethodGet, "a\xffb", http.StatusOK, time.Millisecond)
	srv := httptest.NewServer(m.Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the page does not parse: %v", err)
	}
	calls := families["astro_sts_upstream_requests_total"].GetMetric()
	if len(calls) != 1 || labels(calls[0])["route"] != "a\uFFFDb" {
		t.Errorf("route label: %v, want a\uFFFDb", calls)
	}
}
