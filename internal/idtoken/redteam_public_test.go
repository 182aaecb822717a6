package idtoken_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
)

// TestRedTeamDiscoveryFailureBackOff: a trusted issuer whose discovery
// answers 500 (GitHub having a bad minute) must cost at most one discovery
// fetch per refresh interval, however many anonymous tokens name it, as a
// JWKS failure does. The clock does not move, so every fetch after the
// first is one too many.
func TestRedTeamDiscoveryFailureBackOff(t *testing.T) {
	tests := []struct {
		name  string
		serve func(http.ResponseWriter)
		why   string // in the error: the failure is the one the row is about
	}{
		{"500", func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusInternalServerError) }, "500"},
		{"garbage", func(w http.ResponseWriter) { _, _ = w.Write([]byte("<html>not json")) }, "discovery"},
		{"2 MiB body", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"pad":"` + strings.Repeat("x", 2<<20) + `"}`))
		}, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.Stopped(t0)
			var hits atomic.Int32
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			url := "http://" + ln.Addr().String()
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				hits.Add(1)
				tt.serve(w)
			})}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { _ = srv.Close() })

			v := newVerifier(t, clk.Now, http.DefaultTransport, url)
			const tokens = 50
			for i := range tokens {
				_, err := v.Verify(context.Background(), forged(url, fmt.Sprintf("kid-%d", i)))
				if !errors.Is(err, idtoken.ErrIssuerUnavailable) || !strings.Contains(err.Error(), tt.why) {
					t.Fatalf("token %d: %v, want ErrIssuerUnavailable (%s)", i, err, tt.why)
				}
			}
			if n := hits.Load(); n > 1 {
				t.Errorf("a failing discovery is not backed off: %d tokens within one refresh interval cost %d discovery fetches, want at most 1", tokens, n)
			}
			clk.Advance(10 * time.Second)
			_, _ = v.Verify(context.Background(), forged(url, "after"))
			if n := hits.Load(); n != 2 {
				t.Errorf("discovery fetched %d times after the back-off, want 2", n)
			}
		})
	}
}

// TestRedTeamRandomKidsPinRefresh: an attacker who sends one token with a
// made-up kid every refresh interval keeps the JWKS "recently fetched", so
// a genuine token signed with a key the issuer has just rotated in is
// refused as a bad signature (401, which the action does not retry) until
// the interval runs out, where without the attacker it would have been
// accepted at once.
func TestRedTeamRandomKidsPinRefresh(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	b := startIssuer(t, clk.Now)
	f := startRotating(t, a)
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
	if _, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url})); err != nil {
		t.Fatal(err)
	}
	clk.Advance(11 * time.Second) // past the refresh interval: the next unknown kid may fetch
	_, _ = v.Verify(context.Background(), forged(f.url, "attacker-kid"))
	f.rotate(a, b) // the issuer publishes b and signs with it
	_, err := v.Verify(context.Background(), mint(t, b, issuer.Claims{Issuer: f.url}))
	if errors.Is(err, idtoken.ErrBadSignature) {
		t.Fatalf("one made-up kid just before a key rotation makes genuine tokens of the new key fail as bad signatures for up to the refresh interval: %v", err)
	}
	// Until the period the attacker's fetch started ends, no fetch can
	// tell a new key from a made-up one: the genuine token is told to try
	// again (503, which the action retries after Retry-After), and is
	// accepted once the period is over.
	if err != nil && !errors.Is(err, idtoken.ErrIssuerUnavailable) {
		t.Fatalf("genuine token of the new key: %v, want it accepted or ErrIssuerUnavailable", err)
	}
	// A burst of made-up kids within the period costs no fetch.
	for i := range 20 {
		if _, err := v.Verify(context.Background(), forged(f.url, fmt.Sprintf("burst-%d", i))); !errors.Is(err, idtoken.ErrIssuerUnavailable) {
			t.Fatalf("made-up kid %d within the period: %v, want ErrIssuerUnavailable", i, err)
		}
	}
	if n := f.jwksHit.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (the first, and the attacker's)", n)
	}
	clk.Advance(10 * time.Second)
	if _, err := v.Verify(context.Background(), mint(t, b, issuer.Claims{Issuer: f.url, IssuedAt: clk.Now()})); err != nil {
		t.Fatalf("genuine token of the new key after the period: %v", err)
	}
}
