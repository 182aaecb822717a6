package imagetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// exchangeResult is the broker's answer to an exchange.
type exchangeResult struct {
	status  int
	tokenID string
	token   string
	err     error
}

// exchange asks the broker for a token with an ID token for claims.
func (w *world) exchange(ctx context.Context, b *brokerContainer, trusted bool, run int) exchangeResult {
	idToken, err := w.iss.Mint(w.claims(b.url, trusted, run))
	if err != nil {
		return exchangeResult{err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+"/v1/exchange", strings.NewReader("{}"))
	if err != nil {
		return exchangeResult{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+idToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return exchangeResult{err: err}
	}
	defer resp.Body.Close()
	var body struct {
		Token   string `json:"token"`
		TokenID string `json:"token_id"`
	}
	if resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(resp.Body).Decode(&body)
	}
	return exchangeResult{status: resp.StatusCode, tokenID: body.TokenID, token: body.Token, err: err}
}

// minted reports whether the emulator holds a token with id.
func (w *world) minted(id string) bool {
	for _, tok := range w.emu.Tokens() {
		if tok.ID == id {
			return true
		}
	}
	return false
}

// TestBrokerLockedDown runs `astro-sts serve` from the image as the
// Kubernetes manifests do (a non-root user, a read-only root file system,
// no capabilities, no privilege escalation, policy and token from
// read-only mounts), and checks that it serves /healthz, /readyz and an
// exchange, and that on SIGTERM it stops within the grace period after
// answering the exchange it had in flight.
func TestBrokerLockedDown(t *testing.T) {
	e, img := needImage(t)
	w := newWorld(t)
	b := w.startBroker(t, e, img)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The engine applied the lockdown.
	s := w.settings
	got, err := e.Output(ctx, "inspect", "--format",
		"{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.CapDrop}} {{json .HostConfig.SecurityOpt}}", b.name)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d:%d true [\"ALL\"] [\"no-new-privileges\"]", s.User, s.Group)
	if got != want {
		t.Errorf("container settings %q, want %q", got, want)
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	if status, body, err := get(ctx, hc, b.url+"/healthz"); err != nil || status != http.StatusOK {
		t.Errorf("GET /healthz = %d %q, %v; want 200", status, body, err)
	}
	// A broker just started is not ready for its first seconds (ID tokens
	// issued meanwhile may have been used before the start); traffic waits
	// for /readyz, as a Service's endpoints do.
	var ready string
	testwait.Until(t, 30*time.Second, "/readyz to answer 200", func() bool {
		status, body, err := get(ctx, hc, b.url+"/readyz")
		ready = fmt.Sprintf("%d %q, %v", status, body, err)
		return err == nil && status == http.StatusOK
	})
	t.Logf("GET /readyz = %s", ready)

	ok := w.exchange(ctx, b, true, 1)
	if ok.err != nil || ok.status != http.StatusOK || ok.token == "" || !w.minted(ok.tokenID) {
		t.Fatalf("exchange: %d, %v, token id %q minted %v; want 200 and a token", ok.status, ok.err, ok.tokenID, w.minted(ok.tokenID))
	}
	if denied := w.exchange(ctx, b, false, 2); denied.err != nil || denied.status != http.StatusForbidden {
		t.Errorf("untrusted exchange: %d, %v; want 403", denied.status, denied.err)
	}

	// SIGTERM while an exchange waits on Astro, as the kubelet sends it:
	// `docker stop` signals, then kills after the grace period.
	arrived, release := w.gate.hold()
	defer release()
	inflight := make(chan exchangeResult, 1)
	go func() { inflight <- w.exchange(ctx, b, true, 3) }()
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("the exchange never reached the emulator")
	}
	stopped := make(chan error, 1)
	go func() {
		_, err := e.Output(ctx, "stop", "--time", strconv.Itoa(s.TerminationGracePeriodSeconds), b.name)
		stopped <- err
	}()
	// The broker has begun to shut down once it refuses new connections;
	// only then does the held exchange go on.
	if err := waitRefused(ctx, strings.TrimPrefix(b.url, "http://")); err != nil {
		t.Fatal(err)
	}
	release()
	r := <-inflight
	if r.err != nil || r.status != http.StatusOK || !w.minted(r.tokenID) {
		t.Errorf("the exchange in flight at SIGTERM: %d, %v, token id %q; want 200 and a token", r.status, r.err, r.tokenID)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	// A broker that had not finished within the grace period would have
	// been killed: exit code 137.
	state, err := e.Output(ctx, "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", b.name)
	if err != nil {
		t.Fatal(err)
	}
	if state != "0 false" {
		t.Errorf("after SIGTERM: exit code and OOM-killed %q, want \"0 false\"", state)
	}

	logs, err := e.Command(ctx, nil, "logs", b.name).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{ok.token, r.token, w.emu.OrganizationToken()} {
		if tok != "" && strings.Contains(string(logs), tok) {
			t.Error("the broker's log shows a token value")
		}
	}
	if diff := cmp.Diff([]bool{true, true}, []bool{
		strings.Contains(string(logs), `"msg":"shutting down"`),
		strings.Contains(string(logs), `"msg":"broker listening"`),
	}); diff != "" {
		t.Errorf("the log lacks the start or the shutdown (-want +got):\n%s\n%s", diff, logs)
	}
}

// waitRefused polls addr until a new connection is refused.
func waitRefused(ctx context.Context, addr string) error {
	var d net.Dialer
	err := testwait.ForContext(ctx, func() bool {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	if err != nil {
		return fmt.Errorf("%s still accepts connections: %w", addr, err)
	}
	return nil
}
