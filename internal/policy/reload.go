package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Reloader holds the policy in force for a running broker. Readers call
// [Reloader.Current] once per request and use that *Policy throughout, so a
// request is decided by one policy even if a reload happens meanwhile.
// Reloads parse the file into a new Policy and swap a pointer; a file that
// does not load leaves the current policy in force.
//
// The pointer is a field, not an embedded atomic.Pointer, so that nothing
// outside the package can store a Policy that did not come from the file.
type Reloader struct {
	path   string
	logger *slog.Logger

	cur atomic.Pointer[Policy]

	// checks are further conditions a policy must meet to be put in force,
	// beyond parsing (e.g. that every rotation's sinks have credentials).
	checks []func(*Policy) error

	mu      sync.Mutex // serialises reloads
	lastBad string     // digest (or read error) of the last file that failed, so polling logs it once

	health atomic.Pointer[Health]
}

// Health is the outcome of the reloader's last look at the policy file, for
// the broker's metrics: a file that stopped loading leaves the broker
// serving the last good policy, which is right, but invisible unless
// someone watches this (and the next restart would fail).
type Health struct {
	// OK is false from the time a reload failed (the file is invalid,
	// unreadable or gone) until a good file is seen again.
	OK bool
	// Checked is when the file was last read and found changed (or
	// unreadable), LastGood when a good file was last read.
	Checked, LastGood time.Time
	// Rules is the number of rules of the policy in force.
	Rules int
}

// NewReloader loads the policy at path; it fails if that first load fails, so
// a broker never starts without a policy. logger nil discards. Each check
// must accept a policy before it is put in force, at start and at every
// reload: the broker passes one that refuses a rotation whose sinks have no
// credentials, so that mistake is a load-time error, not a runtime one.
func NewReloader(path string, logger *slog.Logger, checks ...func(*Policy) error) (*Reloader, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p, err := Load(path)
	if err != nil {
		return nil, err
	}
	for _, check := range checks {
		if err := check(p); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	s := &Reloader{path: path, logger: logger, checks: checks}
	s.cur.Store(p)
	now := time.Now()
	s.health.Store(&Health{OK: true, Checked: now, LastGood: now, Rules: p.Rules()})
	logger.Info("policy loaded", "path", path, "digest", p.Digest(), "rules", p.Rules(), "rotations", len(p.rotations))
	return s, nil
}

// Current is the policy in force. It is never nil.
func (s *Reloader) Current() *Policy { return s.cur.Load() }

// Health is the outcome of the last reload or poll that read the file.
func (s *Reloader) Health() Health { return *s.health.Load() }

// failed records a file that did not load. s.mu is held.
func (s *Reloader) failed(bad string) {
	s.lastBad = bad
	h := *s.health.Load()
	h.OK, h.Checked = false, time.Now()
	s.health.Store(&h)
}

// good records a file that loaded (or that is the policy in force again),
// and says so in the log if the previous look had failed: the operator who
// fixed the file sees that it took. s.mu is held.
func (s *Reloader) good(p *Policy) {
	if s.lastBad != "" {
		s.logger.Info("policy file good again", "path", s.path, "digest", p.Digest(), "rules", p.Rules())
	}
	s.lastBad = ""
	now := time.Now()
	s.health.Store(&Health{OK: true, Checked: now, LastGood: now, Rules: p.Rules()})
}

// Reload reads and parses the file again. If it does not load, the current
// policy stays in force, the reason is logged at Error, and returned.
func (s *Reloader) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := readFile(s.path)
	if err != nil {
		s.failed("read: " + err.Error())
		s.logger.Error("policy reload failed; keeping the current policy", "path", s.path, "digest", s.Current().Digest(), "error", err)
		return err
	}
	return s.apply(data)
}

// apply installs the policy in data, or logs why not. s.mu is held.
func (s *Reloader) apply(data []byte) error {
	p, err := Parse(data)
	for _, check := range s.checks {
		if err != nil {
			break
		}
		err = check(p)
	}
	if err != nil {
		s.failed(digest(data))
		s.logger.Error("policy reload failed; keeping the current policy", "path", s.path, "digest", s.Current().Digest(), "bad_digest", s.lastBad, "error", err)
		return fmt.Errorf("%s: %w", s.path, err)
	}
	old := s.cur.Load()
	if old.Digest() == p.Digest() {
		s.good(old)
		s.logger.Info("policy unchanged", "path", s.path, "digest", p.Digest())
		return nil
	}
	s.cur.Store(p)
	s.good(p)
	s.logger.Info("policy reloaded", "path", s.path, "digest", p.Digest(), "previous_digest", old.Digest(), "rules", p.Rules(), "rotations", len(p.rotations))
	return nil
}

// Watch reloads the policy when sighup delivers a signal and, every
// interval, when the file's content hash differs from the policy in force
// (polling: no file-notification dependency, and it works for the
// ConfigMap symlink swaps of Kubernetes). A bad file is logged once, not
// at every poll. interval <= 0 disables polling; a nil sighup disables
// signals. Watch returns when ctx ends.
func (s *Reloader) Watch(ctx context.Context, interval time.Duration, sighup <-chan os.Signal) {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sighup:
			s.logger.Info("reloading policy on signal", "path", s.path)
			_ = s.Reload()
		case <-tick:
			s.poll()
		}
	}
}

// poll reloads if the file changed since the policy in force (and since the
// last bad version seen).
func (s *Reloader) poll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := readFile(s.path)
	if err != nil {
		if bad := "read: " + err.Error(); bad != s.lastBad {
			s.failed(bad)
			s.logger.Error("policy file unreadable; keeping the current policy", "path", s.path, "error", err)
		}
		return
	}
	d := digest(data)
	switch {
	case d == s.lastBad:
	case d == s.Current().Digest():
		// Back to the policy in force after a bad version: nothing to
		// reload, but the file is good again.
		if s.lastBad != "" {
			s.good(s.Current())
		}
	default:
		_ = s.apply(data)
	}
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
