// Package rotation rotates a long-lived Astro API token named in the
// policy's rotations section, and delivers the new value to every sink the
// policy names (Vault KV v2, GitHub Actions secrets), without ever losing it.
//
// Two strategies:
//
//   - replace (zero downtime): create a new token like the old one, write
//     every sink, and only when all of them confirmed delete the old token.
//     If a sink fails, the new token is deleted and the old one kept, so
//     consumers that still read the old value keep working.
//   - rotate: Astro's rotate call (same token record, new value, the old
//     value dead at once), then write every sink, retrying a failed one with
//     backoff. If a sink still fails, the result names it: running the
//     rotation again mints a fresh value and delivers it everywhere.
//
// The value is never logged and never returned: it exists only in memory
// between Astro's answer and the sinks.
package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/sink"
)

// Strategies.
const (
	StrategyReplace = "replace"
	StrategyRotate  = "rotate"
)

// Astro is the part of the Astro API a rotation uses; *astro.Client
// implements it.
type Astro interface {
	GetToken(ctx context.Context, orgID, tokenID string) (*astro.Token, error)
	ListTokens(ctx context.Context, orgID string, opts astro.ListTokensOptions) ([]astro.Token, error)
	CreateToken(ctx context.Context, orgID string, req astro.CreateTokenRequest) (*astro.Token, error)
	SetTokenRoles(ctx context.Context, orgID, tokenID string, roles []astro.TokenRole) (*astro.SubjectRoles, error)
	RotateToken(ctx context.Context, orgID, tokenID string) (*astro.Token, error)
	DeleteToken(ctx context.Context, orgID, tokenID string) error
}

// Sinks builds the sinks of a rotation; [NewSinks] is the real one.
type Sinks interface {
	For(ctx context.Context, r *policy.Rotation) ([]sink.Sink, error)
}

// Config holds a [Rotator]'s dependencies.
type Config struct {
	Astro          Astro
	OrganizationID string
	Sinks          Sinks
	Logger         *slog.Logger     // nil discards
	Now            func() time.Time // nil: time.Now
	// SinkAttempts is how often a sink write is tried when it fails with
	// [sink.ErrUnavailable] or [sink.ErrConflict]; 0 means 4.
	SinkAttempts int
	// BaseDelay is the first backoff between attempts, doubled each time
	// and raised to the sink's Retry-After when it asks; 0 means 500ms.
	BaseDelay time.Duration
	// MaxDelay caps one backoff; 0 means 10s.
	MaxDelay time.Duration
}

