package idtoken_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
)

// rotatingIssuer is an issuer front whose JWKS is the union of the keys of
// the real issuers it is given, so a test can rotate keys (publish b
// beside a, then withdraw a). Its tokens are minted by the real issuers
// with iss set to the front's URL. A test can hold its answers (each held
// request reports on entered and waits for a value on release) or slow
// them down.
type rotatingIssuer struct {
	url      string
	keys     atomic.Pointer[[]*issuer.Issuer]
	editKey  func(map[string]any) // changes each published key, when set
	holdDisc atomic.Bool
	holdJWKS atomic.Bool
	delay    atomic.Int64 // nanoseconds each JWKS answer takes
	entered  chan string
	release  chan struct{}
	discHit  atomic.Int32
	jwksHit  atomic.Int32
}

func startRotating(t *testing.T, keys ...*issuer.Issuer) *rotatingIssuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &rotatingIssuer{url: "http://" + ln.Addr().String(), entered: make(chan string), release: make(chan struct{})}
	f.rotate(keys...)
	hold := func(h *atomic.Bool, what string) {
		if h.Load() {
			f.entered <- what
			<-f.release
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		f.discHit.Add(1)
		hold(&f.holdDisc, "discovery")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": f.url, "jwks_uri": f.url + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		f.jwksHit.Add(1)
		hold(&f.holdJWKS, "jwks")
		time.Sleep(time.Duration(f.delay.Load())) // an issuer that answers slowly
		var all []map[string]any
		for _, iss := range *f.keys.Load() {
			resp, err := http.Get(iss.URL() + "/.well-known/jwks")
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			var set struct{ Keys []map[string]any }
			err = json.NewDecoder(resp.Body).Decode(&set)
			resp.Body.Close()
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			all = append(all, set.Keys...)
		}
		if f.editKey != nil {
			for _, k := range all {
				f.editKey(k)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": all})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

// rotate publishes exactly the keys of these issuers from the next fetch.
func (f *rotatingIssuer) rotate(keys ...*issuer.Issuer) { f.keys.Store(&keys) }

// forged is what anyone can send: the trusted iss, a made-up kid, no
// signature worth the name. It is refused, but it makes the verifier look
// for the kid.
func forged(iss, kid string) string {
	return b64(map[string]any{"alg": "RS256", "kid": kid, "typ": "JWT"}) + "." + b64(map[string]any{"iss": iss}) + ".c2ln"
}

// hangUp sends a forged token with a made-up kid, waits until the fetch it
// triggers is at the issuer (what), hangs up, and returns what the caller
// got.
func hangUp(t *testing.T, v *idtoken.Verifier, f *rotatingIssuer, what, kid string) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, forged(f.url, kid))
		res <- err
	}()
	if got := <-f.entered; got != what {
		t.Fatalf("the forged token reached %s, want %s", got, what)
	}
	cancel()
	return <-res
}

// ownError reports whether a caller who gave up got its own context's
// error, and not an issuer failure (a 503) meant for everyone.
func ownError(err, ctxErr error) bool {
	return errors.Is(err, ctxErr) && !errors.Is(err, idtoken.ErrIssuerUnavailable)
}

// TestHangUpDuringRotation: a caller that hangs up while the JWKS fetch it
// triggered is on its way does not stop the fetch, and the fetch does not
// count as a failure: the next token, of the key just rotated in, is
// accepted.
func TestHangUpDuringRotation(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	b := startIssuer(t, clk.Now)
	f := startRotating(t, a)
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
	if _, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url})); err != nil {
		t.Fatal(err)
	}

	f.rotate(a, b)
	clk.Advance(11 * time.Second)
	f.holdJWKS.Store(true)
	if err := hangUp(t, v, f, "jwks", "made-up"); !ownError(err, context.Canceled) {
		t.Errorf("the caller who hung up got %v, want its own context.Canceled", err)
	}
	f.release <- struct{}{}
	f.holdJWKS.Store(false)

	if _, err := v.Verify(context.Background(), mint(t, b, issuer.Claims{Issuer: f.url})); err != nil {
		t.Fatalf("token of the new key after a caller hung up: %v", err)
	}
	if n := f.jwksHit.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (the first, and the one the caller left)", n)
	}
}

