package rotation_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
)

// ignoreLastUsed ignores the one field a read-only run still changes: the
// organization token's last use.
var ignoreLastUsed = cmpopts.IgnoreFields(astro.Token{}, "LastUsedAt")

// probingSinks wraps every sink so that probe runs at the moment of each
// Write, before the value reaches the sink. Preflight is passed through.
type probingSinks struct {
	inner rotation.Sinks
	probe func(s sink.Sink)
}

func (p probingSinks) For(ctx context.Context, r *policy.Rotation) ([]sink.Sink, error) {
	ss, err := p.inner.For(ctx, r)
	out := make([]sink.Sink, len(ss))
	for i, s := range ss {
		out[i] = probingSink{Sink: s, probe: p.probe}
	}
	return out, err
}

type probingSink struct {
	sink.Sink
	probe func(s sink.Sink)
}

func (s probingSink) Write(ctx context.Context, value string, m sink.Metadata) (string, error) {
	s.probe(s.Sink)
	return s.Sink.Write(ctx, value, m)
}

func (s probingSink) Preflight(ctx context.Context) error {
	if p, ok := s.Sink.(rotation.Preflighter); ok {
		return p.Preflight(ctx)
	}
	return nil
}

// Both strategies end with one valid token whose value is in every sink;
// they differ in when the old value dies: rotate kills it before the first
// sink is written, replace only after the last one confirmed.
func TestRotateEndToEnd(t *testing.T) {
	tests := []struct {
		strategy string
		// oldDuringWrites is the emulator's answer to the old value while
		// each sink is being written.
		oldDuringWrites int
	}{
		{rotation.StrategyRotate, http.StatusUnauthorized},
		{rotation.StrategyReplace, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			e := newEnv(t, envOptions{strategy: tt.strategy, vault: vaultWriter})
			var during []int
			e.rotator = e.newRotator(probingSinks{
				inner: rotation.NewSinks(e.sinkCfg, nil, e.logger),
				probe: func(sink.Sink) { during = append(during, e.status(e.oldValue)) },
			})
			start := e.clock.Now()
			res, err := e.rotate()
			if err != nil {
				t.Fatalf("Rotate: %v", err)
			}
			if d := cmp.Diff([]int{tt.oldDuringWrites, tt.oldDuringWrites, tt.oldDuringWrites, tt.oldDuringWrites}, during); d != "" {
				t.Errorf("old value's status during the sink writes (-want +got):\n%s", d)
			}

			// The answer has the documented JSON shape, and every sink a version.
			wantSinks := []sinkView{
				{sink.KindVault, e.vaultTarget(), rotation.SinkWritten},
				{sink.KindGitHub, repoTarget, rotation.SinkWritten},
				{sink.KindGitHub, orgTarget, rotation.SinkWritten},
				{sink.KindGitHub, envTarget, rotation.SinkWritten},
			}
			if d := cmp.Diff(wantSinks, viewSinks(res)); d != "" {
				t.Errorf("sinks (-want +got):\n%s", d)
			}
			for _, s := range res.Sinks {
				if s.Version == "" || s.Error != "" {
					t.Errorf("sink %s: version %q, error %q", s.Target, s.Version, s.Error)
				}
			}
			if res.Name != "airflow-ci" || res.Strategy != tt.strategy || !res.RotatedAt.Equal(start) || len(res.Warnings) > 0 {
				t.Errorf("result = %+v", res)
			}
			raw, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var shape map[string]any
			if err := json.Unmarshal(raw, &shape); err != nil {
				t.Fatal(err)
			}
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range shape {
					if !yield(k) {
						return
					}
				}
			})
			if d := cmp.Diff([]string{"name", "rotated_at", "sinks", "strategy", "token_id"}, keys); d != "" {
				t.Errorf("JSON keys (-want +got):\n%s", d)
			}

			// One value everywhere, valid; the old one refused.
			value := e.vaultValue()
			for _, s := range []ghSecret{ghRepo, ghOrg, ghEnv} {
				if got := e.ghValue(s); got != value {
					t.Errorf("GitHub %s %s holds another value than Vault", s.target, s.name)
				}
			}
			if value == e.oldValue {
				t.Fatal("the sinks still hold the old value")
			}
			if got := e.status(value); got != http.StatusOK {
				t.Errorf("new value: %d, want 200", got)
			}
			if got := e.status(e.oldValue); got != http.StatusUnauthorized {
				t.Errorf("old value: %d, want 401", got)
			}
			toks := e.managedTokens()
			if len(toks) != 1 || toks[0].ID != res.TokenID {
				t.Fatalf("managed tokens = %v, want exactly %s", toks, res.TokenID)
			}
			claims, err := emulatorClaims(value)
			if err != nil || claims != res.TokenID {
				t.Errorf("the value belongs to token %q (%v), want %s", claims, err, res.TokenID)
			}
			if (res.TokenID == e.managed.ID) != (tt.strategy == rotation.StrategyRotate) {
				t.Errorf("token id %s, managed %s: rotate keeps the id, replace makes a new one", res.TokenID, e.managed.ID)
			}
			wantMeta := map[string]string{sink.MetaTokenID: res.TokenID, sink.MetaStrategy: tt.strategy,
				sink.MetaRotatedAt: start.Format(time.RFC3339)}
			if d := cmp.Diff(wantMeta, e.vaultMeta()); d != "" {
				t.Errorf("Vault custom_metadata (-want +got):\n%s", d)
			}
		})
	}
}

