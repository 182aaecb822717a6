package astro

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestDelayFollowsRetryAfter: the wait before the next attempt is the
// answer's Retry-After (either form), capped at MaxRetryAfter; without a
// usable one it is the jittered backoff. Computed, not timed.
func TestDelayFollowsRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const base = 100 * time.Millisecond
	backoffRange := [2]time.Duration{base / 2, base}
	tests := []struct {
		name   string
		header string // "" for none
		maxRA  time.Duration
		want   [2]time.Duration // inclusive range
	}{
		{"seconds", "7", time.Minute, [2]time.Duration{7 * time.Second, 7 * time.Second}},
		{"seconds, capped", "120", 150 * time.Millisecond, [2]time.Duration{150 * time.Millisecond, 150 * time.Millisecond}},
		{"HTTP date, 1 s after now", now.Add(time.Second).Format(http.TimeFormat), time.Minute, [2]time.Duration{time.Second, time.Second}},
		{"HTTP date, capped", now.Add(time.Second).Format(http.TimeFormat), 300 * time.Millisecond, [2]time.Duration{300 * time.Millisecond, 300 * time.Millisecond}},
		{"HTTP date in the past: backoff", now.Add(-time.Hour).Format(http.TimeFormat), time.Hour, backoffRange},
		{"garbage: backoff", "soon", time.Hour, backoffRange},
		{"none: backoff", "", time.Hour, backoffRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{BaseURL: "https://api.example.com/v1", Token: "t", BaseDelay: base, MaxDelay: time.Second,
				MaxRetryAfter: tt.maxRA, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}}
			if tt.header != "" {
				resp.Header.Set("Retry-After", tt.header)
			}
			if d := c.delay(1, c.apiError(resp, nil)); d < tt.want[0] || d > tt.want[1] {
				t.Errorf("delay = %v, want %v..%v", d, tt.want[0], tt.want[1])
			}
		})
	}
}

// TestShouldRetry is the policy as a table: class x failure.
func TestShouldRetry(t *testing.T) {
	api := func(code int) error { return &APIError{StatusCode: code} }
	refused := &transportError{err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}
	reset := &transportError{err: &net.OpError{Op: "read", Err: errors.New("connection reset")}}
	timeout := &transportError{err: context.DeadlineExceeded}
	bodyCut := &transportError{err: &net.OpError{Op: "dial"}, sent: true}
	tests := []struct {
		name             string
		err              error
		idempotent, safe bool // want for idempotent, want for unsafe
	}{
		{"429", api(429), true, true},
		{"502", api(502), true, false},
		{"503", api(503), true, false},
		{"504", api(504), true, false},
		{"500", api(500), false, false},
		{"400", api(400), false, false},
		{"401", api(401), false, false},
		{"403", api(403), false, false},
		{"404", api(404), false, false},
		{"connection refused", refused, true, true},
		{"connection reset", reset, true, false},
		{"timeout", timeout, true, false},
		{"body read failed after the status", bodyCut, true, false},
		{"too large", ErrResponseTooLarge, false, false},
		{"malformed", ErrMalformedResponse, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shouldRetry(idempotent, tt.err); got != tt.idempotent {
				t.Errorf("idempotent: %v, want %v", got, tt.idempotent)
			}
			if got := shouldRetry(unsafe, tt.err); got != tt.safe {
				t.Errorf("create/rotate: %v, want %v", got, tt.safe)
			}
		})
	}
}

// FuzzAPIError: any error answer becomes an *APIError with a message and
// the real status, whatever its body.
func FuzzAPIError(f *testing.F) {
	f.Add(400, []byte(`{"statusCode":400,"message":"m","requestId":"r","fieldErrors":[{"code":"c","field":"f","message":"m"}]}`))
	f.Add(502, []byte(`<html>`))
	f.Add(503, []byte(`{"statusCode":"x"}`))
	f.Add(418, []byte(`null`))
	c := &Client{now: time.Now}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 300 || status > 599 {
			t.Skip()
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{}}
		e := c.apiError(resp, body)
		if e.StatusCode != status || e.Message == "" {
			t.Fatalf("apiError = %+v", e)
		}
	})
}
