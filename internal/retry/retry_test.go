package retry_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/retry"
)

// TestBackoff: the wait doubles from Base and is capped at Max, even for
// attempt numbers that would overflow a shift.
func TestBackoff(t *testing.T) {
	p := retry.Policy{Base: time.Second, Max: 10 * time.Second}
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{0, time.Second},
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{4, 8 * time.Second},
		{5, 10 * time.Second},
		{40, 10 * time.Second},
		{63, 10 * time.Second},
		{1 << 30, 10 * time.Second},
	}
	for _, tt := range tests {
		if got := p.Backoff(tt.attempt); got != tt.want {
			t.Errorf("Backoff(%d) = %v, want %v", tt.attempt, got, tt.want)
		}
	}
	if got := (retry.Policy{Base: time.Minute, Max: time.Second}).Backoff(1); got != time.Second {
		t.Errorf("a Base above Max: Backoff(1) = %v, want Max", got)
	}
}

// TestBackoffJitter: with Jitter each wait lies in [d/2, d] and varies.
func TestBackoffJitter(t *testing.T) {
	p := retry.Policy{Base: 100 * time.Millisecond, Max: time.Second, Jitter: true}
	for _, tt := range []struct {
		attempt int
		d       time.Duration // the upper bound
	}{{1, 100 * time.Millisecond}, {3, 400 * time.Millisecond}, {5, time.Second}, {1 << 30, time.Second}} {
		t.Run(fmt.Sprint(tt.attempt), func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 50 {
				d := p.Backoff(tt.attempt)
				if d < tt.d/2 || d > tt.d {
					t.Fatalf("Backoff = %v, want within [%v, %v]", d, tt.d/2, tt.d)
				}
				seen[d] = true
			}
			if len(seen) < 2 {
				t.Error("no jitter")
			}
		})
	}
}

// TestDelay: a server's Retry-After wins when it is longer than the
// backoff, up to MaxRetryAfter (Max when unset); beyond it the wait is
// capped, or the retries stop with StopOnLongRetryAfter.
func TestDelay(t *testing.T) {
	p := retry.Policy{Base: time.Second, Max: 10 * time.Second, MaxRetryAfter: 30 * time.Second}
	strict := p
	strict.StopOnLongRetryAfter = true
	noCap := p
	noCap.MaxRetryAfter = 0
	tests := []struct {
		name       string
		p          retry.Policy
		attempt    int
		retryAfter time.Duration
		want       time.Duration
		wantOK     bool
	}{
		{"no Retry-After", p, 3, 0, 4 * time.Second, true},
		{"shorter than the backoff", p, 3, time.Second, 4 * time.Second, true},
		{"longer than the backoff", p, 1, 5 * time.Second, 5 * time.Second, true},
		{"capped", p, 1, time.Hour, 30 * time.Second, true},
		{"cap below the backoff keeps the backoff", retry.Policy{Base: time.Second, Max: time.Second, MaxRetryAfter: time.Millisecond}, 1, time.Hour, time.Second, true},
		{"unset cap is Max", noCap, 1, time.Hour, 10 * time.Second, true},
		{"strict, within the cap", strict, 1, 30 * time.Second, 30 * time.Second, true},
		{"strict, beyond the cap", strict, 1, 31 * time.Second, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.p.Delay(tt.attempt, tt.retryAfter)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Delay(%d, %v) = %v, %v; want %v, %v", tt.attempt, tt.retryAfter, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// sleeps records the waits of a Policy instead of sleeping.
type sleeps struct{ waits []time.Duration }

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.waits = append(s.waits, d)
	return ctx.Err()
}

var (
	errBusy  = errors.New("busy")
	errFinal = errors.New("final")
)

// TestDo: which errors are retried, how often, after which waits, and what
// comes back. The waits are recorded, not slept.
func TestDo(t *testing.T) {
	tests := []struct {
		name      string
		attempts  int
		results   []error // op's answer per attempt; past the end: nil
		want      error
		wantCalls int
		wantWaits []time.Duration
	}{
		{"success at once", 4, nil, nil, 1, nil},
		{"a final error is not retried", 4, []error{errFinal}, errFinal, 1, nil},
		{"retried until success", 4, []error{retry.Again(errBusy, 0), retry.Again(errBusy, 0)}, nil, 3, []time.Duration{time.Second, 2 * time.Second}},
		{"Retry-After sets the wait", 4, []error{retry.Again(errBusy, 7*time.Second)}, nil, 2, []time.Duration{7 * time.Second}},
		{"a long Retry-After is capped", 4, []error{retry.Again(errBusy, time.Hour)}, nil, 2, []time.Duration{30 * time.Second}},
		{"attempts spent: the last error, unmarked", 3, []error{retry.Again(errBusy, 0), retry.Again(errBusy, 0), retry.Again(errFinal, 0)}, errFinal, 3, []time.Duration{time.Second, 2 * time.Second}},
		{"zero attempts run once", 0, []error{retry.Again(errBusy, 0)}, errBusy, 1, nil},
		{"Again(nil) is success", 4, []error{retry.Again(nil, time.Second)}, nil, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sleeps
			p := retry.Policy{Attempts: tt.attempts, Base: time.Second, Max: 10 * time.Second, MaxRetryAfter: 30 * time.Second, Sleep: s.sleep}
			calls := 0
			err := p.Do(t.Context(), func(attempt int) error {
				calls++
				if attempt != calls {
					t.Errorf("attempt %d on call %d", attempt, calls)
				}
				if attempt > len(tt.results) {
					return nil
				}
				return tt.results[attempt-1]
			})
			if tt.want == nil && err != nil {
				t.Fatalf("Do = %v, want success", err)
			}
			if tt.want != nil && err != tt.want {
				t.Fatalf("Do = %#v, want exactly %v (unmarked)", err, tt.want)
			}
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if d := cmp.Diff(tt.wantWaits, s.waits); d != "" {
				t.Errorf("waits (-want +got):\n%s", d)
			}
		})
	}
}

// TestDoStops: StopOnLongRetryAfter returns the error at once, and a
// context that ends stops the retries with an *Interrupted that matches
// both the last error and the context's.
func TestDoStops(t *testing.T) {
	t.Run("long Retry-After", func(t *testing.T) {
		var s sleeps
		p := retry.Policy{Attempts: 4, Base: time.Second, Max: 10 * time.Second, MaxRetryAfter: time.Minute, StopOnLongRetryAfter: true, Sleep: s.sleep}
		calls := 0
		err := p.Do(t.Context(), func(int) error { calls++; return retry.Again(errBusy, 2*time.Minute) })
		if err != errBusy || calls != 1 || len(s.waits) != 0 {
			t.Errorf("Do = %v after %d calls and waits %v; want busy after 1 call, no wait", err, calls, s.waits)
		}
	})
	t.Run("a mark inside a wrapping error is not honoured", func(t *testing.T) {
		calls := 0
		wrapped := fmt.Errorf("outer: %w", retry.Again(errBusy, 0))
		err := retry.Policy{Attempts: 4}.Do(t.Context(), func(int) error { calls++; return wrapped })
		if err != wrapped || calls != 1 {
			t.Errorf("Do = %v after %d calls, want the wrapping error after 1", err, calls)
		}
	})
	t.Run("context ends during the wait", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		p := retry.Policy{Attempts: 4, Base: time.Second, Max: time.Second, Sleep: func(ctx context.Context, _ time.Duration) error {
			cancel()
			return ctx.Err()
		}}
		calls := 0
		err := p.Do(ctx, func(int) error { calls++; return retry.Again(errBusy, 0) })
		var in *retry.Interrupted
		if !errors.As(err, &in) || !errors.Is(err, errBusy) || !errors.Is(err, context.Canceled) || calls != 1 {
			t.Fatalf("Do = %v after %d calls, want an *Interrupted of busy and context.Canceled after 1", err, calls)
		}
		if want := "busy (while retrying: context canceled)"; err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	})
	t.Run("context already ended", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var s sleeps
		p := retry.Policy{Attempts: 4, Base: time.Second, Max: time.Second, Sleep: s.sleep}
		err := p.Do(ctx, func(int) error { return retry.Again(errBusy, 0) })
		if !errors.Is(err, errBusy) || !errors.Is(err, context.Canceled) || len(s.waits) != 0 {
			t.Errorf("Do = %v with waits %v, want busy and context.Canceled without a wait", err, s.waits)
		}
	})
	t.Run("the default sleep honours the context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := (retry.Policy{}).Wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
		if err := (retry.Policy{}).Wait(t.Context(), 0); err != nil {
			t.Errorf("Wait(0) = %v", err)
		}
	})
}

func TestParseAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"3", 3 * time.Second},
		{"5", 5 * time.Second},
		{" 3 ", 3 * time.Second},
		{"86400", 24 * time.Hour},
		{"86401", 24 * time.Hour},
		{"999999999", 24 * time.Hour},
		{"99999999999999999999999", 24 * time.Hour},
		{"-1", 0},
		{"-3", 0},
		{"1.5", 0},
		{"3s", 0},
		{"soon", 0},
		{"tomorrow", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Second).Format(http.TimeFormat), 0},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), 24 * time.Hour},
		{"Fri, 31 Dec 9999 23:59:59 GMT", 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := retry.ParseAfter(tt.in, now); got != tt.want {
				t.Errorf("ParseAfter(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	// An HTTP date has whole seconds; counted from a clock between two,
	// the wait rounds up, so that it never ends before the named instant.
	at := now.Add(90 * time.Second).Format(http.TimeFormat)
	if got := retry.ParseAfter(at, now.Add(300*time.Millisecond)); got != 90*time.Second {
		t.Errorf("ParseAfter 89.7s ahead = %v, want 90s", got)
	}
}

func FuzzParseAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "-5", "1e9", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 123, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d := retry.ParseAfter(s, now); d < 0 || d > retry.MaxAfter || d%time.Second != 0 {
			t.Fatalf("ParseAfter(%q) = %v", s, d)
		}
	})
}

// A client retries a call that answers 503 twice; the waits are what the
// policy says (recorded here instead of slept).
func ExamplePolicy_Do() {
	p := retry.Policy{Attempts: 4, Base: 250 * time.Millisecond, Max: 5 * time.Second, MaxRetryAfter: 30 * time.Second,
		Sleep: func(_ context.Context, d time.Duration) error {
			fmt.Println("wait", d)
			return nil
		}}
	answers := []int{503, 503, 200}
	err := p.Do(context.Background(), func(attempt int) error {
		status := answers[attempt-1]
		fmt.Println("attempt", attempt, "answered", status)
		if status == 503 {
			// The server asked for 1 s with Retry-After.
			return retry.Again(errors.New("unavailable"), time.Second)
		}
		return nil
	})
	fmt.Println("error:", err)
	// Output:
	// attempt 1 answered 503
	// wait 1s
	// attempt 2 answered 503
	// wait 1s
	// attempt 3 answered 200
	// error: <nil>
}
