// Package rotation rotates a long-lived Astro API token named in the
// policy's rotations section, and delivers the new value to every sink the
// policy names (Vault KV v2, GitHub Actions secrets), without ever losing it.
//
// Every run first finds the token the rotation manages and checks that
// every sink can be written ([Preflighter]), so that a Vault that is down or
// a credential that is refused stops the run before anything changes. Then
// one of two strategies:
//
//   - replace (zero downtime): create a new token like the old one, write
//     every sink, and only when all of them confirmed delete the old token.
//     If a sink fails, the writing stops there, the sinks already written
//     are put back where they can be ([Restorer]: Vault), the new token is
//     deleted and the old one kept, so consumers of the old value keep
//     working.
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
	"sync"
	"time"
	"unicode/utf8"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/retry"
	"github.com/astro-sts/astro-sts/internal/sink"
)

// Strategies, as the policy spells them.
const (
	StrategyReplace = policy.StrategyReplace
	StrategyRotate  = policy.StrategyRotate
)

// What happened at a sink, in [SinkResult.Status].
const (
	// SinkWritten: the sink holds the new value.
	SinkWritten = "written"
	// SinkFailed: the write (or the preflight check) failed; Error says why.
	SinkFailed = "failed"
	// SinkNotWritten: the run stopped before this sink; it holds what it
	// held before.
	SinkNotWritten = "not_written"
	// SinkRestored: the sink was written, then put back to what it held
	// before because a later sink failed (replace only).
	SinkRestored = "restored"
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

// Sinks builds the sinks of one run of a rotation; [NewSinks] is the real
// one. The sinks are written in the order returned: put the ones that can
// be restored ([Restorer]) first.
type Sinks interface {
	For(ctx context.Context, r *policy.Rotation) ([]sink.Sink, error)
}

// Preflighter is a sink that can check, before anything changes, that it
// is reachable and accepts the credentials. The [Rotator] checks every such
// sink before it rotates or creates a token, because after that point a
// failing sink costs a working value (rotate) or a wasted run (replace).
type Preflighter interface {
	Preflight(ctx context.Context) error
}

// Restorer is a sink that can put back the value it held before this run's
// Write. The replace strategy restores the sinks it already wrote when a
// later one fails, so that their consumers keep the old, still valid value
// rather than the value of a replacement that is about to be deleted.
type Restorer interface {
	// Restore returns the version that holds the previous value again, or
	// [ErrNothingToRestore].
	Restore(ctx context.Context) (version string, err error)
}

// ErrNothingToRestore is returned by a [Restorer] that held no value before
// the run (or whose secret someone else changed since): it is left as it is.
// It is the sink package's error, which [sink.VaultSink] returns.
var ErrNothingToRestore = sink.ErrNothingToRestore

// Config holds a [Rotator]'s dependencies.
type Config struct {
	Astro          Astro
	OrganizationID string
	Sinks          Sinks
	Logger         *slog.Logger     // nil discards
	Now            func() time.Time // nil: time.Now
	// SinkAttempts is how often a sink write (or preflight check) is tried
	// when it fails with [sink.ErrUnavailable] or [sink.ErrConflict]; 0
	// means 4.
	SinkAttempts int
	// BaseDelay is the first backoff between attempts, doubled each time;
	// 0 means 500ms.
	BaseDelay time.Duration
	// MaxDelay caps the doubling; 0 means 10s.
	MaxDelay time.Duration
	// MaxRetryAfter caps how long a sink's Retry-After can make one wait
	// (it is honoured even beyond MaxDelay: go-github refuses every request
	// of a rate-limited client until then, so retrying sooner only fails);
	// 0 means 60s. A longer demand fails the sink at once.
	MaxRetryAfter time.Duration
}

// Rotator runs rotations. It is safe for concurrent use; two runs of the
// same rotation on one Rotator wait for each other, because two rotations
// interleaving their sink writes could leave a dead value in some sinks.
// Separate processes (two broker replicas, a broker and a CronJob) do not
// coordinate: schedule each rotation in one place.
type Rotator struct {
	cfg       Config
	log       *slog.Logger
	sinkRetry retry.Policy // of the sinks' writes, checks and restores

	mu      sync.Mutex
	running map[string]chan struct{} // closed when the run of that name ends
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
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// go-github refuses every request of a rate-limited client until the
	// instant GitHub named, so a retry waits a margin past it, and a demand
	// longer than MaxRetryAfter fails the sink at once.
	policy := retry.Policy{Attempts: cfg.SinkAttempts, Base: cfg.BaseDelay, Max: cfg.MaxDelay,
		MaxRetryAfter: cfg.MaxRetryAfter + retryAfterMargin, StopOnLongRetryAfter: true}
	return &Rotator{cfg: cfg, log: log, sinkRetry: policy, running: map[string]chan struct{}{}}, nil
}

// Result is what a rotation did, in the broker's contract form: `astro-sts
// rotate` prints the same JSON as POST /v1/rotate answers. It never
// carries the value.
type Result = brokerapi.RotateResponse

// SinkResult is what happened at one sink. Its Version is, for Vault, the
// KV version (the restored one for [SinkRestored]); its Status is
// [SinkWritten], [SinkFailed], [SinkNotWritten] or [SinkRestored]; its
// Error is empty exactly when Status is [SinkWritten], so a consumer that
// only reads Error never mistakes a skipped sink for an updated one.
type SinkResult = brokerapi.SinkResult

// Error is a rotation that did not deliver a new value everywhere. Result
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
// first one. The policy is the operator's file; the rotation never edits it.
const lineageKey = "astro-sts-rotation="

// maxDescription is Astro's limit on a token description, in characters.
const maxDescription = 500

// Rotate runs rotation r. On success every sink holds the new value and
// exactly one token is valid. On failure the returned *[Error] carries the
// result (also returned); see the package comment for the state each
// strategy leaves.
//
// ctx bounds the run until the first change in Astro; from then on the run
// finishes regardless, because stopping between the rotate (or create) and
// the sink writes is what would strand a value.
func (rt *Rotator) Rotate(ctx context.Context, r *policy.Rotation) (*Result, error) {
	if r == nil {
		return nil, errors.New("rotation: no rotation given")
	}
	strategy := r.Strategy
	if strategy == "" {
		strategy = StrategyReplace
	}
	if strategy != StrategyReplace && strategy != StrategyRotate {
		return nil, fmt.Errorf("rotation %s: unknown strategy %q", r.Name, r.Strategy)
	}
	release, err := rt.acquire(ctx, r.Name)
	if err != nil {
		return nil, fmt.Errorf("rotation %s: waiting for the run in progress: %w", r.Name, err)
	}
	defer release()

	res := &Result{Name: r.Name, TokenID: r.TokenID, Strategy: strategy,
		RotatedAt: rt.cfg.Now().UTC().Truncate(time.Second), Sinks: planned(r)}
	sinks, err := rt.cfg.Sinks.For(ctx, r)
	if err != nil {
		return rt.fail(res, err, "the sinks could not be set up (login or configuration); nothing was changed and the current token keeps working")
	}
	res.Sinks = make([]SinkResult, len(sinks))
	for i, s := range sinks {
		res.Sinks[i] = SinkResult{Kind: s.Kind(), Target: s.Target(), Status: SinkNotWritten}
	}
	old, err := rt.current(ctx, r)
	if err != nil {
		return rt.fail(res, err, "the managed token %s could not be looked up; nothing was changed", r.TokenID)
	}
	res.TokenID = old.ID
	if err := rt.preflight(ctx, res, sinks); err != nil {
		return rt.fail(res, err, "%s cannot be written now; nothing was changed and token %s keeps working", failedTargets(res), old.ID)
	}
	// The point of no return is the next call to Astro.
	ctx = context.WithoutCancel(ctx)
	if strategy == StrategyRotate {
		return rt.rotate(ctx, res, old, sinks)
	}
	return rt.replace(ctx, r, res, old, sinks)
}

// acquire waits until no other run of the rotation called name is in
// progress on rt, and returns the function that ends this one.
func (rt *Rotator) acquire(ctx context.Context, name string) (func(), error) {
	for {
		rt.mu.Lock()
		busy, ok := rt.running[name]
		if !ok {
			done := make(chan struct{})
			rt.running[name] = done
			rt.mu.Unlock()
			return func() {
				rt.mu.Lock()
				delete(rt.running, name)
				rt.mu.Unlock()
				close(done)
			}, nil
		}
		rt.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// planned lists the policy's targets as sinks not yet written, for a
// result whose sinks could not even be built.
func planned(r *policy.Rotation) []SinkResult {
	out := []SinkResult{}
	if r.Vault != nil {
		out = append(out, SinkResult{Kind: sink.KindVault, Target: r.Vault.String(), Status: SinkNotWritten})
	}
	for _, t := range r.GitHub {
		out = append(out, SinkResult{Kind: sink.KindGitHub, Target: t.String(), Status: SinkNotWritten})
	}
	return out
}

// fail finishes res for a failed run and returns it with an *Error whose
// message starts with the rotation's name.
func (rt *Rotator) fail(res *Result, err error, format string, a ...any) (*Result, error) {
	for i := range res.Sinks {
		if s := &res.Sinks[i]; s.Status == SinkNotWritten && s.Error == "" {
			s.Error = "not written: the rotation stopped before this sink, which keeps its previous value"
		}
	}
	msg := fmt.Sprintf("rotation %q: ", res.Name) + fmt.Sprintf(format, a...)
	rt.log.Error("rotation failed", "rotation", res.Name, "strategy", res.Strategy, "token_id", res.TokenID,
		"message", msg, "error", err)
	return res, &Error{Result: res, Message: msg, Err: err}
}

// current finds the token the rotation manages now: the policy's token_id,
// or, once a replace has deleted that one, the newest token whose
// description carries this rotation's lineage mark.
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
		if lineage(all[i].Description) != lineageMark(r) {
			continue
		}
		if found == nil || all[i].CreatedAt.After(found.CreatedAt) ||
			all[i].CreatedAt.Equal(found.CreatedAt) && all[i].ID > found.ID {
			found = &all[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s (nor a replacement of it)", ErrTokenNotFound, r.TokenID)
	}
	// The listing may be a summary; the token itself has every field the
	// replace strategy copies.
	tok, err = rt.cfg.Astro.GetToken(ctx, rt.cfg.OrganizationID, found.ID)
	if err != nil {
		return nil, fmt.Errorf("get token %s: %w", found.ID, err)
	}
	rt.log.Info("rotation follows a replaced token", "rotation", r.Name, "policy_token_id", r.TokenID, "token_id", tok.ID)
	return tok, nil
}

func lineageMark(r *policy.Rotation) string { return r.Name + "/" + r.TokenID }

// lineage returns the lineage mark in a description, or "". Policy names
// and token ids contain neither spaces nor "/", so the mark is unambiguous.
func lineage(description string) string {
	i := strings.LastIndex(description, lineageKey)
	if i < 0 {
		return ""
	}
	mark, _, _ := strings.Cut(description[i+len(lineageKey):], " ")
	return mark
}

// withLineage appends (or refreshes) the lineage mark, keeping the
// description within Astro's 500 characters by shortening the human part
// (on a character boundary).
func withLineage(description string, r *policy.Rotation) string {
	if i := strings.LastIndex(description, lineageKey); i >= 0 {
		description = description[:i]
	}
	description = strings.TrimRight(strings.ToValidUTF8(description, ""), " ")
	mark := lineageKey + lineageMark(r)
	room := maxDescription - utf8.RuneCountInString(mark) - 1
	if room <= 0 {
		return mark
	}
	if utf8.RuneCountInString(description) > room {
		n := 0
		for i := range description {
			if n == room {
				description = strings.TrimRight(description[:i], " ")
				break
			}
			n++
		}
	}
	if description == "" {
		return mark
	}
	return description + " " + mark
}

func (rt *Rotator) rotate(ctx context.Context, res *Result, old *astro.Token, sinks []sink.Sink) (*Result, error) {
	tok, err := rt.cfg.Astro.RotateToken(ctx, rt.cfg.OrganizationID, old.ID)
	if err != nil {
		// Not retried: a rotate whose answer was lost has already killed
		// the old value, and a second one would kill the one we never saw.
		if refused(err) {
			return rt.fail(res, err, "Astro refused to rotate token %s; nothing was changed and its value still works", old.ID)
		}
		return rt.fail(res, err, "the call to rotate token %s failed without a clear answer: if Astro rotated it, its old value no longer works "+
			"and the new one was never received; run the rotation again to deliver a fresh value to every sink", old.ID)
	}
	res.TokenID = tok.ID
	rt.log.Info("rotation rotated the token", "rotation", res.Name, "token_id", tok.ID)
	if failed := rt.writeAll(ctx, res, tok, sinks, false); failed != nil {
		return rt.fail(res, failed, "token %s was rotated, so its old value no longer works, but %s did not take the new value "+
			"(every other sink holds it); run the rotation again to deliver a fresh value to every sink", tok.ID, failedTargets(res))
	}
	rt.log.Info("rotation done", "rotation", res.Name, "strategy", res.Strategy, "token_id", tok.ID, "sinks", len(sinks))
	return res, nil
}

func (rt *Rotator) replace(ctx context.Context, r *policy.Rotation, res *Result, old *astro.Token, sinks []sink.Sink) (*Result, error) {
	req, roles, err := likeToken(old, rt.cfg.OrganizationID)
	if err != nil {
		return rt.fail(res, err, "token %s cannot be copied; nothing was changed and it keeps working", old.ID)
	}
	req.Description = withLineage(old.Description, r)
	tok, err := rt.cfg.Astro.CreateToken(ctx, rt.cfg.OrganizationID, req)
	if err != nil {
		if refused(err) {
			return rt.fail(res, err, "Astro refused to create the replacement; nothing was changed and token %s keeps working", old.ID)
		}
		return rt.fail(res, err, "creating the replacement failed without a clear answer; token %s was kept and keeps working. "+
			"If Astro created the replacement anyway, a token named %q whose value nobody holds exists besides it: delete it", old.ID, old.Name)
	}
	if roles != nil {
		if _, err := rt.cfg.Astro.SetTokenRoles(ctx, rt.cfg.OrganizationID, tok.ID, roles); err != nil {
			rt.deleteOrWarn(ctx, res, tok.ID, "replacement with incomplete roles")
			return rt.fail(res, err, "the replacement's roles could not be set, so it was deleted; token %s was kept and keeps working", old.ID)
		}
	}
	rt.log.Info("rotation created the replacement", "rotation", res.Name, "token_id", tok.ID, "replaces", old.ID)
	res.TokenID = tok.ID
	if failed := rt.writeAll(ctx, res, tok, sinks, true); failed != nil {
		// Keep the old token: consumers that still read the old value keep
		// working. Sinks already written go back to the old value where
		// they can; then the new token goes, so exactly one stays valid.
		rt.restoreWritten(ctx, res, sinks)
		rt.deleteOrWarn(ctx, res, tok.ID, "unused replacement")
		res.TokenID = old.ID
		msg := fmt.Sprintf("%s failed, so token %s was kept and keeps working, and the replacement was deleted", failedTargets(res), old.ID)
		if s := targetsWith(res, SinkRestored); s != "" {
			msg += "; " + s + " got its previous value back"
		}
		if s := targetsWith(res, SinkWritten); s != "" {
			msg += "; " + s + " holds the deleted replacement's value (it cannot be put back) until the rotation runs again"
		}
		return rt.fail(res, failed, "%s", msg)
	}
	rt.deleteOrWarn(ctx, res, old.ID, "replaced token")
	rt.log.Info("rotation done", "rotation", res.Name, "strategy", res.Strategy, "token_id", tok.ID, "replaced", old.ID, "sinks", len(sinks))
	return res, nil
}

// refused reports whether Astro surely did not act on a call: it answered
// 4xx (including a 429 the client stopped retrying), or the call was never
// sent.
func refused(err error) bool {
	var apiErr *astro.APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode >= 400 && apiErr.StatusCode < 500
	}
	return errors.Is(err, astro.ErrInvalidArgument)
}

// likeToken builds a create request for a token like t: same name, scope,
// entity, role and expiry period (the new token's expiry counts from its
// creation, as Astro only takes a period). For an Organization token
// holding Workspace or Deployment roles it also returns the whole role set
// to apply after the create, since create takes a single role.
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
		if role.EntityType == want && (t.Scope == astro.ScopeOrganization || role.EntityID != "") {
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
	var all []astro.TokenRole
	if t.Scope == astro.ScopeOrganization && len(t.Roles) > 1 {
		all = append(all, t.Roles...)
	}
	return req, all, nil
}

// preflight checks every [Preflighter] sink, with the write's retries, and
// records the first failure in res.
func (rt *Rotator) preflight(ctx context.Context, res *Result, sinks []sink.Sink) error {
	for i, s := range sinks {
		p, ok := s.(Preflighter)
		if !ok {
			continue
		}
		if err := rt.retry(ctx, func() error { return p.Preflight(ctx) }); err != nil {
			res.Sinks[i].Status, res.Sinks[i].Error = SinkFailed, err.Error()
			rt.log.Error("rotation sink check failed", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "error", err)
			return err
		}
	}
	return nil
}

// writeAll writes the value to the sinks in order (each with retries),
// records each outcome in res.Sinks (same order), and returns the joined
// errors of the sinks that failed. With stop it writes no further sink
// after a failure.
func (rt *Rotator) writeAll(ctx context.Context, res *Result, tok *astro.Token, sinks []sink.Sink, stop bool) error {
	meta := sink.Metadata{TokenID: tok.ID, Strategy: res.Strategy, RotatedAt: res.RotatedAt}
	var errs []error
	for i, s := range sinks {
		var version string
		err := rt.retry(ctx, func() error {
			var err error
			version, err = s.Write(ctx, tok.Token, meta)
			return err
		})
		sr := &res.Sinks[i]
		if err != nil {
			// A version with the error means the value landed and only a
			// later step (Vault's custom_metadata) failed: keep it, so that
			// a failed replace knows to put the sink back.
			sr.Status, sr.Error, sr.Version = SinkFailed, err.Error(), version
			errs = append(errs, err)
			rt.log.Error("rotation sink failed", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "error", err)
			if stop {
				break
			}
			continue
		}
		sr.Status, sr.Version = SinkWritten, version
		rt.log.Info("rotation sink written", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "version", version, "token_id", tok.ID)
	}
	return errors.Join(errs...)
}

// restoreWritten puts back the previous value of every sink that took the
// new value and can do it: the written ones, and a failed one whose value
// landed before its failure (it has a version). A failure to restore is a
// warning (the sink keeps the new, soon deleted value, as an unrestorable
// sink does).
func (rt *Rotator) restoreWritten(ctx context.Context, res *Result, sinks []sink.Sink) {
	for i, s := range sinks {
		sr := &res.Sinks[i]
		r, ok := s.(Restorer)
		landed := sr.Status == SinkWritten || sr.Status == SinkFailed && sr.Version != ""
		if !landed || !ok {
			continue
		}
		var version string
		err := rt.retry(ctx, func() error {
			var err error
			version, err = r.Restore(ctx)
			return err
		})
		switch {
		case (err == nil || version != "") && sr.Status == SinkFailed:
			// The sink that failed keeps its status (it is why the run
			// failed); its value is the previous one again.
			sr.Version = version
			sr.Error += "; its previous value was put back"
			rt.log.Info("rotation sink restored", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "version", version)
		case err == nil || version != "":
			sr.Status, sr.Version = SinkRestored, version
			sr.Error = "written, then given its previous value back because a later sink failed"
			rt.log.Info("rotation sink restored", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "version", version)
		}
		switch {
		case err == nil:
		case errors.Is(err, ErrNothingToRestore):
			if sr.Status == SinkFailed {
				sr.Error += "; it holds the deleted replacement's value (there was no previous value to put back)"
			}
			rt.log.Warn("rotation sink has no previous value to restore", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "error", err)
		case version != "":
			msg := fmt.Sprintf("gave %s %s its previous value back, but not its previous metadata: %v", s.Kind(), s.Target(), err)
			res.Warnings = append(res.Warnings, msg)
			rt.log.Warn("rotation sink restored without its metadata", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "error", err)
		default:
			if sr.Status == SinkFailed {
				sr.Error += "; it holds the deleted replacement's value, which could not be put back"
			}
			msg := fmt.Sprintf("could not give %s %s its previous value back: %v", s.Kind(), s.Target(), err)
			res.Warnings = append(res.Warnings, msg)
			rt.log.Error("rotation sink restore failed", "rotation", res.Name, "sink", s.Kind(), "target", s.Target(), "error", err)
		}
	}
}

// retryAfterMargin is added to a sink's Retry-After: go-github refuses
// until that instant, so a retry right on it could still be refused.
const retryAfterMargin = 250 * time.Millisecond

// retry runs op until it succeeds, fails in a way that will not pass
// (anything but unavailable or conflict), or SinkAttempts are spent, with
// capped exponential backoff that honours the sink's Retry-After.
func (rt *Rotator) retry(ctx context.Context, op func() error) error {
	return rt.sinkRetry.Do(ctx, func(int) error {
		err := op()
		if !errors.Is(err, sink.ErrUnavailable) && !errors.Is(err, sink.ErrConflict) {
			return err
		}
		var after time.Duration
		if se := (*sink.Error)(nil); errors.As(err, &se) && se.RetryAfter > 0 {
			after = se.RetryAfter + retryAfterMargin
		}
		return retry.Again(err, after)
	})
}

// deleteOrWarn deletes a token, retrying once; a failure becomes a warning
// in res (the caller's outcome does not change: the token is an extra valid
// token, not a lost one).
func (rt *Rotator) deleteOrWarn(ctx context.Context, res *Result, tokenID, what string) {
	var err error
	for range 2 {
		if err = rt.cfg.Astro.DeleteToken(ctx, rt.cfg.OrganizationID, tokenID); err == nil {
			rt.log.Info("rotation deleted a token", "rotation", res.Name, "token_id", tokenID, "what", what)
			return
		}
	}
	msg := fmt.Sprintf("could not delete the %s %s: delete it by hand", what, tokenID)
	rt.log.Error("rotation could not delete a token", "rotation", res.Name, "token_id", tokenID, "what", what, "error", err)
	res.Warnings = append(res.Warnings, msg)
}

func failedTargets(res *Result) string { return targetsWith(res, SinkFailed) }

// targetsWith names the sinks of res with status, "vault secret/a#token,
// github repo acme/dags secret X".
func targetsWith(res *Result, status string) string {
	var names []string
	for _, s := range res.Sinks {
		if s.Status == status {
			names = append(names, s.Kind+" "+s.Target)
		}
	}
	return strings.Join(names, ", ")
}
