package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/loopback"
)

const emulatorAbout = `Serve an in-memory emulator of the Astro API v1 token and Deployment
endpoints, for tests, demos and the real astro CLI (which uses
http://localhost:8888/v1 for the domain localhost). See docs/emulator.md.

The first line on stdout is one JSON object with what a client needs:
  {"url": "http://127.0.0.1:8888/v1", "organization_id": "...",
   "organization_token": "...", "workspace_ids": [...], "deployment_ids": [...],
   "cluster_id": "..."}
organization_token is an ORGANIZATION_OWNER token that never expires. Each
Workspace has one Dedicated Deployment on the cluster. The emulator then
serves until SIGINT or SIGTERM and shuts down gracefully.

It refuses to listen on anything but loopback unless --allow-remote is given:
whoever reaches it gets an owner token printed on its stdout.`

// emulatorShutdownTimeout bounds the graceful shutdown of the emulator.
const emulatorShutdownTimeout = 10 * time.Second

// emulatorInfo is the first stdout line of the emulator subcommand.
type emulatorInfo struct {
	URL               string   `json:"url"`
	OrganizationID    string   `json:"organization_id"`
	OrganizationToken string   `json:"organization_token"`
	WorkspaceIDs      []string `json:"workspace_ids"`
	DeploymentIDs     []string `json:"deployment_ids"`
	ClusterID         string   `json:"cluster_id"`
}

// runEmulator is the 'emulator' subcommand.
func runEmulator(ctx context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("emulator", emulatorAbout, stderr)
	addr := fs.String("addr", "127.0.0.1:8888", "listen address; port 0 picks a free port")
	workspaces := fs.Int("workspaces", 2, fmt.Sprintf("seeded Workspaces, each with one Deployment (1..%d)", emulator.MaxWorkspaces))
	latency := fs.Duration("latency", 0, "latency added to every request, e.g. 20ms")
	createDelay := fs.Duration("create-delay", 0, "make every token create this late, whether or not the caller still waits, e.g. 31s")
	errorRate := fs.Float64("error-rate", 0, "share of requests (0..1) answered 503 before processing")
	seed := fs.Int64("seed", 0, "seed for ids, the signing key and --error-rate (0: random)")
	allowRemote := fs.Bool("allow-remote", false, "allow a non-loopback --addr")
	debug := fs.Bool("debug", false, "log every request to stderr (never a token value)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *workspaces < 1 || *workspaces > emulator.MaxWorkspaces {
		return usageError("emulator: --workspaces must be 1..%d", emulator.MaxWorkspaces)
	}
	// Written so that NaN, which flag accepts, fails too.
	if !(*errorRate >= 0 && *errorRate <= 1) {
		return usageError("emulator: --error-rate must be within 0..1")
	}
	if *latency < 0 {
		return usageError("emulator: --latency must not be negative")
	}
	if *createDelay < 0 {
		return usageError("emulator: --create-delay must not be negative")
	}
	if !*allowRemote {
		if err := checkLoopback(*addr); err != nil {
			return err
		}
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	srv, emu, err := emulator.StartAt(*addr, emulator.Config{
		Workspaces:  *workspaces,
		Latency:     *latency,
		CreateDelay: *createDelay,
		ErrorRate:   *errorRate,
		Seed:        *seed,
		Logger:      logger,
	})
	if err != nil {
		return err
	}
	line, err := json.Marshal(emulatorInfo{
		URL:               srv.URL,
		OrganizationID:    emu.OrganizationID(),
		OrganizationToken: emu.OrganizationToken(),
		WorkspaceIDs:      emu.WorkspaceIDs(),
		DeploymentIDs:     emu.DeploymentIDs(),
		ClusterID:         emu.ClusterID(),
	})
	if err == nil {
		_, err = fmt.Fprintf(stdout, "%s\n", line)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("emulator: print the connection line: %w", err), srv.Close())
	}
	logger.Info("astro emulator serving", "url", srv.URL, "organization_id", emu.OrganizationID())

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), emulatorShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("emulator: shutdown: %w", err)
	}
	logger.Info("astro emulator stopped")
	return nil
}

// checkLoopback refuses an address that is not a loopback host: an empty
// host or 0.0.0.0 listens on every interface.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError("emulator: --addr %q: %v", addr, err)
	}
	if loopback.IsHost(host) {
		return nil
	}
	return usageError("emulator: --addr %q is not a loopback address; the emulator hands out an owner token to anyone who reaches it (pass --allow-remote to insist)", addr)
}
