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
	"syscall"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// A gateway in front of Astro loses the answer of the first
// DELETE of each token (Astro deleted it; the client gets a 502, as the
// emulator's LoseAnswers does, here for deletes only so that the listing
// works). The client retries, Astro answers 404, and the reaper records
// the token it deleted itself as "already_gone" and does not count it as
// reaped. Nothing tells this 404 from another party's, so that is the
// documented behaviour (reliability.md, "already_gone"): the token is
// gone either way, and the audit's record of intent names this replica.
func TestRedTeamReaperLostDeleteAnswerIsAlreadyGone(t *testing.T) {
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
	policies, err := policy.NewReloader(e.policy, logger)
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
	if n != 0 || outcomes["already_gone"] != len(ids) || outcomes["deleting"] != len(ids) {
		t.Errorf("this reaper deleted all %d tokens (each first DELETE answered 502 by a gateway, retried, 404): "+
			"Reap counts %d reaped and the audit records %v; documented: none reaped, each an intent and already_gone", len(ids), n, outcomes)
	}
}

// Redis pauses (SIGSTOP) for a moment. Replica A's tick finds
// the store unreachable and starts a pass without the lease, which nothing
// stops: Redis comes back, replica B takes the lease and reaps, and A goes
// on deleting beside it to the end of its pass. reliability.md bounds the
// tokens deleted twice by the reap concurrency (here 1); the binary with
// three replicas and a 2.2 s Redis pause deleted 428 of 500 tokens twice.
func TestRedTeamLeaselessPassRunsBesideTheHolder(t *testing.T) {
	newStore, rsrv := ownRedisStore(t)
	t.Cleanup(func() { _ = syscall.Kill(rsrv.PID(), syscall.SIGCONT) })
	e := newEnv(t, envOptions{emulator: emulator.Config{Latency: 10 * time.Millisecond}})
	const n = 60
	seedMarked(t, e, n, e.clock.Now().Add(-time.Minute))
	a := newReapReplica(t, e, "A", replicaOptions{store: newStore(e.clock.Now), reapConc: 1})
	b := newReapReplica(t, e, "B", replicaOptions{store: newStore(e.clock.Now), reapConc: 1})

	if err := syscall.Kill(rsrv.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan bool)
	go func() { aDone <- a.tick(t) }()
	testwait.Until(t, 10*time.Second, "A to start a pass without the lease", func() bool { return strings.Contains(a.logs.String(), "reaping without it") })
	if err := syscall.Kill(rsrv.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	b.tick(t)
	<-aDone
	if strings.Contains(b.logs.String(), "reaping without it") {
		t.Fatal("B did not take the lease: Redis was not back for its tick")
	}

	twice := countOutcome(a, "already_gone") + countOutcome(b, "already_gone")
	t.Logf("%d tokens: A deleted %d, B %d, %d deleted twice; A's pass: %q, B's: %q",
		n, countOutcome(a, "deleted"), countOutcome(b, "deleted"), twice, lastMsg(a.outcomes()), lastMsg(b.outcomes()))
	if twice > 1 {
		t.Errorf("red team: after a Redis pause, A reaped without the lease while B held it: "+
			"%d of %d tokens deleted twice (A deleted %d, B %d; bound claimed: the reap concurrency, 1)",
			twice, n, countOutcome(a, "deleted"), countOutcome(b, "deleted"))
	}
}

// Redis loses the lease key while the holder A is mid-pass (a
// restart without persistence, a failover to a replica that had not got
// the key; here FLUSHALL). B takes the lease at its next tick, and A,
// which only renews every half interval, goes on deleting until then: two
// holders at once, each deleting the same tokens. The binary, at a 10 s
// interval with a Redis restart, deleted 80 and 88 of 800 tokens twice,
// with lease_held 1 on both replicas for about 2 s.
func TestRedTeamLeaseLostInRedisLeavesTwoHolders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	newStore, rsrv := ownRedisStore(t)
	e := newEnv(t, envOptions{emulator: emulator.Config{Latency: 10 * time.Millisecond}})
	const n = 100
	seedMarked(t, e, n, e.clock.Now().Add(-time.Minute))
	a := newReapReplica(t, e, "A", replicaOptions{store: newStore(e.clock.Now), reapConc: 1})
	b := newReapReplica(t, e, "B", replicaOptions{store: newStore(e.clock.Now), reapConc: 1})

	aDone := make(chan bool)
	go func() { aDone <- a.tick(t) }()
	testwait.Until(t, 10*time.Second, "A to start deleting", func() bool { return len(reapRecords(a.logs)) >= 4 })
	if err := rsrv.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b.tick(t)
	<-aDone
	if strings.Contains(a.logs.String(), "reaping without it") || strings.Contains(b.logs.String(), "reaping without it") {
		t.Fatal("a replica reaped without the lease: not the case under test")
	}
	twice := countOutcome(a, "already_gone") + countOutcome(b, "already_gone")
	t.Logf("%d tokens: A deleted %d, B %d, %d deleted twice; A's pass: %q, B's: %q",
		n, countOutcome(a, "deleted"), countOutcome(b, "deleted"), twice, lastMsg(a.outcomes()), lastMsg(b.outcomes()))
	if twice > 1 {
		t.Errorf("red team: the lease key lost in Redis mid-pass: A went on deleting until its next renewal while B held the lease: "+
			"%d of %d tokens deleted twice (A deleted %d, B %d; lease %s, renewed every %s; bound claimed: the reap concurrency, 1)",
			twice, n, countOutcome(a, "deleted"), countOutcome(b, "deleted"), leaseTTL, leaseTTL/2)
	}
}
