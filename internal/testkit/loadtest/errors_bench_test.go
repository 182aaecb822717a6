package loadtest_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/testkit/loadtest"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// errorsConcurrency is the load of BenchmarkAstroErrors.
const errorsConcurrency = 32

// errorsRounds splits BenchmarkAstroErrors' requests into rounds that
// alternate between the two brokers, so that the noise of a shared machine
// falls on both alike.
const errorsRounds = 10

// BenchmarkAstroErrors is allowed exchanges at concurrency 32 against two
// brokers in the same run: one whose emulator answers every call, and one
// whose emulator answers 5% of them 503 (before processing: nothing is
// made, but the broker cannot know that of a create and looks for its
// token). It reports the throughput at 5% errors against 0% (exchanges
// answered, whatever their answer, per second of the runs against each)
// and the token listings the broker sent per create that failed so, which
// the search for their tokens must keep small whatever their number.
func BenchmarkAstroErrors(b *testing.B) {
	s := getStack(b)
	b.Run(fmt.Sprintf("c%d", errorsConcurrency), func(b *testing.B) {
		b.StopTimer()
		type side struct {
			emu          *upstream
			brk          *brokerProc
			answered, ok int
			elapsed      time.Duration
			before       map[string]float64
		}
		var sides [2]*side
		for i, rate := range []float64{0, 0.05} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			emu, err := s.startEmulator(ctx, "--error-rate", strconv.FormatFloat(rate, 'f', -1, 64))
			if err != nil {
				cancel()
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = emu.Close() })
			brk, err := s.startBroker(ctx, fmt.Sprintf("errors-%v", rate), emu)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = brk.Close() })
			before, err := upstreamCalls(brk.url)
			if err != nil {
				b.Fatal(err)
			}
			sides[i] = &side{emu: emu, brk: brk, before: before}
		}
		per := max(b.N/errorsRounds, 1)
		for round := range errorsRounds {
			for j := range sides {
				sd := sides[(round+j)%2]
				toks := s.mintN(b, allowedClaims(), per)
				reqs := make([]loadtest.Request, per)
				for i, tok := range toks {
					reqs[i] = exchangeRequest(sd.brk.url, tok)
				}
				b.StartTimer()
				res, err := loadtest.Load{Concurrency: errorsConcurrency, Requests: reqs}.Run(context.Background())
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				sd.answered += res.Answered
				sd.ok += res.Statuses[http.StatusOK]
				sd.elapsed += res.Elapsed
			}
		}
		// The search for a failed create's token goes on for the recovery
		// window (90 s) after the run: its listings count too. It is over
		// when every such create has its undelivered outcome.
		var after map[string]float64
		if !testwait.For(3*time.Minute, func() bool {
			var err error
			if after, err = upstreamCalls(sides[1].brk.url); err != nil {
				b.Fatal(err)
			}
			return after["undelivered"] >= after["POST tokens 503"]-sides[1].before["POST tokens 503"]
		}) {
			b.Fatalf("the search for the tokens of failed creates did not end: %v", after)
		}
		// The baseline's answers must all be tokens: against 503s or 429s
		// the ratio below would compare two ways of failing.
		if sides[0].ok != sides[0].answered {
			b.Fatalf("the broker without errors answered %d of %d exchanges 200", sides[0].ok, sides[0].answered)
		}
		tput := func(sd *side) float64 { return float64(sd.answered) / sd.elapsed.Seconds() }
		b.ReportMetric(tput(sides[0]), "ok-req/s")
		b.ReportMetric(tput(sides[1]), "5pct-req/s")
		b.ReportMetric(tput(sides[1])/tput(sides[0]), "5pct-of-ok")
		b.ReportMetric(float64(sides[1].ok)/float64(sides[1].answered), "5pct-ok-share")
		failed := after["POST tokens 503"] - sides[1].before["POST tokens 503"]
		lists := after["GET tokens"] - sides[1].before["GET tokens"]
		b.ReportMetric(failed, "failed-creates")
		if failed > 0 {
			b.ReportMetric(lists/failed, "listings/failed-create")
		}
	})
}

// upstreamCalls reads the broker's astro_sts_upstream_requests_total:
// token creates by status ("POST tokens 503") and token listings ("GET
// tokens"), whatever their status; and the outcomes of the searches for
// the tokens of creates with an unknown outcome ("undelivered").
func upstreamCalls(brokerURL string) (map[string]float64, error) {
	resp, err := http.Get(brokerURL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `astro_sts_undelivered_tokens_total{outcome="not_found",why="create_outcome_unknown"} `) ||
			strings.HasPrefix(line, `astro_sts_undelivered_tokens_total{outcome="deleted",why="create_outcome_unknown"} `) {
			_, value, _ := strings.Cut(line, "} ")
			v, _ := strconv.ParseFloat(value, 64)
			out["undelivered"] += v
			continue
		}
		if !strings.HasPrefix(line, "astro_sts_upstream_requests_total{") {
			continue
		}
		labels, value, ok := strings.Cut(strings.TrimPrefix(line, "astro_sts_upstream_requests_total{"), "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		l := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, val, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(val, `"`)
		}
		if !strings.HasSuffix(l["route"], "/tokens") {
			continue
		}
		switch l["method"] {
		case http.MethodPost:
			out["POST tokens "+l["status"]] += v
		case http.MethodGet:
			out["GET tokens"] += v
		}
	}
	return out, sc.Err()
}
