package demo

import (
	"context"
	"log/slog"
	"sync"

	"github.com/astro-sts/astro-sts/broker"
)

// explanation is one line of the broker's explanation of a denial, as the
// platform team reads it in the broker's log.
type explanation struct {
	requestID, rule, key, expected, actual string
	held, of                               int64
}

// explanations is a [slog.Handler] that keeps the broker's
// [broker.DenialExplained] records, so that the denied step can show the
// operator's side of a refusal next to the job's. It drops every other
// record; the demo's own logger still gets them all.
type explanations struct {
	mu   *sync.Mutex
	recs *[]explanation
}

func newExplanations() explanations {
	return explanations{mu: &sync.Mutex{}, recs: &[]explanation{}}
}

func (x explanations) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (x explanations) Handle(_ context.Context, r slog.Record) error {
	if r.Message != broker.DenialExplained {
		return nil
	}
	var e explanation
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "request_id":
			e.requestID = a.Value.String()
		case "rule":
			e.rule = a.Value.String()
		case "key":
			e.key = a.Value.String()
		case "expected":
			e.expected = a.Value.String()
		case "actual":
			e.actual = a.Value.String()
		case "held":
			e.held = a.Value.Int64()
		case "of":
			e.of = a.Value.Int64()
		}
		return true
	})
	x.mu.Lock()
	defer x.mu.Unlock()
	*x.recs = append(*x.recs, e)
	return nil
}

func (x explanations) WithAttrs([]slog.Attr) slog.Handler { return x }
func (x explanations) WithGroup(string) slog.Handler      { return x }

// of returns the explanation lines logged under requestID.
func (x explanations) of(requestID string) []explanation {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []explanation
	for _, e := range *x.recs {
		if e.requestID == requestID {
			out = append(out, e)
		}
	}
	return out
}
