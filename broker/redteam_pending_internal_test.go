package broker

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// The set of creates with an unknown outcome has no bound but the rate of
// failures times the window (90 s), and a look removes the creates it is
// done with by slices.Contains over the removed ones, under the lock every
// failing exchange takes to add its own: 100,000 pending creates, and the
// look that ends them all (a shutdown, or a burst whose last look falls
// together), hold that lock for seconds.
func TestRedTeamPendingCreatesCost(t *testing.T) {
	const n = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pending := make([]*pendingCreate, 0, n)
	for i := range n {
		pending = append(pending, &pendingCreate{
			marker: Marker{Deadline: time.Now(), RepositoryID: "123456", RunID: fmt.Sprint(1000000 + i), RunAttempt: "1", Rule: "deploy-main", CheckRunID: fmt.Sprint(5000000 + i), Nonce: newNonce()},
			since:  time.Now(), sent: time.Now(),
			cause:     fmt.Errorf("create token: %w", &astro.APIError{StatusCode: http.StatusServiceUnavailable, Message: "Service Unavailable"}),
			requestID: fmt.Sprintf("req-%016x", i),
		})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("%d pending creates hold %.1f MB (%d B each)", n, float64(after.HeapAlloc-before.HeapAlloc)/1e6, (after.HeapAlloc-before.HeapAlloc)/n)
	for _, g := range []int{7_500, 30_000, n} {
		p := slices.Clone(pending)
		gone := slices.Clone(p[:g]) // the oldest: their last look
		start := time.Now()
		p = slices.DeleteFunc(p, func(x *pendingCreate) bool { return slices.Contains(gone, x) })
		t.Logf("pending %d, %d done in one look: the removal under r.mu takes %v", n, g, time.Since(start))
	}
}
