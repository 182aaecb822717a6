package store

import (
	"container/heap"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/astro-sts/astro-sts/internal/skew"
)

// DefaultReplayCacheSize is the capacity of a [ReplayGuard] built with
// max <= 0. An entry is a fixed 32-byte hash and an expiry, about 110
// bytes with the map's and the heap's overhead (docs/reliability.md has
// the measurement), so a full cache costs some 11 MB; GitHub's five-minute
// tokens mean it holds 100k exchanges per five minutes.
const DefaultReplayCacheSize = 100_000

// ReplayGuard remembers the jti of every token used for an exchange until
// that token can no longer verify (exp plus [skew.Max]), so that a token
// stolen from a log or a compromised step cannot be exchanged a second
// time. It is bounded: when full it first forgets expired entries, and if
// every entry is still live it refuses the new token ([ErrReplayCacheFull],
// fail closed) rather than forgetting a live jti.
//
// It is in memory: with several broker replicas, a token could be
// exchanged once per replica; the short token lifetime bounds that.
type ReplayGuard struct {
	max int
	now func() time.Time

	mu    sync.Mutex
	seen  map[guardKey]struct{}
	byExp expiryHeap // the same entries, soonest expiry first
}

// guardKey is the SHA-256 of issuer and jti, NUL between them: a fixed
// size whatever the token, and no reference into it. Keeping the jti
// string itself would keep the whole decoded payload it was sliced from
// alive, some 1.3 kB per entry instead of about 110 bytes.
type guardKey [sha256.Size]byte

// newGuardKey is the key a token's jti has in Redis too ([Key]), unencoded.
func newGuardKey(issuer, jti string) guardKey { return keySum(issuer, jti) }

// NewReplayGuard returns a guard holding at most max live entries
// (max <= 0 means [DefaultReplayCacheSize]); now nil means time.Now.
func NewReplayGuard(max int, now func() time.Time) *ReplayGuard {
	if max <= 0 {
		max = DefaultReplayCacheSize
	}
	if now == nil {
		now = time.Now
	}
	return &ReplayGuard{max: max, now: now, seen: make(map[guardKey]struct{})}
}

// Use records that the token (issuer, jti) with expiry exp is being used.
// It returns [ErrReplayed] if it was used before, [ErrReplayCacheFull] if
// it cannot be remembered, [ErrNoJTI] if jti is empty and [ErrTokenExpired]
// if the token has already expired. Pass the verified claims' Issuer, JTI and
// Expiry.
func (g *ReplayGuard) Use(issuer, jti string, exp time.Time) error {
	if jti == "" {
		return fmt.Errorf("%w: no jti", ErrNoJTI)
	}
	now := g.now()
	until := exp.Add(skew.Max)
	if !now.Before(until) {
		return fmt.Errorf("%w: expired", ErrTokenExpired)
	}
	k := newGuardKey(issuer, jti)

	g.mu.Lock()
	defer g.mu.Unlock()
	g.evictExpired(now)
	if _, ok := g.seen[k]; ok {
		return fmt.Errorf("%w: jti %q of %s", ErrReplayed, safeJTI(jti), issuer)
	}
	if len(g.seen) >= g.max {
		return fmt.Errorf("%w: %d live entries", ErrReplayCacheFull, len(g.seen))
	}
	g.seen[k] = struct{}{}
	heap.Push(&g.byExp, replayEntry{key: k, until: until.UnixNano()})
	return nil
}

// Used reports whether the token (issuer, jti) was used and is still
// remembered: whether [ReplayGuard.Use] would call it a replay. It records
// nothing.
func (g *ReplayGuard) Used(issuer, jti string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.evictExpired(g.now())
	_, ok := g.seen[newGuardKey(issuer, jti)]
	return ok
}

// Full reports whether the guard holds max live entries, so that
// [ReplayGuard.Use] would refuse any new token ([ErrReplayCacheFull]).
func (g *ReplayGuard) Full() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.evictExpired(g.now())
	return len(g.seen) >= g.max
}

// Len is the number of remembered entries, expired ones included until the
// next [ReplayGuard.Use] evicts them.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

func (g *ReplayGuard) evictExpired(now time.Time) {
	for n := now.UnixNano(); len(g.byExp) > 0 && n >= g.byExp[0].until; {
		e := heap.Pop(&g.byExp).(replayEntry)
		delete(g.seen, e.key)
	}
}

type replayEntry struct {
	key   guardKey
	until int64 // Unix nanoseconds: 8 bytes, where a time.Time takes 24
}

// expiryHeap is a min-heap of entries by expiry, so eviction costs
// O(log n) per entry instead of a scan of the whole cache.
type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].until < h[j].until }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// safeJTI bounds a jti for a log line, as the verifier bounds what it
// quotes of a token.
func safeJTI(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