// The replacement is the same token as far as its consumers can tell: name,
// scope, role(s) and expiry period, with the original description kept.
func TestReplaceCopiesTheToken(t *testing.T) {
	tests := []struct {
		name    string
		managed func(e *testEnv) astro.CreateTokenRequest
		roles   func(e *testEnv) []astro.TokenRole
	}{
		{name: "workspace token"},
		{
			name: "organization token with workspace and deployment roles, never expiring",
			managed: func(e *testEnv) astro.CreateTokenRequest {
				return astro.CreateTokenRequest{Name: "airflow-ci", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember}
			},
			roles: func(e *testEnv) []astro.TokenRole {
				return []astro.TokenRole{
					{EntityID: e.emu.OrganizationID(), EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember},
					{EntityID: e.emu.WorkspaceIDs()[0], EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceOperator},
					{EntityID: e.emu.WorkspaceIDs()[1], EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceAccessor},
					{EntityID: e.emu.DeploymentIDs()[1], EntityType: astro.EntityDeployment, Role: astro.RoleDeploymentAdmin},
				}
			},
		},
		{
			name: "deployment token",
			managed: func(e *testEnv) astro.CreateTokenRequest {
				return astro.CreateTokenRequest{Name: "airflow-ci", Description: strings.Repeat("é", 500),
					Scope: astro.ScopeDeployment, Role: astro.RoleDeploymentAdmin, EntityID: e.emu.DeploymentIDs()[0], TokenExpiryPeriodInDays: ptr(7)}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{managed: tt.managed, roles: tt.roles})
			res, err := e.rotate()
			if err != nil {
				t.Fatalf("Rotate: %v", err)
			}
			got, err := e.ac.GetToken(ctxT(t), e.emu.OrganizationID(), res.TokenID)
			if err != nil {
				t.Fatal(err)
			}
			old := e.managed
			type copied struct {
				Name   string
				Scope  astro.Scope
				Days   *int
				Roles  []astro.TokenRole
				Expiry time.Duration
			}
			view := func(tok *astro.Token) copied {
				c := copied{Name: tok.Name, Scope: tok.Scope, Days: tok.ExpiryPeriodInDays, Roles: slices.Clone(tok.Roles)}
				slices.SortFunc(c.Roles, func(a, b astro.TokenRole) int { return strings.Compare(a.EntityID, b.EntityID) })
				if tok.EndAt != nil {
					c.Expiry = tok.EndAt.Sub(tok.CreatedAt)
				}
				return c
			}
			if d := cmp.Diff(view(old), view(got)); d != "" {
				t.Errorf("replacement differs from the original (-old +new):\n%s", d)
			}
			mark := "astro-sts-rotation=airflow-ci/" + old.ID
			if !strings.HasSuffix(got.Description, mark) || len([]rune(got.Description)) > 500 {
				t.Errorf("description %q: want the lineage mark at the end, within 500 characters", got.Description)
			}
			if human := strings.TrimSpace(strings.TrimSuffix(got.Description, mark)); !strings.HasPrefix(old.Description, human) {
				t.Errorf("description %q does not keep the original %q", got.Description, old.Description)
			}
			if v := e.ghValue(ghRepo); e.status(v) != http.StatusOK || e.status(e.oldValue) != http.StatusUnauthorized {
				t.Error("the new value should work and the old one not")
			}
		})
	}
}