// TestHangUpSustained: the attack sent once per back-off period for an
// hour of fake time, across a key rotation and past the hour after which
// cached keys are fetched again, refuses no genuine token, and costs one
// JWKS fetch per period.
func TestHangUpSustained(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	b := startIssuer(t, clk.Now)
	f := startRotating(t, a)
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
	if _, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url})); err != nil {
		t.Fatal(err)
	}

	const periods = 3600 / 10
	// Failures of each kind, the first of each shown.
	var wrongHangUp, backOff, refused int
	report := func(n *int, format string, args ...any) {
		t.Helper()
		if *n++; *n == 1 {
			t.Errorf(format, args...)
		}
	}
	for i := range periods {
		signer := a
		switch {
		case i == periods/3:
			f.rotate(a, b) // b is published...
		case i > periods/3:
			signer = b // ...and used from the next period
		}
		if i == 2*periods/3 {
			f.rotate(b) // a is withdrawn
		}
		clk.Advance(10 * time.Second)
		f.holdJWKS.Store(true)
		if err := hangUp(t, v, f, "jwks", fmt.Sprintf("made-up-%d", i)); !ownError(err, context.Canceled) {
			report(&wrongHangUp, "period %d: the caller who hung up got %v, want its own context.Canceled", i, err)
		}
		f.release <- struct{}{}
		f.holdJWKS.Store(false)
		// Another made-up kid waits for the fetch the attacker left, if
		// it is still on its way, and finds the kid unknown (or, the fetch
		// done, is told to come back after the period): no back-off was
		// recorded, no fetch failed. The next period's attack then starts
		// a fetch of its own.
		if _, err := v.Verify(context.Background(), forged(f.url, "after")); !errors.Is(err, idtoken.ErrBadSignature) &&
			(!errors.Is(err, idtoken.ErrIssuerUnavailable) || !strings.Contains(err.Error(), "next fetch is allowed")) {
			report(&backOff, "period %d: made-up kid after the hang-up: %v, want an unknown kid", i, err)
		}
		if _, err := v.Verify(context.Background(), mint(t, signer, issuer.Claims{Issuer: f.url})); err != nil {
			report(&refused, "period %d: genuine token refused: %v", i, err)
		}
	}
	if wrongHangUp+backOff+refused != 0 {
		t.Errorf("in %d periods: %d callers who hung up got an issuer failure, %d back-offs, %d genuine tokens refused; want 0, 0, 0", periods, wrongHangUp, backOff, refused)
	}
	if n := f.jwksHit.Load(); n != periods+1 {
		t.Errorf("JWKS fetched %d times in %d periods, want %d (one per period, and the first)", n, periods, periods+1)
	}
}

// TestHangUpDuringDiscovery: discovery has the same shape. The first
// caller of an issuer hangs up while discovery is on its way; a genuine
// caller already waiting for it gets its answer, and discovery runs once.
func TestHangUpDuringDiscovery(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	f := startRotating(t, a)
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
	f.holdDisc.Store(true)

	ctx, cancel := context.WithCancel(context.Background())
	attack := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, forged(f.url, "made-up"))
		attack <- err
	}()
	if got := <-f.entered; got != "discovery" {
		t.Fatalf("the forged token reached %s, want discovery", got)
	}
	genuine := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url}))
		genuine <- err
	}()
	cancel()
	if err := <-attack; !ownError(err, context.Canceled) {
		t.Errorf("the caller who hung up got %v, want its own context.Canceled", err)
	}
	f.release <- struct{}{}
	if err := <-genuine; err != nil {
		t.Fatalf("genuine token waiting on the same discovery: %v", err)
	}
	if n := f.discHit.Load(); n != 1 {
		t.Errorf("discovery fetched %d times, want 1", n)
	}
}

// TestRandomKidBurst: bursts of tokens with random kids, half of their
// callers hanging up at once, cost at most one JWKS fetch per back-off
// period.
func TestRandomKidBurst(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	f := startRotating(t, a)
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
	if _, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url})); err != nil {
		t.Fatal(err)
	}
	const periods, burst = 20, 30
	for p := range periods {
		var wg sync.WaitGroup
		for i := range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if i%2 == 0 {
					cancel()
				}
				_, _ = v.Verify(ctx, forged(f.url, fmt.Sprintf("random-%d-%d", p, i)))
			}()
		}
		wg.Wait()
		// Each period ends with a genuine token, which waits for any fetch
		// still on its way.
		if _, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url})); err != nil {
			t.Fatalf("period %d: %v", p, err)
		}
		clk.Advance(5 * time.Second)
	}
	// 20 periods of 5 s are 10 back-off periods of 10 s.
	if n := f.jwksHit.Load() - 1; n > periods/2 {
		t.Errorf("%d JWKS fetches for %d random kids in %d back-off periods, want at most %d", n, periods*burst, periods/2, periods/2)
	}
}

// TestHangUpOverHTTP reproduces the attack with real time: the issuer's
// JWKS answers in 150 ms, the attacker hangs up after 30 ms, and a genuine
// token of the key just rotated in comes right after. It must be accepted.
func TestHangUpOverHTTP(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	b := startIssuer(t, clk.Now)
	f := startRotating(t, a)
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
	if _, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{Issuer: f.url})); err != nil {
		t.Fatal(err)
	}
	f.rotate(a, b)
	f.delay.Store(int64(150 * time.Millisecond))
	clk.Advance(11 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := v.Verify(ctx, forged(f.url, "made-up"))
	if !ownError(err, context.DeadlineExceeded) {
		t.Errorf("the caller who hung up got %v, want its own context.DeadlineExceeded", err)
	}
	if _, err := v.Verify(context.Background(), mint(t, b, issuer.Claims{Issuer: f.url})); err != nil {
		t.Errorf("token of the new key right after the hang-up: %v", err)
	}
	clk.Advance(9 * time.Second)
	if _, err := v.Verify(context.Background(), mint(t, b, issuer.Claims{Issuer: f.url})); err != nil {
		t.Fatalf("token of the new key 9 s later: %v", err)
	}
}
