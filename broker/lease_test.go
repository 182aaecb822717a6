package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// reapReplica is one more broker on a test environment's emulator, as a
// second process of the same deployment would be: its own Astro client
// (with the organization token it is given), its own store client, its own
// log, and a reaper driven tick by tick.
type reapReplica struct {
	name  string
	b     *broker.Server
	logs  *syncbuf.Buffer
	ticks chan time.Time
	done  chan struct{}
}

type replicaOptions struct {
	token     string // the organization token; "" means the emulator's owner token
	store     store.Store
	wrapAstro func(broker.Astro) broker.Astro
	reapConc  int
}

// lease is the lifetime of the reaper's lease in these tests (the reap
// interval; the ticks themselves come from the test). The lease lives in
// Redis, on its real clock.
const leaseTTL = 400 * time.Millisecond

func newReapReplica(t *testing.T, e *testEnv, name string, o replicaOptions) *reapReplica {
	t.Helper()
	token := o.token
	if token == "" {
		token = e.emu.OrganizationToken()
	}
	ac, err := astro.New(astro.Config{
		BaseURL: e.emuURL, Token: token,
		BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MaxAttempts: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	var upstream broker.Astro = ac
	if o.wrapAstro != nil {
		upstream = o.wrapAstro(ac)
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
	r := &reapReplica{name: name, logs: logs, ticks: make(chan time.Time), done: make(chan struct{})}
	r.b, err = broker.New(broker.Config{
		Astro: upstream, OrganizationID: e.emu.OrganizationID(), Verifier: v, Store: o.store,
		Policies: policies, Logger: logger, Now: e.clock.Now,
		ReadyCacheTTL: time.Hour, ReapConcurrency: o.reapConc, ReapTicks: r.ticks,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(r.done); r.b.RunReaper(ctx, leaseTTL) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// tickOutcomes are the messages a reaper logs once per tick: a pass's
// summary, or why it did not reap.
var tickOutcomes = []string{"reaper pass", "reaper pass incomplete", "reaper pass stopped", "reaper: not this tick"}

// outcomes returns the replica's per-tick log lines so far.
func (r *reapReplica) outcomes() []map[string]any {
	var out []map[string]any
	for _, rec := range logRecords(r.logs) {
		msg, _ := rec["msg"].(string)
		for _, o := range tickOutcomes {
			if msg == o || strings.HasPrefix(msg, o+";") || strings.HasPrefix(msg, o+":") {
				out = append(out, rec)
				break
			}
		}
	}
	return out
}

// tick starts one reaper tick and waits until its outcome is logged. It
// reports false if none was logged in a while (a reaper that does not say
// what it did with a tick, as before the lease followed health).
func (r *reapReplica) tick(t *testing.T) bool {
	t.Helper()
	before := len(r.outcomes())
	r.ticks <- time.Now()
	if !testwait.For(10*time.Second, func() bool { return len(r.outcomes()) != before }) {
		t.Logf("%s: no outcome logged for its tick", r.name)
		return false
	}
	return true
}

func logRecords(b *syncbuf.Buffer) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// reapRecords returns the replica's audit records of reaper deletes.
func reapRecords(b *syncbuf.Buffer) []map[string]any {
	var out []map[string]any
	for _, rec := range logRecords(b) {
		if rec["audit"] == "reap" {
			out = append(out, rec)
		}
	}
	return out
}

// countOutcome is how many of the replica's reaper audit records have
// outcome.
func countOutcome(r *reapReplica, outcome string) int {
	c := 0
	for _, rec := range reapRecords(r.logs) {
		if rec["outcome"] == outcome {
			c++
		}
	}
	return c
}

// sharedRedis returns a maker of stores on the package's redis-server: one
// per replica, as each process has its own client and owner name.
func sharedRedis(t *testing.T, e *testEnv) func() store.Store {
	rs, _ := redisStore(t)
	return func() store.Store { return rs(e.clock.Now) }
}

// The reaper's lease follows health: a replica that cannot reach Astro
// with its organization token does not keep the lease from a healthy one,
// which reaps within two intervals. Before, the sick replica took the
// lease, failed every pass and renewed it at every tick: 20 expired tokens
// of 20 were left after ten intervals, with sum(lease_held) = 1.
func TestReaperLeaseFollowsHealth(t *testing.T) {
	t.Run("organization token refused from the start", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		stores := sharedRedis(t, e)
		a := newReapReplica(t, e, "A", replicaOptions{token: "not-an-astro-token", store: stores()})
		b := newReapReplica(t, e, "B", replicaOptions{store: stores()})
		seedMarked(t, e, 20, e.clock.Now().Add(-time.Minute))

		// A ticks first, as it would if it were the one holding the lease.
		for range 2 {
			a.tick(t)
			b.tick(t)
		}
		if left := markedLeft(e); left != 0 {
			t.Fatalf("%d of 20 expired tokens left after two intervals of a healthy replica beside one whose token Astro refuses", left)
		}
		if !strings.Contains(a.logs.String(), "the Astro check failed") {
			t.Errorf("A does not say why it does not reap:\n%s", lastLines(a.logs.String(), 5))
		}
	})

	t.Run("organization token revoked while holding the lease", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		stores := sharedRedis(t, e)
		// A's organization token is one the test can revoke.
		tok, err := e.astroOrg.CreateToken(context.Background(), e.emu.OrganizationID(), astro.CreateTokenRequest{
			Name: "replica A", Role: astro.RoleOrganizationOwner, Scope: astro.ScopeOrganization,
		})
		if err != nil {
			t.Fatal(err)
		}
		a := newReapReplica(t, e, "A", replicaOptions{token: tok.Token, store: stores()})
		b := newReapReplica(t, e, "B", replicaOptions{store: stores()})

		// A takes the lease with a pass that works; B leaves it to A.
		a.tick(t)
		b.tick(t)
		if got := lastMsg(a.outcomes()); got != "reaper pass" {
			t.Fatalf("A's first tick: %q, want a pass", got)
		}
		// Then A's token is revoked, and tokens expire.
		if err := e.astroOrg.DeleteToken(context.Background(), e.emu.OrganizationID(), tok.ID); err != nil {
			t.Fatal(err)
		}
		seedMarked(t, e, 20, e.clock.Now().Add(-time.Minute))
		for i := range 2 {
			a.tick(t)
			b.tick(t)
			t.Logf("interval %d: %d expired tokens left; A %q, B %q", i+1, markedLeft(e), lastMsg(a.outcomes()), lastMsg(b.outcomes()))
		}
		if left := markedLeft(e); left != 0 {
			t.Fatalf("%d of 20 expired tokens left after two intervals since the lease holder's token was revoked", left)
		}
	})
}

func lastMsg(recs []map[string]any) string {
	if len(recs) == 0 {
		return ""
	}
	s, _ := recs[len(recs)-1]["msg"].(string)
	return s
}

// pause stops a replica as SIGSTOP would, at a point of the test's
// choosing: its deletes stall once they have been sent, and its lease
// calls stall, until resume.
type pause struct {
	armed   atomic.Bool
	stopped atomic.Bool
	stalled atomic.Int64
	resumed chan struct{}
}

func newPause() *pause { return &pause{resumed: make(chan struct{})} }

func (p *pause) wait() {
	if p.stopped.Load() {
		<-p.resumed
	}
}

// pausedAstro is a replica's Astro client whose deletes, once the pause is
// armed, stop the process after their answer came back; deletes counts
// the deletes each token got, from every replica.
type pausedAstro struct {
	broker.Astro
	p       *pause
	deletes *deleteCount
}

type deleteCount struct {
	mu    sync.Mutex
	calls map[string]int
}

func (d *deleteCount) add(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[id]++
}

func (a *pausedAstro) DeleteTokenFound(ctx context.Context, org, id string) (bool, error) {
	found, err := a.Astro.(interface {
		DeleteTokenFound(context.Context, string, string) (bool, error)
	}).DeleteTokenFound(ctx, org, id)
	a.deletes.add(id)
	if a.p != nil && a.p.armed.Load() {
		a.p.stopped.Store(true)
		a.p.stalled.Add(1)
		<-a.p.resumed
	}
	return found, err
}

func (a *pausedAstro) DeleteToken(ctx context.Context, org, id string) error {
	_, err := a.DeleteTokenFound(ctx, org, id)
	return err
}

// pausedStore is a replica's client of the real shared store whose lease
// calls stall while the replica is stopped.
type pausedStore struct {
	store.Store
	p *pause
}

func (s *pausedStore) Lease(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	s.p.wait()
	return s.Store.Lease(ctx, name, ttl)
}

func (s *pausedStore) ReleaseLease(ctx context.Context, name string) error {
	s.p.wait()
	return s.Store.ReleaseLease(ctx, name)
}

// A holder stopped mid-pass for longer than its lease, then resumed, stops
// deleting: its next renewal finds the other replica holding the lease and
// cancels the pass, and no delete goes out without the lease. No token is
// deleted twice, and each has one reap outcome. Before, the resumed holder
// went on with the tokens it had listed, all deleted by then by the other
// replica: 288 of 300 tokens deleted twice, 588 reap records for 300.
func TestReaperHolderPausedPastItsLeaseStops(t *testing.T) {
	e := newEnv(t, envOptions{})
	stores := sharedRedis(t, e)
	_, srv := redisStore(t)
	const n, conc = 40, 4
	deletes := &deleteCount{calls: map[string]int{}}
	p := newPause()
	a := newReapReplica(t, e, "A", replicaOptions{
		store: &pausedStore{Store: stores(), p: p}, reapConc: conc,
		wrapAstro: func(ac broker.Astro) broker.Astro { return &pausedAstro{Astro: ac, p: p, deletes: deletes} },
	})
	b := newReapReplica(t, e, "B", replicaOptions{
		store:     stores(),
		wrapAstro: func(ac broker.Astro) broker.Astro { return &pausedAstro{Astro: ac, deletes: deletes} },
	})
	ids := seedMarked(t, e, n, e.clock.Now().Add(-time.Minute))

	// A takes the lease and starts its pass; its first delete stops the
	// process (deleters that were past their lease check by then send
	// theirs too; the others stall in their lease call).
	p.armed.Store(true)
	a.ticks <- time.Now()
	testwait.Until(t, 10*time.Second, "the first delete to stall", func() bool { return p.stalled.Load() > 0 })

	// A's lease runs out in Redis while A is stopped; B takes it at its
	// next tick and reaps the rest.
	rc := srv.Client()
	defer rc.Close()
	testwait.Until(t, 10*time.Second, "the lease to be released", func() bool { return rc.Exists(context.Background(), "astro-sts:lease:reaper").Val() == 0 })
	b.tick(t)
	if left := markedLeft(e); left != 0 {
		t.Fatalf("B's pass left %d expired tokens", left)
	}

	// A resumes mid-pass.
	close(p.resumed)
	testwait.Until(t, 10*time.Second, "one outcome logged", func() bool { return len(a.outcomes()) == 1 })
	if got := lastMsg(a.outcomes()); !strings.HasPrefix(got, "reaper pass stopped") {
		t.Errorf("A's pass after it resumed: %q, want it stopped for the lost lease", got)
	}

	deletes.mu.Lock()
	twice, total := 0, 0
	for _, id := range ids {
		total += deletes.calls[id]
		if deletes.calls[id] > 1 {
			twice++
		}
	}
	deletes.mu.Unlock()
	outcomes := map[string]int{}
	perToken := map[string]int{}
	for _, recs := range [][]map[string]any{reapRecords(a.logs), reapRecords(b.logs)} {
		for _, rec := range recs {
			o, _ := rec["outcome"].(string)
			outcomes[o]++
			if o != "deleting" {
				perToken[rec["token_id"].(string)]++
			}
		}
	}
	dup := 0
	for _, c := range perToken {
		if c > 1 {
			dup++
		}
	}
	t.Logf("%d tokens: %d deletes sent, %d tokens deleted twice; reap records by outcome %v", n, total, twice, outcomes)
	if twice != 0 || total != n {
		t.Errorf("%d deletes sent for %d tokens, %d tokens deleted twice: the resumed holder went on deleting without the lease", total, n, twice)
	}
	if dup != 0 || len(perToken) != n || outcomes["already_gone"] != 0 {
		t.Errorf("reap outcome records: %d tokens with more than one, %d tokens with one, outcomes %v; want one per token", dup, len(perToken), outcomes)
	}
}

// racingAstro deletes one listed token behind the reaper's back, between
// its listing and its delete, as another replica or a revoke would.
type racingAstro struct {
	broker.Astro
	victim atomic.Pointer[string]
}

func (r *racingAstro) ListTokensPage(ctx context.Context, org string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error) {
	page, err := r.Astro.ListTokensPage(ctx, org, opts, offset, limit)
	if id := r.victim.Swap(nil); id != nil && err == nil {
		if err := r.Astro.DeleteToken(ctx, org, *id); err != nil {
			return nil, err
		}
	}
	return page, err
}

func (r *racingAstro) DeleteTokenFound(ctx context.Context, org, id string) (bool, error) {
	return r.Astro.(interface {
		DeleteTokenFound(context.Context, string, string) (bool, error)
	}).DeleteTokenFound(ctx, org, id)
}

// A delete Astro answers 404 is recorded as already gone, with its own
// outcome in the audit record and the metric, and is not counted as
// reaped. Before, it counted as reaped, in the records and in Reap's
// count.
func TestReaperRecordsAlreadyGone(t *testing.T) {
	ra := &racingAstro{}
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { ra.Astro = a; return ra }})
	ids := seedMarked(t, e, 3, e.clock.Now().Add(-time.Minute))
	ra.victim.Store(&ids[1])
	n, err := e.broker.Reap(context.Background())
	if err != nil || n != 2 {
		t.Errorf("Reap = %d, %v; want the 2 tokens it deleted", n, err)
	}
	got := map[string]string{}
	for _, rec := range e.audits("reap") {
		if o, _ := rec["outcome"].(string); o != "deleting" {
			got[rec["token_id"].(string)] = o
		}
	}
	want := map[string]string{ids[0]: "deleted", ids[1]: "already_gone", ids[2]: "deleted"}
	for id, o := range want {
		if got[id] != o {
			t.Errorf("token %s: reap outcome %q, want %q (all: %v)", id, got[id], o, got)
		}
	}
	m := e.metrics()
	for _, w := range []string{`astro_sts_reaped_tokens_total{outcome="deleted"} 2`, `astro_sts_reaped_tokens_total{outcome="already_gone"} 1`} {
		if !strings.Contains(m, w+"\n") {
			t.Errorf("metrics lack %s:\n%s", w, grepLines(m, "reaped"))
		}
	}
}

// intentCheckingAstro checks, as each reaper delete reaches Astro, that
// the broker has already logged its intent to delete that token.
type intentCheckingAstro struct {
	broker.Astro
	logs    atomic.Pointer[syncbuf.Buffer]
	mu      sync.Mutex
	missing []string
	seen    int
}

func (c *intentCheckingAstro) check(id string) {
	intent := false
	for _, rec := range reapRecords(c.logs.Load()) {
		if rec["token_id"] == id && rec["outcome"] == "deleting" {
			intent = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen++
	if !intent {
		c.missing = append(c.missing, id)
	}
}

func (c *intentCheckingAstro) DeleteToken(ctx context.Context, org, id string) error {
	c.check(id)
	return c.Astro.DeleteToken(ctx, org, id)
}

func (c *intentCheckingAstro) DeleteTokenFound(ctx context.Context, org, id string) (bool, error) {
	c.check(id)
	return c.Astro.(interface {
		DeleteTokenFound(context.Context, string, string) (bool, error)
	}).DeleteTokenFound(ctx, org, id)
}

// Every reaper delete has its record of intent in the log before it is
// sent, so that a broker killed mid-pass leaves a record of every delete
// that may have happened. Before, the only record was written after the
// delete: a kill -9 in between lost it (4 tokens of 300 deleted with no
// record, up to the reap concurrency per kill).
func TestReaperIntentIsRecordedBeforeEachDelete(t *testing.T) {
	ic := &intentCheckingAstro{}
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { ic.Astro = a; return ic }})
	ic.logs.Store(e.logs)
	seedMarked(t, e, 12, e.clock.Now().Add(-time.Minute))
	if n, err := e.broker.Reap(context.Background()); n != 12 || err != nil {
		t.Fatalf("Reap = %d, %v", n, err)
	}
	if ic.seen != 12 || len(ic.missing) != 0 {
		t.Errorf("%d deletes sent, %d without a record of intent before them: %v", ic.seen, len(ic.missing), ic.missing)
	}
	// And each intent is followed by its outcome.
	outcome := map[string][]string{}
	for _, rec := range e.audits("reap") {
		id := rec["token_id"].(string)
		o, _ := rec["outcome"].(string)
		outcome[id] = append(outcome[id], o)
	}
	for id, o := range outcome {
		if len(o) != 2 || o[0] != "deleting" || o[1] != "deleted" {
			t.Errorf("token %s: reap records %v, want [deleting deleted]", id, o)
		}
	}
}

// timedOutAstro is pausedAstro whose deletes, once the pause is armed,
// stop the process before their answer comes back and then fail as a call
// that outlasted the Astro timeout: Astro may have deleted the token.
type timedOutAstro struct {
	pausedAstro
}

func (a *timedOutAstro) DeleteTokenFound(ctx context.Context, org, id string) (bool, error) {
	found, err := a.pausedAstro.DeleteTokenFound(ctx, org, id)
	if a.p.armed.Load() {
		return false, fmt.Errorf("delete token %s: %w", id, context.DeadlineExceeded)
	}
	return found, err
}

func (a *timedOutAstro) DeleteToken(ctx context.Context, org, id string) error {
	_, err := a.DeleteTokenFound(ctx, org, id)
	return err
}

// A holder paused past its lease with deletes in flight, which time out
// meanwhile, stops for the lease it lost: its deletes cut off by the pause
// are recorded delete_failed (the intent says they may have happened) but
// are not the pass's failures. Before, they were, and the pass logged
// "incomplete" (an error, counted in astro_sts_reap_errors_total).
func TestReaperHolderPausedWithDeletesTimingOutStops(t *testing.T) {
	e := newEnv(t, envOptions{})
	stores := sharedRedis(t, e)
	_, srv := redisStore(t)
	const n, conc = 20, 2
	deletes := &deleteCount{calls: map[string]int{}}
	p := newPause()
	a := newReapReplica(t, e, "A", replicaOptions{
		store: &pausedStore{Store: stores(), p: p}, reapConc: conc,
		wrapAstro: func(ac broker.Astro) broker.Astro {
			return &timedOutAstro{pausedAstro{Astro: ac, p: p, deletes: deletes}}
		},
	})
	b := newReapReplica(t, e, "B", replicaOptions{store: stores()})
	seedMarked(t, e, n, e.clock.Now().Add(-time.Minute))

	var resume sync.Once
	t.Cleanup(func() { resume.Do(func() { close(p.resumed) }) }) // before the replicas' own
	p.armed.Store(true)
	a.ticks <- time.Now()
	testwait.Until(t, 10*time.Second, "the first delete to stall", func() bool { return p.stalled.Load() > 0 })
	rc := srv.Client()
	defer rc.Close()
	testwait.Until(t, 10*time.Second, "the lease to vanish from Redis", func() bool { return rc.Exists(context.Background(), "astro-sts:lease:reaper").Val() == 0 })
	b.tick(t)
	resume.Do(func() { close(p.resumed) })
	testwait.Until(t, 10*time.Second, "A's one outcome", func() bool { return len(a.outcomes()) == 1 })
	got := a.outcomes()[0]
	t.Logf("A's pass after it resumed: %q, failed %v", got["msg"], got["failed"])
	if msg, _ := got["msg"].(string); !strings.HasPrefix(msg, "reaper pass stopped") || got["failed"] != float64(0) {
		t.Errorf("A's pass after it resumed: %q with %v failed calls; want it stopped for the lost lease, none failed", msg, got["failed"])
	}
}

// A pass that started without the lease (Redis paused at its tick) takes
// the lease as soon as the store answers again and nobody holds it, and
// reaps every token: fail-open while the store is out, under the lease
// once it is back.
func TestReaperLeaselessPassTakesTheFreeLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	newStore, rsrv := ownRedisStore(t)
	t.Cleanup(func() { _ = syscall.Kill(rsrv.PID(), syscall.SIGCONT) })
	e := newEnv(t, envOptions{emulator: emulator.Config{Latency: 10 * time.Millisecond}})
	const n = 30
	seedMarked(t, e, n, e.clock.Now().Add(-time.Minute))
	s := newStore(e.clock.Now).(*store.Redis)
	a := newReapReplica(t, e, "A", replicaOptions{store: s, reapConc: 1})

	if err := syscall.Kill(rsrv.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan bool)
	go func() { aDone <- a.tick(t) }()
	testwait.Until(t, 10*time.Second, "A to reap without the lease", func() bool { return strings.Contains(a.logs.String(), "reaping without it") })
	if err := syscall.Kill(rsrv.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	<-aDone
	if got := lastMsg(a.outcomes()); got != "reaper pass" {
		t.Errorf("A's pass: %q, want one that reaped to the end", got)
	}
	if !strings.Contains(a.logs.String(), "this pass now holds it") {
		t.Errorf("A never took the free lease once Redis was back:\n%s", lastLines(a.logs.String(), 5))
	}
	if left := markedLeft(e); left != 0 {
		t.Errorf("%d of %d expired tokens left", left, n)
	}
	if owner := rsrv.Client().Get(ctx, "astro-sts:lease:reaper").Val(); owner != s.Owner() {
		t.Errorf("the lease is %q's, want A's (%q)", owner, s.Owner())
	}
}