// After a replace the policy still names the first token id; the next
// rotation finds the replacement by its lineage mark, whichever strategy it
// uses, and is not misled by a token carrying another rotation's mark.
func TestLineageAcrossRuns(t *testing.T) {
	e := newEnv(t, envOptions{vault: vaultWriter})
	ctx := ctxT(t)
	// A decoy made later than everything else, marked for another
	// rotation of the same token.
	decoy, err := e.ac.CreateToken(ctx, e.emu.OrganizationID(), astro.CreateTokenRequest{
		Name: "airflow-ci", Description: "astro-sts-rotation=other/" + e.managed.ID,
		Scope: astro.ScopeWorkspace, Role: astro.RoleWorkspaceAccessor, EntityID: e.emu.WorkspaceIDs()[1]})
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, decoy.Token)

	var values []string
	var ids []string
	for i, strategy := range []string{rotation.StrategyReplace, rotation.StrategyReplace, rotation.StrategyRotate, rotation.StrategyReplace} {
		// The operator may switch strategy; name and token_id stay.
		e.setPolicy(strategy, "\n    vault: {mount: secret, path: "+e.vaultPath+", field: token}"+githubTargetsYAML)
		e.clock.Advance(time.Hour)
		res, err := e.rotate()
		if err != nil {
			t.Fatalf("run %d (%s): %v", i+1, strategy, err)
		}
		if res.Strategy != strategy {
			t.Errorf("run %d: strategy %s", i+1, res.Strategy)
		}
		values = append(values, e.vaultValue())
		ids = append(ids, res.TokenID)
	}
	// replace, replace: new ids; rotate: same id as before; replace: new.
	if ids[0] == e.managed.ID || ids[1] == ids[0] || ids[2] != ids[1] || ids[3] == ids[2] {
		t.Errorf("token ids over the runs: original %s, then %v", e.managed.ID, ids)
	}
	for i, v := range values {
		want := http.StatusUnauthorized
		if i == len(values)-1 {
			want = http.StatusOK
		}
		if got := e.status(v); got != want {
			t.Errorf("value of run %d: %d, want %d", i+1, got, want)
		}
	}
	var live []string
	for _, tok := range e.managedTokens() {
		live = append(live, tok.ID)
		if tok.ID == ids[3] && strings.Count(tok.Description, "astro-sts-rotation=") != 1 {
			t.Errorf("description %q: marks pile up", tok.Description)
		}
	}
	slices.Sort(live)
	want := []string{decoy.ID, ids[3]}
	slices.Sort(want)
	if d := cmp.Diff(want, live); d != "" {
		t.Errorf("live tokens named airflow-ci (-want +got):\n%s", d)
	}
	if e.status(decoy.Token) != http.StatusOK {
		t.Error("the decoy of another rotation was touched")
	}
}

// A sink that cannot be reached, or refuses the credentials, is found by
// the preflight: nothing changes in Astro, whatever the strategy, and the
// old value keeps working.
func TestSinkUnusableBeforeAnyChange(t *testing.T) {
	tests := []struct {
		name     string
		vault    vaultMode
		strategy string
		kind     error
	}{
		{"vault down, replace", vaultDown, rotation.StrategyReplace, sink.ErrUnavailable},
		{"vault down, rotate", vaultDown, rotation.StrategyRotate, sink.ErrUnavailable},
		{"vault token without policy, replace", vaultNoPolicy, rotation.StrategyReplace, sink.ErrDenied},
		{"vault token without policy, rotate", vaultNoPolicy, rotation.StrategyRotate, sink.ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{strategy: tt.strategy, vault: tt.vault})
			before := e.emu.Tokens()
			res, err := e.rotate()
			var rerr *rotation.Error
			if !errors.As(err, &rerr) || rerr.Result != res || !errors.Is(err, tt.kind) {
				t.Fatalf("Rotate = %v, want a *rotation.Error wrapping %v", err, tt.kind)
			}
			want := []sinkView{
				{sink.KindVault, e.vaultTarget(), rotation.SinkFailed},
				{sink.KindGitHub, repoTarget, rotation.SinkNotWritten},
				{sink.KindGitHub, orgTarget, rotation.SinkNotWritten},
				{sink.KindGitHub, envTarget, rotation.SinkNotWritten},
			}
			if d := cmp.Diff(want, viewSinks(res)); d != "" {
				t.Errorf("sinks (-want +got):\n%s", d)
			}
			if !strings.Contains(rerr.Message, "nothing was changed") || res.TokenID != e.managed.ID {
				t.Errorf("message %q, token %s", rerr.Message, res.TokenID)
			}
			if d := cmp.Diff(before, e.emu.Tokens(), ignoreLastUsed); d != "" {
				t.Errorf("Astro changed (-before +after):\n%s", d)
			}
			if e.status(e.oldValue) != http.StatusOK {
				t.Error("the old value stopped working")
			}
			for _, s := range []ghSecret{ghRepo, ghOrg, ghEnv} {
				if e.ghValue(s) != e.oldValue {
					t.Errorf("%s was written", s.target)
				}
			}
		})
	}
}

