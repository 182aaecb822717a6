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
	"sync"
	"syscall"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/redis/go-redis/v9"
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
  ASTRO_STS_REAP_INTERVAL         default 30s; at least 1s, under 24h (Astro's own expiry of the tokens)
  ASTRO_STS_POLICY_RELOAD_INTERVAL  how often the policy file is checked (default 10s; 0: SIGHUP only)
  ASTRO_STS_REPLAY_CACHE_SIZE     ID tokens remembered against replay (default 100000; memory only)
  ASTRO_STS_REDIS_URL             redis:// or rediss:// (TLS), user and password allowed: share replay,
                                  rate limits and the reaper among replicas (default: this process's memory)
  ASTRO_STS_REDIS_PASSWORD_FILE   a file holding the Redis password (instead of one in the URL)
  ASTRO_STS_REDIS_CA_FILE         PEM CAs for a rediss:// server (default: the system's)
  ASTRO_STS_LOG_LEVEL             debug, info (default), warn, error
  ASTRO_STS_ASTRO_TIMEOUT         bound on one Astro call, retries included (default 10s; at least 1s)
  ASTRO_STS_REQUEST_TIMEOUT       deadline of an exchange or revoke (default 15s; longer than the
                                  Astro timeout, shorter than the action's 30s per call)
  ASTRO_STS_SHUTDOWN_GRACE        time in-flight requests get at shutdown (default 20s; longer
                                  than the request timeout; plus twice the Astro timeout, at most 45s:
                                  the exit budget of the manifests, see docs/deploy.md)
  ASTRO_STS_ASTRO_CONCURRENCY     Astro calls in flight at most (default 16)
  ASTRO_STS_REAP_CONCURRENCY      reaper deletes in flight at most, within that (default 8)
  ASTRO_STS_REVOKE_RATE_LIMIT     revokes per repository, COUNT/PERIOD, burst COUNT (default 120/h)
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
	// go-redis reports its pool's failures (a refused dial) through a
	// logger of its own, a process global, in plain text on stderr. Each
	// such failure also fails the request that met it, which the broker
	// logs and counts: keep go-redis's copy in the JSON log, at debug.
	redis.SetLogger(redisLog{logger})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	sighup := make(chan os.Signal, 1)
	signal.Notify(sighup, syscall.SIGHUP)
	defer signal.Stop(sighup)
	return serve(ctx, cfg, ln, logger, sighup)
}

// serve runs the broker on ln until ctx ends, then shuts down gracefully.
// It is separate from runServe so that tests can hand it a listener on a
// free loopback port.
func serve(ctx context.Context, cfg config.Broker, ln net.Listener, logger *slog.Logger, sighup <-chan os.Signal) error {
	// Whatever the exit; once served, Shutdown has closed it already.
	defer ln.Close()
	// ID tokens have one-second resolution (iat): accept requests from the
	// next whole second on, and refuse tokens issued before it (a restart
	// must not reopen replay; see broker/restart.go). Connections made
	// meanwhile wait in the listener's queue.
	started := time.Now().Truncate(time.Second).Add(time.Second)
	httpClient := &http.Client{Timeout: 30 * time.Second, Transport: upstreamTransport()}
	a, err := broker.Assemble(cfg, broker.Deps{
		HTTPClient:   httpClient,
		Logger:       logger,
		UserAgent:    "astro-sts/" + version,
		PolicyChecks: []func(*policy.Policy) error{rotationCheck(cfg.Sinks)},
		Rotator: func(ac rotation.Astro) (broker.Rotator, error) {
			return newRotator(cfg.Sinks, ac, cfg.Astro.OrganizationID, httpClient, logger)
		},
		Started: started,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer a.Close()
	b, policies := a.Server, a.Policies

	srv := b.HTTPServer()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The reaper gives its lease up as it stops: wait for it.
	var reaper sync.WaitGroup
	reaper.Go(func() { b.RunReaper(ctx, cfg.ReapInterval) })
	defer func() { cancel(); reaper.Wait() }()
	go policies.Watch(ctx, cfg.PolicyInterval, sighup)

	select {
	case <-time.After(time.Until(started)):
	case <-ctx.Done():
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("broker listening", "addr", ln.Addr().String(), "issuers", cfg.Issuers,
		"audience", cfg.Audience, "policy", cfg.PolicyFile, "policy_digest", policies.Current().Digest(),
		"store", storeName(cfg))

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	return shutdown(ctx, srv, b, cfg, logger)
}

// shutdown stops the broker: no new connections; in-flight requests get
// the grace period (longer than a request's deadline, so they normally all
// finish); those that do not are cut off; then what they and earlier
// exchanges left to clean up (tokens minted and not delivered, creates
// with an unknown outcome) gets at most one more Astro timeout, twice.
// Whatever is still left then carries a marker the reaper acts on.
func shutdown(ctx context.Context, srv *http.Server, b *broker.Server, cfg config.Broker, logger *slog.Logger) error {
	logger.Info("shutting down", "grace", cfg.ShutdownGrace)
	base := context.WithoutCancel(ctx)
	sctx, scancel := context.WithTimeout(base, cfg.ShutdownGrace)
	defer scancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("shutdown: requests still in flight after the grace period; cutting them off (what they mint is deleted)")
		err = srv.Close()
	}
	dctx, dcancel := context.WithTimeout(base, 2*cfg.AstroTimeout)
	defer dcancel()
	// Drain logs what it leaves behind; the reaper takes it from there.
	_ = b.Drain(dctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	return nil
}

// storeName says in the start-up log which store is in use, without the
// password.
func storeName(cfg config.Broker) string {
	if !cfg.Store.Shared() {
		return "memory"
	}
	return store.RedactURL(cfg.Store.RedisURL.Reveal())
}

// redisLog is go-redis's logger, writing into the broker's at debug.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "message", fmt.Sprintf(format, v...))
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
