package store_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/store"
)

// replayBytesPerEntry fills a guard with n entries whose jti, as the
// verifier's, is a slice of a decoded payload of GitHub's size (about
// 1.2 kB), and returns the heap the guard holds per entry. The payloads
// are garbage unless the guard keeps them.
func replayBytesPerEntry(n int) float64 {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	exp := now.Add(5 * time.Minute)
	pad := strings.Repeat("p", 1200)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g := store.NewReplayGuard(n, func() time.Time { return now })
	for i := range n {
		payload := fmt.Sprintf(`{"claims":%q,"jti":"%08d-1f0c-4e2b-9a53-7d1e2c3b4a59"}`, pad, i)
		jti := payload[len(payload)-38 : len(payload)-2]
		if err := g.Use("https://token.actions.githubusercontent.com", jti, exp); err != nil {
			panic(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(g)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestReplayEntrySize: an entry costs a fixed size, not the token it came
// from: the whole cache at its default size fits well within the 256 Mi
// the manifests give the broker.
func TestReplayEntrySize(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a cache of 50,000 entries")
	}
	per := replayBytesPerEntry(50_000)
	t.Logf("FIGURE replay entry: %.0f bytes; %.1f MB at the default %d entries", per, per*store.DefaultReplayCacheSize/1e6, store.DefaultReplayCacheSize)
	if per > 200 {
		t.Errorf("%.0f bytes per replay entry, want at most 200: the entry keeps more than a hash and an expiry", per)
	}
}

// BenchmarkReplayEntryBytes reports the heap a replay entry costs, at the
// default cache size.
func BenchmarkReplayEntryBytes(b *testing.B) {
	for range b.N {
		b.ReportMetric(replayBytesPerEntry(store.DefaultReplayCacheSize), "bytes/entry")
	}
}
