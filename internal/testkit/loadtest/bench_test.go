package loadtest_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/testkit/loadtest"
)

// The benchmarks measure CPU time per request of each server process (see
// package loadtest), and report it with b.ReportMetric; ns/op, the wall
// time of an iteration, is not what they are about. .ci/bench runs them
// all in one go and prints docs/benchmarks.md's table: the floors, the
// broker and Vault, and their ratios, from the same run.
//
// Metrics (medians over -count runs in the table):
//   cpu-ns/op           a floor's CPU time per operation
//   broker-cpu-ns/op    the broker process's CPU time per request answered
//   emulator-cpu-ns/op  the emulator process's, per request (a token create)
//   vault-cpu-ns/op     Vault's, per login answered
//   broker-req/s, vault-req/s, req/s: answers per second of wall time

func TestMain(m *testing.M) {
	if os.Getenv(floorEnv) == "1" {
		os.Exit(serveFloor())
	}
	code := m.Run()
	if shared != nil {
		shared.close()
	}
	os.Exit(code)
}

var concurrencies = []int{1, 16, 64}

// BenchmarkFloor measures what no exchange can cost less than, in the
// same run as the broker: one RS256 verification through go-jose (the
// yardstick: the broker's CPU per denied exchange at most 3.5
// times it, per allowed exchange at most 6 times), the
// bare net/http round trip of a POST (server side), and the token create
// every allowed exchange makes (client side, and the emulator's side).
func BenchmarkFloor(b *testing.B) {
	s := getStack(b)
	tok, err := s.iss.Mint(allowedClaims())
	if err != nil {
		b.Fatal(err)
	}
	blk, _ := pem.Decode(s.iss.PublicKeyPEM())
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		b.Fatal(err)
	}
	key := pub.(*rsa.PublicKey)
	// rs256-verify is the one check no exchange can skip: the signature of
	// a parsed token. rs256-parse-verify adds go-jose's parse of it.
	b.Run("rs256-verify", func(b *testing.B) {
		jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		cpu0 := loadtest.SelfCPU()
		for range b.N {
			if _, err := jws.Verify(key); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(loadtest.SelfCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	})
	b.Run("rs256-parse-verify", func(b *testing.B) {
		cpu0 := loadtest.SelfCPU()
		for range b.N {
			jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := jws.Verify(key); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(loadtest.SelfCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	})
	for _, c := range concurrencies {
		b.Run(fmt.Sprintf("post/c%d", c), func(b *testing.B) {
			tok, err := s.iss.Mint(deniedClaims())
			if err != nil {
				b.Fatal(err)
			}
			reqs := make([]loadtest.Request, b.N)
			for i := range reqs {
				reqs[i] = exchangeRequest(s.floorURL, tok)
			}
			res := run(b, loadtest.Load{Concurrency: c, Requests: reqs, Watch: []int{s.floor.PID()}}, http.StatusForbidden)
			b.ReportMetric(float64(res.PerRequest(res.CPU[0])), "cpu-ns/op")
			b.ReportMetric(res.Throughput(), "req/s")
		})
	}
	b.Run("create", func(b *testing.B) {
		ac, err := astro.New(astro.Config{BaseURL: s.emu.info.URL, Token: s.emu.info.OrganizationToken, MaxAttempts: 1})
		if err != nil {
			b.Fatal(err)
		}
		days := 1
		req := astro.CreateTokenRequest{
			Name: "astro-sts acme/dags run 987/1", Role: astro.RoleWorkspaceOperator, Scope: astro.ScopeWorkspace,
			EntityID: s.emu.info.WorkspaceIDs[0], TokenExpiryPeriodInDays: &days,
			Description: "astro-sts/v1?deadline=2026-11-23T12%3A30%3A00Z&repository_id=123456&rule=deploy-main&run_attempt=1&run_id=987 " +
				"Short-lived token minted by astro-sts for acme/dags (acme/dags/.github/workflows/deploy.yml@refs/heads/main, run 987 attempt 1); revoked after the run.",
		}
		ctx := context.Background()
		b.ResetTimer()
		emu0, err := loadtest.ProcessCPU(s.emu.PID())
		if err != nil {
			b.Fatal(err)
		}
		cpu0 := loadtest.SelfCPU()
		for range b.N {
			if _, err := ac.CreateToken(ctx, s.emu.info.OrganizationID, req); err != nil {
				b.Fatal(err)
			}
		}
		cpu := loadtest.SelfCPU() - cpu0
		emu1, err := loadtest.ProcessCPU(s.emu.PID())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(emu1-emu0)/float64(b.N), "emulator-cpu-ns/op")
	})
}

// BenchmarkExchange sends the same pre-signed GitHub-shaped tokens to the
// broker's POST /v1/exchange (emulator upstream, no added latency) and to
// Vault's auth/jwt/login (a role bound to the same claims), at each
// concurrency, and measures each server's CPU time per answer and its
// throughput. deny tokens verify but no rule (no role) trusts them.
func BenchmarkExchange(b *testing.B) {
	s := getStack(b)
	for _, outcome := range []string{"deny", "allow"} {
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("%s/c%d", outcome, c), func(b *testing.B) {
				claims, brokerStatus, vaultStatus, audits := deniedClaims(), http.StatusForbidden, s.vaultDeny, &s.brk.denies
				if outcome == "allow" {
					claims, brokerStatus, vaultStatus, audits = allowedClaims(), http.StatusOK, http.StatusOK, &s.brk.allows
				}
				toks := s.mintN(b, claims, b.N)
				reqs := make([]loadtest.Request, b.N)
				for i, tok := range toks {
					reqs[i] = exchangeRequest(s.brk.url, tok)
				}
				audited := audits.Load()
				b.ResetTimer()
				res := run(b, loadtest.Load{Concurrency: c, Requests: reqs, Watch: []int{s.brk.PID(), s.emu.PID()}}, brokerStatus)
				b.StopTimer()
				s.brk.waitAudit(b, audits, audited+int64(b.N))
				b.ReportMetric(float64(res.PerRequest(res.CPU[0])), "broker-cpu-ns/op")
				b.ReportMetric(res.Throughput(), "broker-req/s")
				if outcome == "allow" {
					b.ReportMetric(float64(res.PerRequest(res.CPU[1])), "emulator-cpu-ns/op")
				}
				if s.vault == nil {
					return
				}
				for i, tok := range toks {
					reqs[i] = vaultLogin(s.vault.Addr, tok)
				}
				b.StartTimer()
				res = run(b, loadtest.Load{Concurrency: c, Requests: reqs, Watch: []int{s.vault.PID()}}, vaultStatus)
				b.ReportMetric(float64(res.PerRequest(res.CPU[0])), "vault-cpu-ns/op")
				b.ReportMetric(res.Throughput(), "vault-req/s")
			})
		}
	}
}

