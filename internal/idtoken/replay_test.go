package idtoken_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/store"
)

// TestReplayAfterVerify is the "replayed jti" row of the bad-token table: a
// token verifies twice (verification does not consume it) but is
// exchanged once.
func TestReplayAfterVerify(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	v := newVerifier(t, clk.Now, nil, a.URL())
	g := store.NewReplayGuard(100, clk.Now)
	tok := mint(t, a, issuer.Claims{JTI: "once"})
	var got []string
	for range 2 {
		c, err := v.Verify(t.Context(), tok)
		if err != nil {
			t.Fatal(err)
		}
		err = g.Use(c.Issuer, c.JTI, c.Expiry)
		got = append(got, replayName(err))
		assertNoToken(t, err, tok)
	}
	if diff := cmp.Diff([]string{"ok", store.ErrReplayed.Error()}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// replayName names what the broker's replay guard said of a use.
func replayName(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, store.ErrReplayed):
		return store.ErrReplayed.Error()
	}
	return "unexpected: " + err.Error()
}
