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
	// Where each attribute the broker writes goes: one copy for all the
	// strings, one for the two counts.
	var e explanation
	texts := map[string]*string{"request_id": &e.requestID, "rule": &e.rule, "key": &e.key, "expected": &e.expected, "actual": &e.actual}
	counts := map[string]*int64{"held": &e.held, "of": &e.of}
	r.Attrs(func(a slog.Attr) bool {
		if dst, ok := texts[a.Key]; ok {
			*dst = a.Value.String()
		} else if dst, ok := counts[a.Key]; ok {
			*dst = a.Value.Int64()
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