// slowLatency is the emulator's added latency in BenchmarkSlowUpstream,
// and slowConcurrency the load: ideally slowConcurrency/slowLatency
// exchanges per second (1,000), if nothing serializes them.
const (
	slowLatency     = 200 * time.Millisecond
	slowConcurrency = 200
)

// BenchmarkSlowUpstream is allowed exchanges against an Astro API that
// takes 200 ms to answer, at concurrency 200: throughput should be close
// to 200 / 0.2 s, which it can only be if no lock is held across the
// upstream call and connections to the upstream are reused.
func BenchmarkSlowUpstream(b *testing.B) {
	s := getStack(b)
	brk := s.slow(b, slowLatency)
	b.Run(fmt.Sprintf("c%d", slowConcurrency), func(b *testing.B) {
		toks := s.mintN(b, allowedClaims(), b.N)
		reqs := make([]loadtest.Request, b.N)
		for i, tok := range toks {
			reqs[i] = exchangeRequest(brk.url, tok)
		}
		audited := brk.allows.Load()
		b.ResetTimer()
		res := run(b, loadtest.Load{Concurrency: slowConcurrency, Requests: reqs, Watch: []int{brk.PID()}}, http.StatusOK)
		b.StopTimer()
		brk.waitAudit(b, &brk.allows, audited+int64(b.N))
		ideal := float64(slowConcurrency) / slowLatency.Seconds()
		b.ReportMetric(res.Throughput(), "req/s")
		b.ReportMetric(res.Throughput()/ideal, "of-ideal")
		b.ReportMetric(float64(res.PerRequest(res.CPU[0])), "broker-cpu-ns/op")
	})
}

// run runs l and fails b unless every request was answered with status.
func run(b *testing.B, l loadtest.Load, status int) loadtest.Result {
	b.Helper()
	res, err := l.Run(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if err := res.Only(status); err != nil {
		b.Fatal(err)
	}
	return res
}
