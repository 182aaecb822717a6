package broker

import (
	"context"
	"errors"
	"log/slog"

	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// DenialExplained is the message of the log records that explain a denial
// to the operator, one per rule that came closest, each with request_id,
// op, rule, held, of, key, expected and actual.
const DenialExplained = "denial explained"

// explainedRules is how many of the closest rules a denial's explanation
// names: enough to spot the one that was meant, few enough to read.
const explainedRules = 3

// explain tells the operator why the policy refused a request, one log
// line at Info per rule that came closest, under the request id that the
// job log shows: which match entry failed, what the rule expects and what
// the token carries. For a request wider than its rule's grant, the one
// line names the field, the most the rule allows and what was asked. The
// caller never sees any of it: the policy is the platform team's.
func (s *Server) explain(ctx context.Context, p *policy.Policy, claims *idtoken.Claims, err error) {
	id := requestID(ctx)
	var widen *policy.WidenError
	switch {
	case errors.As(err, &widen):
		s.log.LogAttrs(ctx, slog.LevelInfo, DenialExplained,
			slog.String("request_id", id), slog.String("op", string(opExchange)),
			slog.String("rule", widen.Rule), slog.String("key", widen.Field),
			slog.String("expected", "at most "+widen.Allowed), slog.String("actual", logValue(widen.Asked)))
	case errors.Is(err, policy.ErrNoMatchingRule):
		misses := p.Explain(policy.Claims(claims.Strings), explainedRules)
		if len(misses) == 0 {
			s.log.LogAttrs(ctx, slog.LevelInfo, DenialExplained,
				slog.String("request_id", id), slog.String("op", string(opExchange)),
				slog.String("rule", ""), slog.String("key", ""), slog.String("expected", "a rule: the policy has none"))
		}
		for _, m := range misses {
			s.logMiss(ctx, opExchange, m)
		}
	}
}

// logMiss writes one rule's (or rotation's) explanation line.
func (s *Server) logMiss(ctx context.Context, o op, m policy.Miss) {
	s.log.LogAttrs(ctx, slog.LevelInfo, DenialExplained,
		slog.String("request_id", requestID(ctx)), slog.String("op", string(o)),
		slog.String("rule", m.Rule), slog.Int("held", m.Held), slog.Int("of", m.Of),
		slog.String("key", m.Key), slog.String("expected", m.Expected), slog.String("actual", logValue(m.Actual)))
}
