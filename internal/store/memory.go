package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Memory is the store of a single replica: state in this process, lost at
// exit. Replay protection is the bounded [ReplayGuard] (full of
// live entries, it refuses new tokens rather than forget one); rate limits
// are counted by this replica alone, so N replicas allow N times a limit;
// the lease is always held, so every replica reaps.
type Memory struct {
	replay *ReplayGuard
	now    func() time.Time

	mu        sync.Mutex
	tat       map[string]time.Time // key -> theoretical arrival time (GCRA)
	nextSweep int
}

// minSweep is the number of rate-limit keys below which Memory does not
// bother forgetting idle ones.
const minSweep = 1024

// NewMemory returns a memory store whose replay cache holds at most
// replaySize live entries (<= 0: [DefaultReplayCacheSize]); now nil
// means time.Now.
func NewMemory(replaySize int, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{
		replay:    NewReplayGuard(replaySize, now),
		now:       now,
		tat:       make(map[string]time.Time),
		nextSweep: minSweep,
	}
}

// Use implements [Store.Use] with the replay guard. iat is not checked
// here: memory is lost only with the process, and the broker refuses
// tokens issued before it started (broker/restart.go).
func (m *Memory) Use(_ context.Context, issuer, jti string, _, exp time.Time) error {
	return m.replay.Use(issuer, jti, exp)
}

// Used implements [Store.Used] with the replay guard.
func (m *Memory) Used(_ context.Context, issuer, jti string, _ time.Time) (bool, error) {
	return m.replay.Used(issuer, jti), nil
}

// Allow implements [Store.Allow] with the generic cell rate algorithm, as
// the Redis store does.
func (m *Memory) Allow(_ context.Context, key string, l Limit) (Verdict, error) {
	if err := l.Validate(); err != nil {
		return Verdict{}, fmt.Errorf("store: %w", err)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	tat, ok := m.tat[key]
	if !ok || tat.Before(now) {
		tat = now
	}
	v, next := gcra(now, tat, l)
	if v.Allowed {
		m.tat[key] = next
	}
	return v, nil
}

// Refund implements [Store.Refund]: the key's theoretical arrival time
// goes back one interval, and a budget whole again is forgotten.
func (m *Memory) Refund(_ context.Context, key string, l Limit) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	tat, ok := m.tat[key]
	if !ok {
		return nil
	}
	if tat = tat.Add(-l.Interval()); tat.After(now) {
		m.tat[key] = tat
	} else {
		delete(m.tat, key)
	}
	return nil
}

// gcra decides one event at now for a key whose theoretical arrival time
// is tat (not before now), and returns the next tat if it is allowed. It is
// the arithmetic of go-redis/redis_rate's script, which the Redis store
// runs.
func gcra(now, tat time.Time, l Limit) (Verdict, time.Time) {
	interval := l.Interval()
	next := tat.Add(interval)
	allowAt := next.Add(-interval * time.Duration(l.Burst))
	diff := now.Sub(allowAt)
	if diff < 0 {
		return Verdict{RetryAfter: -diff}, tat
	}
	return Verdict{Allowed: true, Remaining: int(diff / interval)}, next
}

// sweep forgets keys whose budget is whole again (a key absent and a key
// with a past tat mean the same), once the map has doubled since the last
// sweep: amortized O(1) per call, and memory bounded by the keys active
// within one burst's refill.
func (m *Memory) sweep(now time.Time) {
	if len(m.tat) < m.nextSweep {
		return
	}
	for k, tat := range m.tat {
		if !tat.After(now) {
			delete(m.tat, k)
		}
	}
	m.nextSweep = max(minSweep, 2*len(m.tat))
}

// Lease implements [Store.Lease]: a single replica always holds it.
func (m *Memory) Lease(context.Context, string, time.Duration) (bool, error) { return true, nil }

// ReleaseLease implements [Store.ReleaseLease]; there is nothing to give up.
func (m *Memory) ReleaseLease(context.Context, string) error { return nil }

// Ping implements [Store.Ping]: memory is always there, but a replay
// cache full of live entries refuses every new token (503 busy) until
// some expire, so the replica says so rather than ready.
func (m *Memory) Ping(context.Context) error {
	if m.replay.Full() {
		return fmt.Errorf("%w: %w: every new ID token is refused until entries expire (at most the tokens' lifetime and a minute)", ErrUnavailable, ErrReplayCacheFull)
	}
	return nil
}

// Shared implements [Store.Shared]: memory is this process's alone.
func (m *Memory) Shared() bool { return false }

// Close implements [Store.Close].
func (m *Memory) Close() error { return nil }

// ReplayLen is the number of remembered ID tokens (see
// [ReplayGuard.Len]).
func (m *Memory) ReplayLen() int { return m.replay.Len() }

// RateKeys is the number of rate-limit keys remembered.
func (m *Memory) RateKeys() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tat)
}
