package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/secret"
)

// EmulatorSeed is the seed of the demo's Astro API emulator. It makes the
// emulator's ids reproducible, so that the embedded sample policy can name
// the emulator's first Workspace.
const EmulatorSeed = 2026

// stack is the demo's infrastructure, all on 127.0.0.1 at free ports: the
// Astro API emulator, the local OIDC issuer standing in for GitHub, and the
// broker with the sample policy.
type stack struct {
	clock *clock.Clock
	http  *http.Client
	log   *slog.Logger
	// explained keeps the broker's explanations of denials.
	explained explanations

	emuSrv *emulator.Server
	emu    *emulator.Emulator
	iss    *issuer.Issuer

	broker     *broker.Server
	brokerURL  string
	brokerSrv  *http.Server
	brokerDone chan error
	policyPath string
}

// startStack starts the three servers; on error, whatever started is
// stopped again. dir receives the policy file.
func startStack(c *clock.Clock, hc *http.Client, logger *slog.Logger, dir string) (_ *stack, err error) {
	s := &stack{clock: c, http: hc, log: logger, explained: newExplanations()}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()

	s.emuSrv, s.emu, err = emulator.Start(emulator.Config{
		Workspaces: 2,
		Now:        c.Now,
		Seed:       EmulatorSeed,
		Logger:     logger.With("component", "emulator"),
	})
	if err != nil {
		return nil, fmt.Errorf("start the Astro API emulator: %w", err)
	}
	s.iss, err = issuer.Start(issuer.Config{Now: c.Now, Logger: logger.With("component", "issuer")})
	if err != nil {
		return nil, fmt.Errorf("start the OIDC issuer: %w", err)
	}

	s.policyPath = filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(s.policyPath, SamplePolicy(), 0o600); err != nil {
		return nil, fmt.Errorf("write the sample policy: %w", err)
	}
	if err := s.startBroker(); err != nil {
		return nil, err
	}
	return s, nil
}

// startBroker assembles the broker as `astro-sts serve` does
// ([broker.Assemble]), with two differences that the demo needs, which is
// why it does not run the serve command (which lives in package main and
// reads its configuration from the environment): every part takes the
// demo's clock ([broker.Deps]), so the reaper step can move time instead
// of waiting, and the demo holds the [broker.Server] to run one reaper
// pass ([broker.Server.Reap]) when it wants, instead of the background
// reaper on a timer. The HTTP side is the production one: serve's
// [broker.Server.HTTPServer].
func (s *stack) startBroker() (err error) {
	logger := slog.New(slog.NewMultiHandler(s.log.Handler(), s.explained)).With("component", "broker")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("broker: listen: %w", err)
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	// The action asks GitHub for a token whose audience is the broker's URL
	// (its default), so that is the audience the broker requires.
	s.brokerURL = "http://" + ln.Addr().String()

	a, err := broker.Assemble(config.Broker{
		Audience:        s.brokerURL,
		Issuers:         []string{s.iss.URL()},
		PolicyFile:      s.policyPath,
		ReplayCacheSize: 1000,
		Astro: config.Astro{
			APIURL:         s.emuSrv.URL,
			OrganizationID: s.emu.OrganizationID(),
			Token:          secret.Value(s.emu.OrganizationToken()),
		},
	}, broker.Deps{
		Now:        s.clock.Now,
		HTTPClient: s.http,
		Logger:     logger,
		UserAgent:  "astro-sts-demo",
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	s.broker = a.Server
	s.brokerSrv = s.broker.HTTPServer()
	s.brokerDone = make(chan error, 1)
	go func() { s.brokerDone <- s.brokerSrv.Serve(ln) }()
	return nil
}

// close stops whatever was started, the broker first.
func (s *stack) close() error {
	var errs []error
	if s.brokerSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, s.brokerSrv.Shutdown(ctx))
		cancel()
		if err := <-s.brokerDone; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if s.iss != nil {
		errs = append(errs, s.iss.Close())
	}
	if s.emuSrv != nil {
		errs = append(errs, s.emuSrv.Close())
	}
	s.http.CloseIdleConnections()
	return errors.Join(errs...)
}
