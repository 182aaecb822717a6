package policy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// logBuffer collects log output from the Watch goroutine safely.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	// Write then rename, as editors and Kubernetes do, so a poll never
	// sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const otherPolicy = `
rules:
  - name: only-rule
    match: {repository_id: "123456"}
    grant: {workspaces: [ws-other], max_role: WORKSPACE_ACCESSOR, max_ttl: 5m}
`

func newReloader(t *testing.T) (*policy.Reloader, string, *logBuffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, basePolicy)
	logs := &logBuffer{}
	s, err := policy.NewReloader(path, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return s, path, logs
}

func TestNewReloaderFailsOnABadFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "rules: [{name: r}]\n")
	for _, path := range []string{bad, filepath.Join(dir, "missing.yaml")} {
		if s, err := policy.NewReloader(path, nil); err == nil {
			t.Errorf("NewReloader(%s) = %v, want an error", filepath.Base(path), s)
		}
	}
}

func TestReloadKeepsTheOldPolicyOnABadFile(t *testing.T) {
	s, path, logs := newReloader(t)
	first := s.Current()

	writeFile(t, path, basePolicy+"\n  - name: broken\n    match: {event_name: push}\n")
	err := s.Reload()
	if err == nil || !strings.Contains(err.Error(), "identity constraint") {
		t.Fatalf("Reload of a bad file = %v", err)
	}
	if s.Current() != first {
		t.Fatal("a bad file replaced the policy")
	}
	if _, err := s.Current().Decide(mainClaims(), policy.Request{}); err != nil {
		t.Fatalf("the old policy no longer decides: %v", err)
	}
	if !strings.Contains(logs.String(), "keeping the current policy") || !strings.Contains(logs.String(), "identity constraint") {
		t.Errorf("the reason was not logged:\n%s", logs)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil || s.Current() != first {
		t.Fatalf("Reload of a missing file = %v; policy replaced: %v", err, s.Current() != first)
	}

	writeFile(t, path, otherPolicy)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.Current() == first || s.Current().Rules() != 1 {
		t.Fatal("a good file did not replace the policy")
	}
	d, err := s.Current().Decide(mainClaims(), policy.Request{})
	if err != nil || d.Rule != "only-rule" {
		t.Fatalf("new policy Decide = %+v, %v", d, err)
	}
}

func TestWatchPollsTheFile(t *testing.T) {
	s, path, logs := newReloader(t)
	first := s.Current()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Watch(ctx, 10*time.Millisecond, nil)
		close(done)
	}()

	writeFile(t, path, "rules: [{name: r}]\n")
	testwait.Until(t, 10*time.Second, "the bad file to be logged", func() bool { return strings.Contains(logs.String(), "keeping the current policy") })
	// A negative: a poll that finds the same bad file changes nothing
	// one could wait for, so the test gives the 10ms ticker a window.
	time.Sleep(60 * time.Millisecond) // several more polls
	if n := strings.Count(logs.String(), "keeping the current policy"); n != 1 {
		t.Errorf("a bad file was logged %d times, want once", n)
	}
	if s.Current() != first {
		t.Fatal("a bad file replaced the policy")
	}

	writeFile(t, path, otherPolicy)
	testwait.Until(t, 10*time.Second, "the new policy", func() bool { return s.Current().Rules() == 1 })

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not return when ctx ended")
	}
}

func TestWatchReloadsOnSignal(t *testing.T) {
	s, path, logs := newReloader(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sighup := make(chan os.Signal, 1)
	go s.Watch(ctx, 0, sighup) // no polling: only the signal reloads

	writeFile(t, path, otherPolicy)
	// A negative: with no ticker nothing happens that one could wait
	// for; the window only gives a wrong reload the chance to show.
	time.Sleep(30 * time.Millisecond)
	if s.Current().Rules() != 3 {
		t.Fatal("reloaded without a signal or a poll")
	}
	sighup <- syscall.SIGHUP
	testwait.Until(t, 10*time.Second, "the reload on SIGHUP", func() bool { return s.Current().Rules() == 1 })
	if !strings.Contains(logs.String(), "reloading policy on signal") {
		t.Errorf("the signal was not logged:\n%s", logs)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, basePolicy)
	if p, err := policy.Load(good); err != nil || p.Rules() != 3 {
		t.Fatalf("Load = %v, %v", p, err)
	}
	big := filepath.Join(dir, "big.yaml")
	writeFile(t, big, "rules: []\n#"+strings.Repeat("x", policy.MaxFileSize))
	if _, err := policy.Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load of a big file = %v", err)
	}
	if _, err := policy.Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "rules: {}\n")
	if _, err := policy.Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": ") {
		t.Errorf("Load error does not name the file: %v", err)
	}
}

// A check refuses a policy that parses but cannot work here: at start the
// reloader does not open, and at reload the old policy stays in force.
func TestReloaderChecks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	noRotations := func(p *policy.Policy) error {
		if len(p.Rotations()) > 0 {
			return errors.New("rotations need sink credentials")
		}
		return nil
	}
	good := `
