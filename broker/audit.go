package broker

import (
	"context"
	"log/slog"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// auditDetail is what a decision adds to the audit record.
type auditDetail struct {
	decision *policy.Decision
	token    *astro.Token // the minted token; only its id and hash are logged
	tokenID  string       // for revoke and rotate
	reason   error        // why it was denied or failed
	extra    []slog.Attr
}

// audit writes one record per decision (octo-sts's exchange event): who
// asked, what rule decided, what was minted. The token value never appears:
// only its id and SHA-256.
func (s *Server) audit(ctx context.Context, action, outcome string, c *idtoken.Claims, d auditDetail) {
	attrs := []slog.Attr{
		slog.String("audit", action),
		slog.String("outcome", outcome),
	}
	if c != nil {
		attrs = append(attrs,
			slog.String("issuer", c.Issuer),
			slog.String("repository", c.Repository),
			slog.String("repository_id", c.RepositoryID),
			slog.String("workflow_ref", c.JobWorkflowRef),
			slog.String("ref", c.Ref),
			slog.String("event_name", c.EventName),
			slog.String("run_id", c.RunID),
			slog.String("run_attempt", c.RunAttempt),
			slog.String("actor", c.Actor),
			slog.String("jti", c.JTI),
		)
	}
	if d.decision != nil {
		attrs = append(attrs,
			slog.String("rule", d.decision.Rule),
			slog.String("scope", string(d.decision.Scope)),
			slog.String("workspace_id", d.decision.WorkspaceID),
			slog.String("deployment_id", d.decision.DeploymentID),
			slog.String("role", d.decision.Role),
			slog.Duration("ttl", d.decision.TTL),
		)
	}
	if d.token != nil {
		attrs = append(attrs,
			slog.String("token_id", d.token.ID),
			slog.String("token_sha256", tokenSHA256(d.token.Token)),
		)
	} else if d.tokenID != "" {
		attrs = append(attrs, slog.String("token_id", d.tokenID))
	}
	if d.reason != nil {
		attrs = append(attrs, slog.String("reason", d.reason.Error()))
	}
	attrs = append(attrs, d.extra...)
	level := slog.LevelInfo
	if outcome != "allow" {
		level = slog.LevelWarn
	}
	s.log.LogAttrs(ctx, level, action, attrs...)
}
