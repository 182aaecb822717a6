package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/prometheus/client_golang/prometheus"
)

const serveAbout = `Run the broker: verify GitHub Actions OIDC ID tokens, decide with the trust
policy, mint short-lived Astro API tokens, revoke them, and reap the ones
whose post step never ran.

Configuration comes from the environment (every problem is reported at once):
  ASTRO_STS_ADDR                  listen address (default :8080)
  ASTRO_STS_AUDIENCE              required: the audience tokens must carry
  ASTRO_STS_ISSUERS               comma list (default https://token.actions.githubusercontent.com)
  ASTRO_STS_POLICY_FILE           required: the trust policy (YAML); reloaded on SIGHUP and on change
  ASTRO_API_URL                   default https://api.astronomer.io/v1
  ASTRO_ORGANIZATION_ID           required
  ASTRO_ORGANIZATION_TOKEN        an Organization Owner token, or
  ASTRO_ORGANIZATION_TOKEN_FILE   a file holding it
  ASTRO_STS_REAP_INTERVAL         default 30s
  ASTRO_STS_LOG_LEVEL             debug, info (default), warn, error
  plus the Vault and GitHub settings of docs/sinks.md when the policy has rotations.`

func runServe(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveAbout, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.LoadBroker(env)
	if err != nil {
		return fmt.Errorf("serve: invalid configuration:\n%w", err)
	}
	level, _ := config.ParseLevel(cfg.LogLevel)
	logger := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	sighup := make(chan os.Signal, 1)
	signal.Notify(sighup, syscall.SIGHUP)
	defer signal.Stop(sighup)
	return serve(ctx, cfg, env, ln, logger, sighup)
}

// serve runs the broker on ln until ctx ends, then shuts down gracefully.
// It is separate from runServe so that tests and the demo can hand it a
// listener on a free loopback port.
func serve(ctx context.Context, cfg config.Broker, env map[string]string, ln net.Listener, logger *slog.Logger, sighup <-chan os.Signal) error {
	sinkCfg, err := sink.LoadConfig(env)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: sink configuration:\n%w", err)
	}
	store, err := policy.NewStore(cfg.PolicyFile, logger, rotationCheck(sinkCfg))
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: policy: %w", err)
	}
	httpClient := &http.Client{Timeout: 30 * time.Second, Transport: upstreamTransport()}

	reg := prometheus.NewRegistry()
	metrics, err := broker.NewMetrics(reg)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: %w", err)
	}
	ac, err := astro.New(astro.Config{
		BaseURL:    cfg.AstroAPIURL,
		Token:      cfg.OrganizationToken,
		HTTPClient: httpClient,
		UserAgent:  "astro-sts/" + version,
		Observe:    metrics.ObserveUpstream,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: astro client: %w", err)
	}
	verifier, err := idtoken.New(idtoken.Config{
		Issuers:    cfg.Issuers,
		Audience:   cfg.Audience,
		HTTPClient: httpClient,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: %w", err)
	}
	rotator, err := newRotator(sinkCfg, ac, cfg.OrganizationID, httpClient, logger)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: rotation: %w", err)
	}
	b, err := broker.New(broker.Config{
		Astro:          ac,
		OrganizationID: cfg.OrganizationID,
		Verifier:       verifier,
		Replay:         idtoken.NewReplayGuard(cfg.ReplayCacheSize, time.Now),
		Policies:       store,
		Rotator:        rotator,
		Logger:         logger,
		Registry:       reg,
		Metrics:        metrics,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: %w", err)
	}

	srv := &http.Server{
		Handler:           b.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// A rotation waits out sinks' Retry-After and backoff before it
		// answers; every other handler answers in seconds.
		WriteTimeout:   5 * time.Minute,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go b.RunReaper(ctx, cfg.ReapInterval)
	go store.Watch(ctx, cfg.PolicyInterval, sighup)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("broker listening", "addr", ln.Addr().String(), "issuers", cfg.Issuers,
		"audience", cfg.Audience, "policy", cfg.PolicyFile, "policy_digest", store.Current().Digest())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	return nil
}

// maxIdleUpstreamConns is how many idle connections the broker keeps to each
// host it calls (Astro, above all): as many as it has exchanges in flight
// at once, up to this bound. net/http's default keeps 2, so that 16
// concurrent exchanges dialled Astro anew for most of their token creates,
// and a slow Astro at 200 concurrent exchanges would have cost a
// connection (and a TIME_WAIT port) per exchange (docs/benchmarks.md).
const maxIdleUpstreamConns = 256

// upstreamTransport is net/http's default transport (proxy from the
// environment, dial and TLS timeouts, HTTP/2) keeping more idle
// connections.
func upstreamTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = maxIdleUpstreamConns
	tr.MaxIdleConns = 2 * maxIdleUpstreamConns
	return tr
}