// Vault going down after the check, between the Astro call and the write:
// replace deletes the new token and keeps the old one, untouched and valid,
// without writing any GitHub secret; rotate has killed the old value and
// delivers the new one to every GitHub secret.
func TestVaultDownMidway(t *testing.T) {
	tests := []struct {
		strategy  string
		wantSinks []string
		check     func(t *testing.T, e *testEnv, res *rotation.Result)
	}{
		{
			strategy:  rotation.StrategyReplace,
			wantSinks: []string{rotation.SinkFailed, rotation.SinkNotWritten, rotation.SinkNotWritten, rotation.SinkNotWritten},
			check: func(t *testing.T, e *testEnv, res *rotation.Result) {
				toks := e.managedTokens()
				if len(toks) != 1 || toks[0].ID != e.managed.ID || res.TokenID != e.managed.ID {
					t.Errorf("tokens %v: want exactly the old one", toks)
				}
				if d := cmp.Diff(*e.managed, toks[0], ignoreLastUsed); d != "" {
					t.Errorf("the old token changed:\n%s", d)
				}
				if e.status(e.oldValue) != http.StatusOK || e.ghValue(ghRepo) != e.oldValue {
					t.Error("the old value should still work and still be in GitHub")
				}
			},
		},
		{
			strategy:  rotation.StrategyRotate,
			wantSinks: []string{rotation.SinkFailed, rotation.SinkWritten, rotation.SinkWritten, rotation.SinkWritten},
			check: func(t *testing.T, e *testEnv, res *rotation.Result) {
				v := e.ghValue(ghRepo)
				if e.ghValue(ghOrg) != v || e.ghValue(ghEnv) != v || e.status(v) != http.StatusOK || e.status(e.oldValue) != http.StatusUnauthorized {
					t.Error("want the new value, valid, in every GitHub secret and the old one dead")
				}
				if toks := e.managedTokens(); len(toks) != 1 {
					t.Errorf("tokens %v, want exactly one", toks)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			e := newEnv(t, envOptions{strategy: tt.strategy, vault: vaultWriter})
			target, err := url.Parse(e.vault.Addr)
			if err != nil {
				t.Fatal(err)
			}
			proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
			t.Cleanup(proxy.Close)
			cfg := e.sinkCfg
			cfg.Vault.Addr = proxy.URL
			e.rotator = e.newRotator(probingSinks{
				inner: rotation.NewSinks(cfg, nil, e.logger),
				probe: func(s sink.Sink) {
					if s.Kind() == sink.KindVault {
						proxy.Close() // Vault is gone from here on
					}
				},
			})
			res, err := e.rotate()
			if !errors.Is(err, sink.ErrUnavailable) {
				t.Fatalf("Rotate = %v, want ErrUnavailable", err)
			}
			var got []string
			for _, s := range res.Sinks {
				got = append(got, s.Status)
			}
			if d := cmp.Diff(tt.wantSinks, got); d != "" {
				t.Errorf("sink statuses (-want +got):\n%s", d)
			}
			if e.vaultValue() != e.oldValue {
				t.Error("Vault changed")
			}
			tt.check(t, e, res)
		})
	}
}

// A Vault token that may read but not write passes the preflight and is
// refused at the write, after the token changed. Replace then keeps the old
// token and deletes the new one; rotate has already killed the old value,
// so every other sink gets the new one and the result names Vault.
func TestVaultWriteDenied(t *testing.T) {
	t.Run("replace", func(t *testing.T) {
		e := newEnv(t, envOptions{strategy: rotation.StrategyReplace, vault: vaultReadOnly})
		res, err := e.rotate()
		if !errors.Is(err, sink.ErrDenied) {
			t.Fatalf("Rotate = %v, want ErrDenied", err)
		}
		want := []sinkView{
			{sink.KindVault, e.vaultTarget(), rotation.SinkFailed},
			{sink.KindGitHub, repoTarget, rotation.SinkNotWritten},
			{sink.KindGitHub, orgTarget, rotation.SinkNotWritten},
			{sink.KindGitHub, envTarget, rotation.SinkNotWritten},
		}
		if d := cmp.Diff(want, viewSinks(res)); d != "" {
			t.Errorf("sinks (-want +got):\n%s", d)
		}
		if toks := e.managedTokens(); len(toks) != 1 || toks[0].ID != e.managed.ID || res.TokenID != e.managed.ID {
			t.Errorf("tokens %v, result token %s: want only the old one", toks, res.TokenID)
		}
		if e.status(e.oldValue) != http.StatusOK || e.vaultValue() != e.oldValue || e.ghValue(ghRepo) != e.oldValue {
			t.Error("the old token should still work and still be in every sink")
		}
	})
	t.Run("rotate", func(t *testing.T) {
		e := newEnv(t, envOptions{strategy: rotation.StrategyRotate, vault: vaultReadOnly})
		res, err := e.rotate()
		var rerr *rotation.Error
		if !errors.As(err, &rerr) || !errors.Is(err, sink.ErrDenied) {
			t.Fatalf("Rotate = %v, want a *rotation.Error wrapping ErrDenied", err)
		}
		want := []sinkView{
			{sink.KindVault, e.vaultTarget(), rotation.SinkFailed},
			{sink.KindGitHub, repoTarget, rotation.SinkWritten},
			{sink.KindGitHub, orgTarget, rotation.SinkWritten},
			{sink.KindGitHub, envTarget, rotation.SinkWritten},
		}
		if d := cmp.Diff(want, viewSinks(res)); d != "" {
			t.Errorf("sinks (-want +got):\n%s", d)
		}
		if !strings.Contains(rerr.Message, "vault "+e.vaultTarget()) || !strings.Contains(rerr.Message, "run the rotation again") {
			t.Errorf("message %q should name Vault and say to run again", rerr.Message)
		}
		value := e.ghValue(ghRepo)
		if e.status(value) != http.StatusOK || e.status(e.oldValue) != http.StatusUnauthorized {
			t.Error("want the new value valid and the old one dead")
		}
		if toks := e.managedTokens(); len(toks) != 1 {
			t.Errorf("tokens %v, want exactly one", toks)
		}
		if e.vaultValue() != e.oldValue {
			t.Error("a denied Vault changed")
		}
	})
}

// A Vault policy that lets the data write through but refuses the
// custom_metadata write fails the sink after the value has landed. Replace
// deletes the new token, so Vault must get the old value back rather than
// keep the value of a deleted token while the result says the old token
// "keeps working".
func TestVaultMetadataDeniedAfterTheValueLanded(t *testing.T) {
	e := newEnv(t, envOptions{strategy: rotation.StrategyReplace, vault: vaultDataOnly})
	res, err := e.rotate()
	if !errors.Is(err, sink.ErrDenied) {
		t.Fatalf("Rotate = %v, want ErrDenied", err)
	}
	if res.Sinks[0].Status != rotation.SinkFailed {
		t.Errorf("vault sink status %q, want %q", res.Sinks[0].Status, rotation.SinkFailed)
	}
	if toks := e.managedTokens(); len(toks) != 1 || toks[0].ID != e.managed.ID || res.TokenID != e.managed.ID {
		t.Errorf("tokens %v, result token %s: want only the old one", toks, res.TokenID)
	}
	if e.status(e.oldValue) != http.StatusOK {
		t.Error("the old token should still work")
	}
	if got := e.vaultValue(); got != e.oldValue {
		t.Errorf("Vault holds a value that answers %d, want the old, valid value back", e.status(got))
	}
	if !strings.Contains(res.Sinks[0].Error, "previous value was put back") {
		t.Errorf("vault sink error %q should say its previous value was put back", res.Sinks[0].Error)
	}
	// The restore's own metadata write is refused too: a warning, not a
	// silent success.
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "not its previous metadata") {
		t.Errorf("warnings %q, want one about the metadata", res.Warnings)
	}
}

