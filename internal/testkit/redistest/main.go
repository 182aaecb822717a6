package redistest

import (
	"context"
	"testing"

	"github.com/astro-sts/astro-sts/internal/testkit/servertest"
)

// Main is a test package's TestMain ([servertest.Main]) with its one
// redis-server ([Shared]) in *s: nil without a redis-server outside CI.
func Main(m *testing.M, s **Server) {
	servertest.Main(m, s, Shared)
}

// Need returns s emptied, for a test that uses Redis; without a server it
// skips (locally) or fails (in CI) the test with [InstallHint].
func Need(t testing.TB, s *Server) *Server {
	t.Helper()
	servertest.Need(t, s == nil, InstallHint)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
