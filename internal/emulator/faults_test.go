package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// A lost answer: the create is done, the client gets a 502.
func TestLoseAnswersProcessesThenFails(t *testing.T) {
	e := start(t, emulator.Config{})
	before := len(e.emu.Tokens())
	e.emu.LoseAnswers(1)
	r := e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{Name: "lost", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember})
	if r.status != http.StatusBadGateway {
		t.Fatalf("create with lost answers: %d %s, want 502", r.status, r.body)
	}
	if eb := r.errorBody(t); eb.StatusCode != http.StatusBadGateway {
		t.Errorf("error body %+v", eb)
	}
	if got := len(e.emu.Tokens()); got != before+1 {
		t.Fatalf("%d tokens after a lost create, want %d: the create must be processed", got, before+1)
	}
	e.emu.LoseAnswers(0)
	if r := e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{Name: "kept", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember}); r.status != http.StatusOK {
		t.Fatalf("create after LoseAnswers(0): %d", r.status)
	}
	e.emu.LoseAnswers(2) // out of range: off
	if r := e.do("GET", e.tokensPath(), e.owner, nil); r.status != http.StatusOK {
		t.Fatalf("list after LoseAnswers(2): %d", r.status)
	}
}

// A late answer: a client that gives up first has still created the token;
// one that waits gets the answer whole.
func TestSlowAnswersProcessBeforeHolding(t *testing.T) {
	e := start(t, emulator.Config{})
	before := len(e.emu.Tokens())
	e.emu.SlowAnswers(3 * time.Second)
	e.createGivingUp("late", 100*time.Millisecond)
	if got := len(e.emu.Tokens()); got != before+1 {
		t.Fatalf("%d tokens after a create whose client gave up, want %d", got, before+1)
	}

	e.emu.SlowAnswers(10 * time.Millisecond)
	r := e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{Name: "waited", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember})
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" || r.header.Get(emulator.RequestIDHeader) == "" {
		t.Fatalf("held answer: %d %v %s", r.status, r.header, r.body)
	}
	var tok astro.Token
	if err := json.Unmarshal(r.body, &tok); err != nil || tok.Token == "" || tok.Name != "waited" {
		t.Fatalf("held answer body %s: %v", r.body, err)
	}
	e.emu.SlowAnswers(0)
}

// Created lists what clients created, lost answers included, and not the
// seeded owner token; without RecordCreates it is nil.
func TestCreated(t *testing.T) {
	e := start(t, emulator.Config{RecordCreates: true})
	if got := e.emu.Created(); len(got) != 0 {
		t.Fatalf("Created before any create = %v", got)
	}
	a := e.create(astro.CreateTokenRequest{Name: "a", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember})
	e.emu.LoseAnswers(1)
	e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{Name: "lost", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember})
	e.emu.LoseAnswers(0)
	if r := e.do("DELETE", e.tokensPath()+"/"+a.ID, e.owner, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d", r.status)
	}
	got := e.emu.Created()
	if len(got) != 2 || got[0] != a.ID {
		t.Errorf("Created = %v, want %s and the lost one", got, a.ID)
	}
	if off := start(t, emulator.Config{}); off.emu.Created() != nil {
		t.Error("Created without RecordCreates is not nil")
	}
}

// A late create: the token is made CreateDelay after the request arrived
// even when the caller hung up long before, it is listed only from then on,
// stamped when it was made; a caller that waits gets it whole.
func TestCreateDelayMakesTheTokenLate(t *testing.T) {
	const delay = 2 * time.Second
	// The real clock: createdAt is compared with when the request was sent.
	e := start(t, emulator.Config{CreateDelay: delay, RecordCreates: true, Now: time.Now})
	sent := e.createGivingUp("late", 50*time.Millisecond)
	// The token is made only when the delay has passed; whatever
	// happened to the connection, it is made then.
	var made astro.Token
	testwait.Until(t, time.Minute, "the late token", func() bool {
		for _, tok := range e.emu.Tokens() {
			if tok.Name == "late" {
				made = tok
				return true
			}
		}
		return false
	})
	if found := time.Now(); found.Sub(sent) < delay {
		t.Errorf("the token was listed %v after the create, before the delay of %v", found.Sub(sent), delay)
	}
	if made.CreatedAt.Before(sent.Add(delay).Truncate(time.Second)) {
		t.Errorf("createdAt %v, want when it was made (no earlier than %v)", made.CreatedAt, sent.Add(delay).Truncate(time.Second))
	}
	if got := e.emu.Created(); len(got) != 1 || got[0] != made.ID {
		t.Errorf("Created = %v, want [%s]", got, made.ID)
	}

	r := e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{Name: "waited", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember})
	if r.status != http.StatusOK || r.header.Get(emulator.RequestIDHeader) == "" {
		t.Fatalf("late create, waited for: %d %v %s", r.status, r.header, r.body)
	}
	var tok astro.Token
	if err := json.Unmarshal(r.body, &tok); err != nil || tok.Token == "" || tok.Name != "waited" {
		t.Fatalf("late answer body %s: %v", r.body, err)
	}
	// Only creates are late.
	if r := e.do("GET", e.tokensPath(), e.owner, nil); r.status != http.StatusOK {
		t.Fatalf("list: %d", r.status)
	}
}

// createGivingUp sends the create of an organization token called name as
// a client that gives up after wait, and fails the test unless that
// deadline ended the call. It returns when the request was sent.
func (e *env) createGivingUp(name string, wait time.Duration) time.Time {
	e.t.Helper()
	body, err := json.Marshal(astro.CreateTokenRequest{Name: name, Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", e.srv.URL+e.tokensPath(), bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.owner)
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	if resp, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			resp.Body.Close()
		}
		e.t.Fatalf("create %q with a client timeout of %v: %v, want a deadline error", name, wait, err)
	}
	return sent
}