// A GitHub secret failing midway (after the preflight passed): rotate
// writes every other sink, so exactly one token is valid and its value is
// in each sink that succeeded; replace stops, gives Vault its old value
// back, deletes the new token and keeps the old one.
func TestGitHubFailsMidway(t *testing.T) {
	tests := []struct {
		strategy  string
		wantSinks func(e *testEnv) []sinkView
		check     func(t *testing.T, e *testEnv, res *rotation.Result)
	}{
		{
			strategy: rotation.StrategyRotate,
			wantSinks: func(e *testEnv) []sinkView {
				return []sinkView{
					{sink.KindVault, e.vaultTarget(), rotation.SinkWritten},
					{sink.KindGitHub, repoTarget, rotation.SinkWritten},
					{sink.KindGitHub, orgTarget, rotation.SinkFailed},
					{sink.KindGitHub, envTarget, rotation.SinkWritten},
				}
			},
			check: func(t *testing.T, e *testEnv, res *rotation.Result) {
				value := e.vaultValue()
				if e.ghValue(ghRepo) != value || e.ghValue(ghEnv) != value {
					t.Error("the sinks that succeeded hold different values")
				}
				if e.ghValue(ghOrg) != e.oldValue {
					t.Error("the failed secret changed")
				}
				toks := e.managedTokens()
				if len(toks) != 1 || toks[0].ID != res.TokenID || e.status(value) != http.StatusOK || e.status(e.oldValue) != http.StatusUnauthorized {
					t.Errorf("want exactly one valid token holding the sinks' value; tokens %v", toks)
				}
			},
		},
		{
			strategy: rotation.StrategyReplace,
			wantSinks: func(e *testEnv) []sinkView {
				return []sinkView{
					{sink.KindVault, e.vaultTarget(), rotation.SinkRestored},
					{sink.KindGitHub, repoTarget, rotation.SinkWritten},
					{sink.KindGitHub, orgTarget, rotation.SinkFailed},
					{sink.KindGitHub, envTarget, rotation.SinkNotWritten},
				}
			},
			check: func(t *testing.T, e *testEnv, res *rotation.Result) {
				if toks := e.managedTokens(); len(toks) != 1 || toks[0].ID != e.managed.ID || res.TokenID != e.managed.ID {
					t.Errorf("tokens %v: want only the old one", toks)
				}
				if e.status(e.oldValue) != http.StatusOK {
					t.Error("the old token stopped working")
				}
				if e.vaultValue() != e.oldValue || e.ghValue(ghOrg) != e.oldValue || e.ghValue(ghEnv) != e.oldValue {
					t.Error("Vault, the failed and the unwritten secret should hold the old value")
				}
				if meta := e.vaultMeta(); meta[sink.MetaTokenID] != "" {
					t.Errorf("restored Vault metadata %v should be the previous (none)", meta)
				}
				// The one secret that cannot be put back holds the value
				// of the deleted replacement, and the message says so.
				if v := e.ghValue(ghRepo); v == e.oldValue || e.status(v) != http.StatusUnauthorized {
					t.Error("the repository secret should hold the deleted replacement's value")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			e := newEnv(t, envOptions{strategy: tt.strategy, vault: vaultWriter})
			e.gh.Fail(orgPutPath, http.StatusBadGateway, 100)
			res, err := e.rotate()
			var rerr *rotation.Error
			if !errors.As(err, &rerr) || !errors.Is(err, sink.ErrUnavailable) {
				t.Fatalf("Rotate = %v, want a *rotation.Error wrapping ErrUnavailable", err)
			}
			if d := cmp.Diff(tt.wantSinks(e), viewSinks(res)); d != "" {
				t.Errorf("sinks (-want +got):\n%s", d)
			}
			for _, s := range res.Sinks {
				if (s.Error == "") != (s.Status == rotation.SinkWritten) {
					t.Errorf("sink %s: status %s with error %q", s.Target, s.Status, s.Error)
				}
			}
			if !strings.Contains(rerr.Message, "github "+orgTarget) {
				t.Errorf("message %q does not name the failed sink", rerr.Message)
			}
			tt.check(t, e, res)
		})
	}
}

// GitHub's secondary rate limit is retried after the delay it asks, even
// beyond MaxDelay: go-github refuses every request of the client until
// then, so an earlier retry could only fail.
func TestGitHubRateLimitIsRetried(t *testing.T) {
	e := newEnv(t, envOptions{strategy: rotation.StrategyRotate})
	e.gh.RateLimit("/repos/acme/dags/actions/secrets/ASTRO_API_TOKEN", time.Second, 1)
	start := time.Now()
	res, err := e.rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("the retry came after %v, before the Retry-After of 1s", waited)
	}
	for _, s := range res.Sinks {
		if s.Status != rotation.SinkWritten {
			t.Errorf("sink %s: %s %s", s.Target, s.Status, s.Error)
		}
	}
	v := e.ghValue(ghRepo)
	if v == e.oldValue || e.status(v) != http.StatusOK {
		t.Error("the rate-limited secret did not get the new value")
	}
}

