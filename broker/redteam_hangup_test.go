package broker_test

import (
	"context"
	"fmt"
	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Callers that hang up at random points of their exchange: every one got
// nothing, so every token still alive after the clean-ups settle lives
// until its TTL plus a reaper interval, and every "allow" record among
// them says delivered what was not.
func TestRedTeamCallersHangingUpAtRandom(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(cfg *broker.Config) {
		cfg.AstroTimeout = time.Second
		cfg.RecoveryWindow = 3 * time.Second // the searches of creates cut off by a hang-up end soon
	}})
	u, _ := url.Parse(e.url)
	const n = 200
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		c := mainClaims()
		c.RunID = fmt.Sprint(5000 + i)
		tok := e.mint(c)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Error(err)
				return
			}
			fmt.Fprintf(conn, "POST /v1/exchange HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n", u.Host, tok)
			if i%2 == 1 {
				time.Sleep(time.Duration(rand.Int64N(int64(8 * time.Millisecond)))) // the caller's random hang-up point
			}
			_ = conn.(*net.TCPConn).SetLinger(0)
			_ = conn.Close()
		}()
	}
	wg.Wait()
	// Every exchange has ended, and every clean-up it started has its
	// outcome: the searches for creates cut off by a hang-up end
	// RecoveryWindow after their create. Every caller had sent its request
	// before wg.Wait returned, so a request the server has yet to begin
	// begins long before the first search ends.
	live := func() int { return len(e.emu.Tokens()) - 1 }
	testwait.Until(t, 60*time.Second, "the exchanges and their clean-ups to end", func() bool { return !e.broker.Busy() })
	allowed := 0
	for _, r := range auditRecords(t, e, "exchange") {
		if r["outcome"] == "allow" {
			allowed++
		}
	}
	deleted := 0
	for _, r := range undeliveredOutcomes(t, e) {
		if r["outcome"] == "deleted" {
			deleted++
		}
	}
	allowIDs := map[string]string{} // token id: run id
	for _, r := range auditRecords(t, e, "exchange") {
		if r["outcome"] == "allow" {
			allowIDs[fmt.Sprint(r["token_id"])] = fmt.Sprint(r["run_id"])
		}
	}
	other := map[string]int{}
	for _, r := range auditRecords(t, e, "exchange") {
		other[fmt.Sprint(r["outcome"], " ", r["code"])]++
	}
	aliveAllowed, aliveUnaudited, aliveAt0 := 0, 0, 0
	for _, tk := range e.emu.Tokens() {
		if !strings.Contains(tk.Name, "acme") {
			continue
		}
		if run, ok := allowIDs[tk.ID]; ok {
			aliveAllowed++
			var r int
			fmt.Sscan(run, &r)
			if r%2 == 0 {
				aliveAt0++
			}
		} else {
			aliveUnaudited++
		}
	}
	t.Logf("alive and audited allow among the %d callers who hung up right after sending (no wait): %d", n/2, aliveAt0)
	t.Logf("%d callers hung up: %d deleted as undelivered, %d alive (to TTL + reaper interval): %d audited allow (delivered), %d other; exchange records %v", n, deleted, live(), aliveAllowed, aliveUnaudited, other)
	// The documented bound (docs/reliability.md): "allow" says the answer
	// was handed to the connection, not that it arrived; such a token
	// lives until its deadline and one reaper pass after it.
	left := live()
	e.clock.Advance(30*time.Minute + time.Second) // the longest TTL the test's policy allows
	if _, err := e.broker.Reap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if live() != 0 {
		t.Fatalf("%d of %d tokens of callers who hung up outlived their deadline and a reaper pass (%d alive before it)", live(), n, left)
	}
}
