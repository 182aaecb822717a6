package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// op is an operation of the broker: the "audit" attribute of its record,
// and which metric counts it.
type op string

const (
	opExchange op = "exchange"
	opRevoke   op = "revoke"
	opRotate   op = "rotate"
)

// event is one operation's record (octo-sts's exchange event). The
// operation fills it in as it learns who asked and what was decided, and
// records it with one deferred call to [Server.record], so that no exit,
// however early, goes unrecorded or is recorded twice. Whatever every
// record should carry is a field here and an attribute in [Server.audit];
// the request id comes from the request's context.
type event struct {
	op    op
	start time.Time
	// success is the metrics outcome if the operation succeeds: "allow",
	// "dry_run", "revoked", "gone" or "ok". A failure's outcome comes from
	// classify.
	success string
	// note says why a success is unusual ("already gone"); it is logged
	// as the reason.
	note string
	// dryRun marks an exchange that decided and stopped there.
	dryRun bool

	claims   *idtoken.Claims  // the verified ID token's claims, once verified
	decision *policy.Decision // exchange: the policy's decision
	token    *astro.Token     // exchange: the minted token; only its id and hash are logged
	tokenID  string           // revoke, rotate: the token acted on
	rotation string           // rotate: the rotation's name, once the policy knows it
}

// begin starts the event of one operation.
func (s *Server) begin(o op) *event {
	e := &event{op: o, start: s.now(), success: "ok"}
	switch o {
	case opExchange:
		e.success = "allow"
	case opRevoke:
		e.success = "revoked"
	}
	return e
}

// record writes e's audit record and counts it in the metrics; err is what
// the operation returned. A failure's outcome is derived from [classify],
// which also chose the caller's answer, so the two cannot disagree.
func (s *Server) record(ctx context.Context, e *event, err error) {
	outcome, verdict := e.success, "allow"
	if err != nil {
		ae := classify(err)
		outcome, verdict = ae.outcome(), "error"
		if ae.refused() {
			verdict = "deny"
		}
	}
	s.metrics.observe(e, outcome, s.now())
	s.audit(ctx, e, verdict, err)
}

// refuse records a request refused before its operation could begin (no
// bearer token, a malformed body) as that operation's one event, and
// returns err.
func (s *Server) refuse(ctx context.Context, o op, err error) error {
	s.record(ctx, s.begin(o), err)
	return err
}

// audit writes one record per decision: who asked, what rule decided, what
// was minted, and for a refusal or failure, why. verdict is "allow",
// "deny" or "error". The token value never appears: only its id and
// SHA-256.
func (s *Server) audit(ctx context.Context, e *event, verdict string, err error) {
	attrs := []slog.Attr{
		slog.String("audit", string(e.op)),
		slog.String("outcome", verdict),
		slog.String("request_id", requestID(ctx)),
	}
	if e.dryRun {
		attrs = append(attrs, slog.Bool("dry_run", true))
	}
	// Claims are signed, but by GitHub for whoever runs a workflow: a
	// 9,000-byte ref is the caller's to choose. Every claim and request
	// value is cut (see [logValue]).
	if c := e.claims; c != nil {
		attrs = append(attrs,
			slog.String("issuer", logValue(c.Issuer)),
			slog.String("repository", logValue(c.Repository)),
			slog.String("repository_id", logValue(c.RepositoryID)),
			slog.String("workflow_ref", logValue(c.JobWorkflowRef)),
			slog.String("ref", logValue(c.Ref)),
			slog.String("event_name", logValue(c.EventName)),
			slog.String("run_id", logValue(c.RunID)),
			slog.String("run_attempt", logValue(c.RunAttempt)),
			slog.String("actor", logValue(c.Actor)),
			slog.String("jti", logValue(c.JTI)),
		)
		// The job, where run_id is the whole run: in tokens since
		// 2025-11, so only where the token carries it.
		if id := c.Strings["check_run_id"]; id != "" {
			attrs = append(attrs, slog.String("check_run_id", logValue(id)))
		}
	}
	if d := e.decision; d != nil {
		attrs = append(attrs,
			slog.String("rule", d.Rule),
			slog.String("scope", string(d.Scope)),
			slog.String("workspace_id", logValue(d.WorkspaceID)),
			slog.String("deployment_id", logValue(d.DeploymentID)),
			slog.String("role", logValue(d.Role)),
			slog.Duration("ttl", d.TTL),
		)
	}
	if e.rotation != "" {
		attrs = append(attrs, slog.String("rotation", logValue(e.rotation)))
	}
	if e.token != nil {
		attrs = append(attrs,
			slog.String("token_id", logValue(e.token.ID)),
			slog.String("token_sha256", tokenSHA256(e.token.Token)),
		)
	} else if e.tokenID != "" {
		attrs = append(attrs, slog.String("token_id", logValue(e.tokenID)))
	}
	switch {
	case err != nil:
		// The code the caller got, and the detail it did not.
		ae := classify(err)
		attrs = append(attrs, slog.String("code", ae.code))
		if ae.reason != "" {
			attrs = append(attrs, slog.String("code_reason", ae.reason))
		}
		attrs = append(attrs, slog.String("reason", logText(err.Error())))
	case e.note != "":
		attrs = append(attrs, slog.String("reason", e.note))
	}
	level := slog.LevelInfo
	if verdict != "allow" {
		level = slog.LevelWarn
	}
	s.log.LogAttrs(ctx, level, string(e.op), attrs...)
}

// tokenSHA256 is how a token value appears in the audit log: enough to
// match a value found elsewhere, useless to use.
func tokenSHA256(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:])
}

// maxLogValue bounds one claim or request value in a log line: GitHub's
// longest real claims (a job_workflow_ref with a long path and ref) are
// well under it.
const maxLogValue = 256

// logValue is s cut to [maxLogValue] bytes (never inside a UTF-8
// character), the cut marked, so that no claim can make an audit line of
// kilobytes nor pass for the whole value.
func logValue(s string) string { return logCut(s, maxLogValue) }

// logCut is s cut to n bytes for a log line, the cut marked: the one body
// of [logValue] and [logText].
func logCut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return truncate(s, n) + "... (cut)"
}