// Two runs of the same rotation at once wait for each other, so the sinks
// end up agreeing on one valid value.
func TestConcurrentRunsAreSerialised(t *testing.T) {
	e := newEnv(t, envOptions{strategy: rotation.StrategyRotate})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = e.rotator.Rotate(ctxT(t), e.rot) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	v := e.ghValue(ghRepo)
	if e.ghValue(ghOrg) != v || e.ghValue(ghEnv) != v || e.status(v) != http.StatusOK {
		t.Error("the sinks disagree or hold a dead value")
	}
}

// A caller that gives up before anything changed stops the run.
func TestCancelledBeforeAnyChange(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := e.emu.Tokens()
	if _, err := e.rotator.Rotate(ctx, e.rot); !errors.Is(err, context.Canceled) {
		t.Fatalf("Rotate = %v, want context.Canceled", err)
	}
	if d := cmp.Diff(before, e.emu.Tokens(), ignoreLastUsed); d != "" {
		t.Errorf("Astro changed:\n%s", d)
	}
}

// A policy token id that exists nowhere (nor a replacement of it) is an
// error that names it, and changes nothing.
func TestManagedTokenMissing(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.ac.DeleteToken(ctxT(t), e.emu.OrganizationID(), e.managed.ID); err != nil {
		t.Fatal(err)
	}
	_, err := e.rotate()
	if !errors.Is(err, rotation.ErrTokenNotFound) || !strings.Contains(err.Error(), e.managed.ID) {
		t.Fatalf("Rotate = %v, want ErrTokenNotFound naming %s", err, e.managed.ID)
	}
	if e.ghValue(ghRepo) != e.oldValue {
		t.Error("a sink was written")
	}
}

