package broker

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// The set of creates with an unknown outcome is bounded (beyond it a
// create's token is left to the reaper, counted not_searched), and a look
// removes the creates it is done with one at a time from a map, not by a
// scan of the set for each, under the lock every failing exchange takes to
// add its own.
func TestRedTeamPendingCreatesCost(t *testing.T) {
	m, err := NewMetrics(NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now, metrics: m, track: newTracker(), astroTimeout: time.Second}
	r := newRecoverer(s, nil, 0)
	s.recovery = r
	r.running = true // no search: this measures the set alone
	const extra = 100
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range recoveryMaxPending + extra {
		s.recoverCreate(pendingCreate{
			marker: Marker{Deadline: time.Now(), RepositoryID: "123456", RunID: fmt.Sprint(1000000 + i), RunAttempt: "1", Rule: "deploy-main", CheckRunID: fmt.Sprint(5000000 + i), Nonce: newNonce()},
			since:  time.Now(), sent: time.Now(),
			cause:     fmt.Errorf("create token: %w", &astro.APIError{StatusCode: http.StatusServiceUnavailable, Message: "Service Unavailable"}),
			requestID: fmt.Sprintf("req-%016x", i),
		})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(r.pending) != recoveryMaxPending {
		t.Fatalf("%d creates pending, want the cap %d", len(r.pending), recoveryMaxPending)
	}
	if got := m.undelivered.WithLabelValues(undeliveredUnknown, "not_searched").c.Get(); got != extra {
		t.Errorf("not_searched counted %v, want %d", got, extra)
	}
	t.Logf("%d pending creates hold %.1f MB", len(r.pending), float64(after.HeapAlloc-before.HeapAlloc)/1e6)
	start := time.Now()
	r.mu.Lock()
	for p := range r.pending {
		delete(r.pending, p)
	}
	r.mu.Unlock()
	t.Logf("removing all %d under the lock took %v", recoveryMaxPending, time.Since(start))
}