rules:
  - name: r
    match: {repository_id: "1"}
    grant: {workspaces: [clws], max_role: WORKSPACE_MEMBER, max_ttl: 10m}
`
	withRotation := good + `
rotations:
  - name: rot
    token_id: cltok
    strategy: rotate
    allow: {repository_id: "1"}
    vault: {mount: secret, path: a/b, field: token}
`
	if err := os.WriteFile(path, []byte(withRotation), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.NewReloader(path, nil, noRotations); err == nil || !strings.Contains(err.Error(), "sink credentials") {
		t.Fatalf("NewReloader accepted a policy its check refuses: %v", err)
	}
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := policy.NewReloader(path, nil, noRotations)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Current().Digest()
	if err := os.WriteFile(path, []byte(withRotation), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil {
		t.Fatal("Reload accepted a policy its check refuses")
	}
	if s.Current().Digest() != before {
		t.Fatal("a refused policy was put in force")
	}
}

// A broken or deleted policy file shows in Health until the file is good
// again, and the recovery is logged, also when the file comes back exactly
// as the policy in force (nothing to reload, but the operator must see
// that the fix took).
func TestReloaderHealth(t *testing.T) {
	s, path, logs := newReloader(t)
	h := s.Health()
	if !h.OK || h.Rules != 3 || h.LastGood.IsZero() || h.Checked.IsZero() {
		t.Fatalf("health after load = %+v", h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, 5*time.Millisecond, nil)

	for _, breakIt := range []struct {
		name string
		do   func()
	}{
		{"invalid", func() { writeFile(t, path, "rules: [{name: r}]\n") }},
		{"deleted", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		lastGood := s.Health().LastGood
		breakIt.do()
		testwait.Until(t, 10*time.Second, breakIt.name+" file to show in Health", func() bool { return !s.Health().OK })
		if h := s.Health(); h.LastGood != lastGood || h.Rules != 3 {
			t.Errorf("%s: health %+v: LastGood or Rules changed while the file is broken", breakIt.name, h)
		}
		before := strings.Count(logs.String(), "policy file good again")
		writeFile(t, path, basePolicy) // the policy in force, unchanged
		testwait.Until(t, 10*time.Second, "the restored file to show in Health", func() bool { return s.Health().OK })
		if got := strings.Count(logs.String(), "policy file good again"); got != before+1 {
			t.Errorf("%s: restoring the file logged %d recovery lines, want 1:\n%s", breakIt.name, got-before, logs)
		}
		if !s.Health().LastGood.After(lastGood) {
			t.Errorf("%s: LastGood did not move on recovery", breakIt.name)
		}
	}

	// A good, different file after a good one is a reload, not a recovery.
	before := strings.Count(logs.String(), "policy file good again")
	writeFile(t, path, otherPolicy)
	testwait.Until(t, 10*time.Second, "the new policy", func() bool { return s.Health().Rules == 1 })
	if got := strings.Count(logs.String(), "policy file good again"); got != before {
		t.Errorf("a reload after a good file logged a recovery")
	}
}

// configMapVolume lays out dir as the kubelet lays out a ConfigMap volume
// (its AtomicWriter): the files live in a hidden timestamped directory,
// "..data" is a symlink to it, and each key is a symlink through "..data".
// It returns a function that publishes a new version the same way: a new
// timestamped directory, a "..data_tmp" link renamed over "..data" (the
// one atomic step), then the old directory removed.
func configMapVolume(t *testing.T, dir, key, content string) (update func(content string)) {
	t.Helper()
	n := 0
	publish := func(content string) string {
		n++
		ts := fmt.Sprintf("..2026_11_27_16_52_%02d.%09d", n, n)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ts, key), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	old := publish(content)
	if err := os.Symlink(filepath.Join("..data", key), filepath.Join(dir, key)); err != nil {
		t.Fatal(err)
	}
	return func(content string) {
		t.Helper()
		next := publish(content)
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
		old = next
	}
}

// TestWatchFollowsAConfigMapSwap: the broker's deployment mounts the policy
// ConfigMap as a directory (not with subPath, which never updates), and the
// kubelet updates it by moving the "..data" link; polling must see that.
func TestWatchFollowsAConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	update := configMapVolume(t, dir, "policy.yaml", basePolicy)
	s, err := policy.NewReloader(filepath.Join(dir, "policy.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Current().Rules() != 3 {
		t.Fatalf("loaded %d rules through the links, want 3", s.Current().Rules())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, 10*time.Millisecond, nil)

	update(otherPolicy)
	testwait.Until(t, 10*time.Second, "the policy of the new ..data", func() bool { return s.Current().Rules() == 1 })
	update(basePolicy)
	testwait.Until(t, 10*time.Second, "the policy of the second swap", func() bool { return s.Current().Rules() == 3 })
}