// The sink factory keeps one GitHub client per App installation owner, so
// installation tokens are reused across runs rather than minted per run,
// and the rotation works end to end with App authentication.
func TestSinkFactoryGitHubApp(t *testing.T) {
	e := newEnv(t, envOptions{noGitHub: true})
	key, keyFile := appKey(t)
	gh, err := githubtest.Start(githubtest.Config{AppID: 42, AppKey: &key.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	gh.AddRepository("acme/dags", "production")
	gh.AddInstallation("acme")
	cfg := sink.Config{GitHub: sink.GitHubConfig{AppID: 42, AppPrivateKeyFile: keyFile, APIURL: gh.URL()}}
	e.setPolicy(rotation.StrategyRotate, githubTargetsYAML)
	f := rotation.NewSinks(cfg, nil, e.logger)
	e.rotator = e.newRotator(f)

	for run := 1; run <= 2; run++ {
		if _, err := e.rotate(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	// Two owners (the repository acme/dags and the organization acme),
	// one installation token each, reused by the second run.
	if got := gh.InstallationTokensIssued(); got != 2 {
		t.Errorf("installation tokens issued = %d, want 2", got)
	}
	v, _ := gh.Secret(ghRepo.target, ghRepo.name)
	o, _ := gh.Secret(ghOrg.target, ghOrg.name)
	e.secrets = append(e.secrets, v)
	if v == "" || v != o || e.status(v) != http.StatusOK {
		t.Error("the App-written secrets do not hold the valid value")
	}
}
