package main

// The alerting rules, their unit tests' input series and the Grafana
// dashboard (deploy/prometheus, deploy/grafana) against a real broker's
// /metrics: the astro-sts binary the tests build, with Redis, the emulator
// and an OIDC issuer, driven until every metric they name has a series.
// A rule or panel over a metric the broker does not serve, or over a label
// it does not carry, never fires or stays empty without any error:
// Prometheus takes it for a metric that has not been seen yet.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
	"go.yaml.in/yaml/v3"
)

const (
	alertsPath     = "../../deploy/prometheus/alerts.yaml"
	alertsTestPath = "../../deploy/prometheus/alerts_test.yaml"
	dashboardPath  = "../../deploy/grafana/astro-sts.json"
)

// scrapeLabels are the labels Prometheus adds to every series it scrapes;
// the rules group by them.
var scrapeLabels = []string{"instance", "job"}

// faultyAstro answers the next create with 503 after the emulator made the
// token, as a proxy that lost the answer would: the broker's create ends
// with an unknown outcome.
type faultyAstro struct {
	next       http.Handler
	loseCreate atomic.Bool
}

func (f *faultyAstro) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tokens") && f.loseCreate.CompareAndSwap(true, false) {
		f.next.ServeHTTP(httptest.NewRecorder(), r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"message":"service unavailable","statusCode":503}`)
		return
	}
	f.next.ServeHTTP(w, r)
}

func TestMonitoringNamesServedMetrics(t *testing.T) {
	redisBin, ok := redistest.Binary()
	if !ok {
		if redistest.Required() {
			t.Fatalf("CI=true but %s (looked for %s)", redistest.InstallHint, redisBin)
		}
		t.Skipf("%s (looked for %s)", redistest.InstallHint, redisBin)
	}
	w, faulty := newMonitoringWorld(t, redisBin)
	r := w.replicas[0]

	// Each step makes the broker serve series the rules or the dashboard
	// use; a new metric gets a step here when the broker cannot serve it
	// unprompted.
	claims := w.claims("123456")
	st, body, _ := w.post(r, "/v1/exchange", w.mint(claims), "")
	if st != http.StatusOK {
		t.Fatalf("exchange: %d %s", st, body)
	}
	var er brokerapi.ExchangeResponse
	if err := json.Unmarshal(body, &er); err != nil {
		t.Fatal(err)
	}
	if st, body, _ := w.post(r, "/v1/revoke", w.mint(claims), fmt.Sprintf(`{"token_id": %q}`, er.TokenID)); st != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", st, body)
	}
	for range limitedRate + 1 {
		w.post(r, "/v1/exchange", w.mint(w.claims(limitedRepoID)), "")
	}
	faulty.loseCreate.Store(true)
	if st, body, _ := w.post(r, "/v1/exchange", w.mint(w.claims("123456")), ""); st == http.StatusOK {
		t.Fatalf("exchange whose create answer was lost: %d %s", st, body)
	}
	// The reaper's series come with its first pass; the store's errors
	// with a Redis that stopped answering.
	waitFor(t, r, "astro_sts_reap_duration_seconds_count", func(v float64) bool { return v >= 1 })
	w.redis.Stop()
	w.post(r, "/v1/exchange", w.mint(w.claims("123456")), "")

	_, page := w.get(r, "/metrics")
	served := parseExposition(page)

	check := func(where string, sels []selector, grouping []string) {
		t.Helper()
		known := map[string]bool{}
		for _, l := range scrapeLabels {
			known[l] = true
		}
		for _, s := range sels {
			labels, ok := served[s.metric]
			if !ok {
				t.Errorf("%s: the broker serves no %s", where, s.metric)
				continue
			}
			for l := range labels {
				known[l] = true
			}
			for _, l := range s.labels {
				if !labels[l] && !slices.Contains(scrapeLabels, l) {
					t.Errorf("%s: %s has no label %q (it has %v)", where, s.metric, l, sortedKeys(labels))
				}
			}
		}
		for _, l := range grouping {
			if !known[l] {
				t.Errorf("%s: groups by %q, a label none of its metrics has", where, l)
			}
		}
	}

	// The rules.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, alertsPath, &rules)
	n := 0
	for _, g := range rules.Groups {
		for _, rule := range g.Rules {
			sels, grouping, err := parsePromQL(rule.Expr)
			if err != nil || len(sels) == 0 {
				t.Errorf("alert %s: %q: no metric found (%v)", rule.Alert, rule.Expr, err)
			}
			check("alert "+rule.Alert, sels, grouping)
			n++
		}
	}

	// The unit tests' input series carry exactly the labels the broker
	// gives them, and the scrape's.
	var tests struct {
		Tests []struct {
			Name        string `yaml:"name"`
			InputSeries []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	readYAML(t, alertsTestPath, &tests)
	for _, tc := range tests.Tests {
		for _, in := range tc.InputSeries {
			sels, _, err := parsePromQL(in.Series)
			if err != nil || len(sels) != 1 {
				t.Errorf("test %q: series %q: %v", tc.Name, in.Series, err)
				continue
			}
			s := sels[0]
			check(fmt.Sprintf("test %q", tc.Name), sels, nil)
			var own []string
			for _, l := range s.labels {
				if !slices.Contains(scrapeLabels, l) {
					own = append(own, l)
				}
			}
			sort.Strings(own)
			if want := sortedKeys(served[s.metric]); served[s.metric] != nil && !slices.Equal(own, want) {
				t.Errorf("test %q: series %s has labels %v; the broker's have %v", tc.Name, s.metric, own, want)
			}
		}
	}

	// The dashboard: every query of its panels and variables.
	exprs := dashboardQueries(t)
	if len(exprs) == 0 {
		t.Fatalf("%s: no queries found", dashboardPath)
	}
	for _, e := range exprs {
		sels, grouping, err := parsePromQL(e)
		if err != nil || len(sels) == 0 {
			t.Errorf("dashboard: %q: no metric found (%v)", e, err)
		}
		check("dashboard "+e, sels, grouping)
	}
	t.Logf("%d rules and %d dashboard queries checked against %d series names", n, len(exprs), len(served))
}

func newMonitoringWorld(t *testing.T, redisBin string) (*replicaWorld, *faultyAstro) {
	faulty := &faultyAstro{}
	w := startWorld(t, redisBin, func(emu http.Handler) http.Handler {
		faulty.next = emu
		return faulty
	}, "A")
	return w, faulty
}

// waitFor polls a replica's /metrics until sample satisfies ok.
func waitFor(t *testing.T, r *replica, sample string, ok func(float64) bool) {
	t.Helper()
	testwait.Until(t, 30*time.Second, sample, func() bool {
		resp, err := http.Get(r.url + "/metrics")
		if err != nil {
			return false
		}
		series := parseSamples(resp)
		resp.Body.Close()
		v, found := series[sample]
		return found && ok(v)
	})
}

// parseSamples returns the value of each sample of a /metrics page.
func parseSamples(resp *http.Response) map[string]float64 {
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
)

// parseExposition returns the label names of every sample name of a
// /metrics page in the text format (a histogram's _bucket, _sum and
// _count are sample names of their own).
func parseExposition(page string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, line := range strings.Split(page, "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := out[m[1]]
		if labels == nil {
			labels = map[string]bool{}
			out[m[1]] = labels
		}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels[p[1]] = true
		}
	}
	return out
}

// selector is a metric a PromQL expression selects and the labels its
// matchers name.
type selector struct {
	metric string
	labels []string
}

// promqlWords are PromQL's keywords and aggregation operators: identifiers
// that are not metric names though no parenthesis follows them.
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "group": true, "stddev": true,
	"stdvar": true, "topk": true, "bottomk": true, "quantile": true, "count_values": true,
	"limitk": true, "limit_ratio": true, "inf": true, "nan": true,
}

// groupingWords take a parenthesized list of label names.
var groupingWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// parsePromQL finds the metric selectors of a PromQL expression, with the
// labels of their matchers, and the labels it groups or matches by. It is
// a lexer, not a parser: enough for expressions Prometheus (promtool check
// rules) has already accepted. Grafana's $variables are skipped.
func parsePromQL(expr string) (sels []selector, grouping []string, err error) {
	s := expr
	i := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	ident := func() string {
		start := i
		for i < len(s) && isIdent(s[i]) {
			i++
		}
		return s[start:i]
	}
	skipString := func() error {
		q := s[i]
		i++
		for i < len(s) && s[i] != q {
			if s[i] == '\\' && q != '`' {
				i++
			}
			i++
		}
		if i >= len(s) {
			return fmt.Errorf("unterminated string in %q", expr)
		}
		i++
		return nil
	}
	pending := -1 // the selector a following {…} belongs to
	for i < len(s) {
		c := s[i]
		if c != '{' && c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			pending = -1
		}
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, nil, err
			}
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, nil, fmt.Errorf("unterminated range in %q", expr)
			}
			i += end + 1
		case c == '{':
			// The matchers of the selector just read.
			if pending < 0 {
				return nil, nil, fmt.Errorf("matchers without a metric name at %d in %q", i, expr)
			}
			last := &sels[pending]
			pending = -1
			i++
			for {
				skipSpace()
				if i >= len(s) {
					return nil, nil, fmt.Errorf("unterminated matchers in %q", expr)
				}
				if s[i] == '}' {
					i++
					break
				}
				if s[i] == ',' {
					i++
					continue
				}
				name := ident()
				if name == "" {
					return nil, nil, fmt.Errorf("bad matcher at %d in %q", i, expr)
				}
				skipSpace()
				for i < len(s) && strings.IndexByte("=!~", s[i]) >= 0 {
					i++
				}
				skipSpace()
				if i >= len(s) || s[i] != '"' && s[i] != '\'' && s[i] != '`' {
					return nil, nil, fmt.Errorf("matcher %s has no string value in %q", name, expr)
				}
				if err := skipString(); err != nil {
					return nil, nil, err
				}
				last.labels = append(last.labels, name)
			}
			continue
		case c == '$':
			i++
			ident()
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			word := ident()
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case groupingWords[word] && next == '(':
				end := strings.IndexByte(s[i:], ')')
				if end < 0 {
					return nil, nil, fmt.Errorf("unterminated label list in %q", expr)
				}
				for _, l := range strings.Split(s[i+1:i+end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						grouping = append(grouping, l)
					}
				}
				i += end + 1
			case groupingWords[word] || promqlWords[strings.ToLower(word)]:
			case next == '(':
				// A function.
			default:
				sels = append(sels, selector{metric: word})
				pending = len(sels) - 1
			}
		default:
			i++
		}
	}
	return sels, grouping, nil
}

// dashboardQueries returns the PromQL of every panel target and every
// query variable of the Grafana dashboard. label_values(metric, label)
// becomes metric{label=""}, so that the label is checked too.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				walk(e, k)
			}
		case []any:
			for _, e := range v {
				walk(e, key)
			}
		case string:
			switch key {
			case "expr":
				out = append(out, v)
			case "query":
				if m := labelValues.FindStringSubmatch(strings.TrimSpace(v)); m != nil {
					out = append(out, m[1]+`{`+m[2]+`=""}`)
				} else if v != "" && v != "prometheus" {
					out = append(out, v)
				}
			}
		}
	}
	walk(d, "")
	sort.Strings(out)
	return slices.Compact(out)
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