// Rotator runs rotations. It is safe for concurrent use, but two rotations
// of the same name should not run at once (schedule them apart).
type Rotator struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Rotator.
func New(cfg Config) (*Rotator, error) {
	var errs []error
	if cfg.Astro == nil {
		errs = append(errs, errors.New("rotation: Astro client is required"))
	}
	if cfg.OrganizationID == "" {
		errs = append(errs, errors.New("rotation: OrganizationID is required"))
	}
	if cfg.Sinks == nil {
		errs = append(errs, errors.New("rotation: Sinks is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SinkAttempts <= 0 {
		cfg.SinkAttempts = 4
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = 500 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Rotator{cfg: cfg, log: log}, nil
}

// Result is what a rotation did. It never carries the value.
type Result struct {
	Name      string       `json:"name"`
	TokenID   string       `json:"token_id"`
	Strategy  string       `json:"strategy"`
	RotatedAt time.Time    `json:"rotated_at"`
	Sinks     []SinkResult `json:"sinks"`
	// Warnings are problems that did not stop the rotation, such as an old
	// token that could not be deleted after a replace.
	Warnings []string `json:"warnings,omitempty"`
}

// SinkResult is what happened at one sink.
type SinkResult struct {
	Kind    string `json:"kind"`
	Target  string `json:"target"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Error is a rotation that did not deliver the value everywhere. Result
// lists every sink and what happened there; Message is safe to show the
// caller and says what state things are in and what to do.
type Error struct {
	Result  *Result
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Message + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrTokenNotFound means neither the policy's token_id nor a token that
// replaced it exists in the organization.
var ErrTokenNotFound = errors.New("managed token not found")

// lineageKey marks, in the description of a token made by the replace
// strategy, which rotation it belongs to: a replace gives the token a new
// id, and the next rotation must find it while the policy still names the
// first one.
const lineageKey = "astro-sts-rotation="

// Rotate runs rotation r. On success every sink holds the new value and
// exactly one token is valid. On failure the returned *[Error] carries the
// result; see the package comment for the state each strategy leaves.
func (rt *Rotator) Rotate(ctx context.Context, r *policy.Rotation) (*Result, error) {
	sinks, err := rt.cfg.Sinks.For(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("rotation %s: sinks: %w", r.Name, err)
	}
	old, err := rt.current(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("rotation %s: %w", r.Name, err)
	}
	switch r.Strategy {
	case StrategyRotate:
		return rt.rotate(ctx, r, old, sinks)
	case StrategyReplace, "":
		return rt.replace(ctx, r, old, sinks)
	}
	return nil, fmt.Errorf("rotation %s: unknown strategy %q", r.Name, r.Strategy)
}

// current finds the token the rotation manages now: the policy's token_id,
// or, after a replace, the token whose description carries this rotation's
// lineage mark.
func (rt *Rotator) current(ctx context.Context, r *policy.Rotation) (*astro.Token, error) {
	tok, err := rt.cfg.Astro.GetToken(ctx, rt.cfg.OrganizationID, r.TokenID)
	if err == nil {
		return tok, nil
	}
	var apiErr *astro.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		return nil, fmt.Errorf("get token %s: %w", r.TokenID, err)
	}
	all, err := rt.cfg.Astro.ListTokens(ctx, rt.cfg.OrganizationID, astro.ListTokensOptions{})
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	var found *astro.Token
	for i := range all {
		if lineage(all[i].Description) == lineageMark(r) {
			if found == nil || all[i].CreatedAt.After(found.CreatedAt) {
				found = &all[i]
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s (nor a replacement of it)", ErrTokenNotFound, r.TokenID)
	}
	rt.log.Info("rotation follows a replaced token", "rotation", r.Name, "policy_token_id", r.TokenID, "token_id", found.ID)
	return found, nil
}

func lineageMark(r *policy.Rotation) string { return r.Name + "/" + r.TokenID }

// lineage returns the lineage mark in a description, or "".
func lineage(description string) string {
	i := strings.LastIndex(description, lineageKey)
	if i < 0 {
		return ""
	}
	mark, _, _ := strings.Cut(description[i+len(lineageKey):], " ")
	return mark
}

// withLineage appends (or refreshes) the lineage mark, keeping the
// description within Astro's 500 characters by shortening the human part.
func withLineage(description string, r *policy.Rotation) string {
	if i := strings.LastIndex(description, lineageKey); i >= 0 {
		description = strings.TrimRight(description[:i], " ")
	}
	mark := lineageKey + lineageMark(r)
	if room := 500 - len(mark) - 1; len(description) > room {
		if room < 0 {
			room = 0
		}
		description = description[:room]
	}
	if description == "" {
		return mark
	}
	return description + " " + mark
}

func (rt *Rotator) rotate(ctx context.Context, r *policy.Rotation, old *astro.Token, sinks []sink.Sink) (*Result, error) {
	tok, err := rt.cfg.Astro.RotateToken(ctx, rt.cfg.OrganizationID, old.ID)
	if err != nil {
		// Not retried: a rotate whose answer was lost has already killed
		// the old value, and a second one would kill the one we never saw.
		return nil, fmt.Errorf("rotation %s: rotate token %s: %w", r.Name, old.ID, err)
	}
	res := rt.newResult(r, tok.ID)
	failed := rt.writeAll(ctx, res, tok, sinks)
	if failed != nil {
		return res, &Error{
			Result: res,
			Message: fmt.Sprintf("rotation %q: the token was rotated (its old value no longer works) but %s failed; "+
				"the sinks that succeeded hold the new value; run the rotation again to deliver a fresh value to every sink",
				r.Name, failedTargets(res)),
			Err: failed,
		}
	}
	return res, nil
}

func (rt *Rotator) replace(ctx context.Context, r *policy.Rotation, old *astro.Token, sinks []sink.Sink) (*Result, error) {
	req, roles, err := likeToken(old, rt.cfg.OrganizationID)
	if err != nil {
		return nil, fmt.Errorf("rotation %s: %w", r.Name, err)
	}
	req.Description = withLineage(old.Description, r)
	tok, err := rt.cfg.Astro.CreateToken(ctx, rt.cfg.OrganizationID, req)
	if err != nil {
		return nil, fmt.Errorf("rotation %s: create replacement: %w", r.Name, err)
	}
	if roles != nil {
		if _, err := rt.cfg.Astro.SetTokenRoles(ctx, rt.cfg.OrganizationID, tok.ID, roles); err != nil {
			rt.deleteOrWarn(ctx, nil, tok.ID, "replacement with incomplete roles")
			return nil, fmt.Errorf("rotation %s: set roles of replacement: %w", r.Name, err)
		}
	}
	res := rt.newResult(r, tok.ID)
	if failed := rt.writeAll(ctx, res, tok, sinks); failed != nil {
		// Keep the old token: consumers that still read the old value keep
		// working. The new token goes, so exactly one token stays valid.
		rt.deleteOrWarn(ctx, res, tok.ID, "unused replacement")
		res.TokenID = old.ID
		return res, &Error{
			Result: res,
			Message: fmt.Sprintf("rotation %q: %s failed; the old token %s was kept and still works, the new one was deleted; "+
				"sinks that succeeded hold the deleted token's value until the rotation is run again", r.Name, failedTargets(res), old.ID),
			Err: failed,
		}
	}
	rt.deleteOrWarn(ctx, res, old.ID, "replaced token")
	return res, nil
}

// likeToken builds a create request for a token like t: same name, scope,
// entity, role and expiry period. For an Organization token holding
// Workspace or Deployment roles it also returns the whole role set to apply
// after the create.
func likeToken(t *astro.Token, org string) (astro.CreateTokenRequest, []astro.TokenRole, error) {
	req := astro.CreateTokenRequest{Name: t.Name, Scope: t.Scope, TokenExpiryPeriodInDays: t.ExpiryPeriodInDays}
	want := map[astro.Scope]astro.EntityType{
		astro.ScopeOrganization: astro.EntityOrganization,
		astro.ScopeWorkspace:    astro.EntityWorkspace,
		astro.ScopeDeployment:   astro.EntityDeployment,
	}[t.Scope]
	if want == "" {
		return req, nil, fmt.Errorf("token %s has unknown scope %q", t.ID, t.Scope)
	}
	for _, role := range t.Roles {
		if role.EntityType == want {
			req.Role = role.Role
			if t.Scope != astro.ScopeOrganization {
				req.EntityID = role.EntityID
			}
			break
		}
	}
	if req.Role == "" {
		return req, nil, fmt.Errorf("token %s has no %s role to copy", t.ID, want)
	}
	var extra []astro.TokenRole
	if t.Scope == astro.ScopeOrganization && len(t.Roles) > 1 {
		extra = append(extra, t.Roles...)
	}
	return req, extra, nil
}

func (rt *Rotator) newResult(r *policy.Rotation, tokenID string) *Result {
	strategy := r.Strategy
	if strategy == "" {
		strategy = StrategyReplace
	}
	return &Result{Name: r.Name, TokenID: tokenID, Strategy: strategy, RotatedAt: rt.cfg.Now().UTC().Truncate(time.Second)}
}

// writeAll writes the value to every sink (each with retries), records each
// outcome in res, and returns the joined errors of the sinks that failed.
func (rt *Rotator) writeAll(ctx context.Context, res *Result, tok *astro.Token, sinks []sink.Sink) error {
	meta := sink.Metadata{TokenID: tok.ID, Strategy: res.Strategy, RotatedAt: res.RotatedAt}
	var errs []error
	for _, s := range sinks {
		version, err := rt.writeOne(ctx, s, tok.Token, meta)
		sr := SinkResult{Kind: s.Kind(), Target: s.Target(), Version: version}
		if err != nil {
			sr.Error = err.Error()
			errs = append(errs, err)
			rt.log.Error("rotation sink failed", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "error", err)
		} else {
			rt.log.Info("rotation sink written", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "version", version, "token_id", tok.ID)
		}
		res.Sinks = append(res.Sinks, sr)
	}
	return errors.Join(errs...)
}

// writeOne retries what may succeed later (unavailable, CAS conflict) with
// capped exponential backoff, honouring the sink's Retry-After.
func (rt *Rotator) writeOne(ctx context.Context, s sink.Sink, value string, meta sink.Metadata) (string, error) {
	delay := rt.cfg.BaseDelay
	var err error
	for attempt := 1; ; attempt++ {
		var version string
		version, err = s.Write(ctx, value, meta)
		if err == nil {
			return version, nil
		}
		if attempt >= rt.cfg.SinkAttempts || !(errors.Is(err, sink.ErrUnavailable) || errors.Is(err, sink.ErrConflict)) {
			return "", err
		}
		wait := delay
		var se *sink.Error
		if errors.As(err, &se) && se.RetryAfter > wait {
			wait = se.RetryAfter
		}
		wait = min(wait, rt.cfg.MaxDelay)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", errors.Join(err, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, rt.cfg.MaxDelay)
	}
}

// deleteOrWarn deletes a token, retrying once; a failure becomes a warning
// in res (the caller's outcome does not change: the token is an extra valid
// token, not a lost one).
func (rt *Rotator) deleteOrWarn(ctx context.Context, res *Result, tokenID, what string) {
	var err error
	for range 2 {
		if err = rt.cfg.Astro.DeleteToken(ctx, rt.cfg.OrganizationID, tokenID); err == nil {
			return
		}
	}
	msg := fmt.Sprintf("could not delete the %s %s: delete it by hand", what, tokenID)
	rt.log.Error(msg, "error", err)
	if res != nil {
		res.Warnings = append(res.Warnings, msg)
	}
}

func failedTargets(res *Result) string {
	var names []string
	for _, s := range res.Sinks {
		if s.Error != "" {
			names = append(names, s.Kind+" "+s.Target)
		}
	}
	return strings.Join(names, ", ")
}
