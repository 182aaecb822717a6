// Package dockertest gives tests a real Docker engine: it finds a client
// whose daemon answers, builds the project's image from its Dockerfile, and
// runs containers. It is the Docker twin of internal/testkit/vaulttest.
//
// No image registry needs to be reachable. The Dockerfile's builder stage
// (FROM golang:...) is replaced, when that image is not already present,
// by a stand-in made on the spot from this machine's Go toolchain, a static
// busybox for the RUN lines' shell, and the machine's CA bundle; the
// Dockerfile's `# syntax=` directive, which names a frontend image to pull,
// is dropped from the copy that is built. Everything else is the real
// Dockerfile, built with BuildKit.
//
// The package imports no testing code: each test package decides what a
// missing engine means, with [Shared] and [Required]: skip locally, fail in
// CI.
package dockertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// EnvClient names the variable holding the docker client to use.
const EnvClient = "ASTRO_STS_DOCKER"

// Hint is what to tell a developer whose machine has no Docker engine.
const Hint = "no Docker engine: install docker.io and busybox-static and start dockerd " +
	"(.ci/run does this under CI=true), or set " + EnvClient + " to a docker client with BuildKit"

// Required reports whether the image tests must run rather than skip: true
// in CI (CI=true), where a missing engine is a broken pipeline.
func Required() bool {
	return os.Getenv("CI") == "true"
}

// Engine is a docker client whose daemon answered.
type Engine struct {
	// Client is the docker client's path.
	Client string
	// ServerVersion is the daemon's version, for logs.
	ServerVersion string
}

// Client returns the docker client to use: $ASTRO_STS_DOCKER, else
// /usr/bin/docker (where Debian's docker.io and Docker's own packages put
// it; a newer client elsewhere on the PATH may need the buildx plugin to
// build), else docker on the PATH.
func Client() (string, error) {
	if p := os.Getenv(EnvClient); p != "" {
		return p, nil
	}
	if fi, err := os.Stat("/usr/bin/docker"); err == nil && !fi.IsDir() {
		return "/usr/bin/docker", nil
	}
	return exec.LookPath("docker")
}

// Find returns the engine, or an error that says why there is none: no
// client, or no daemon answering it.
func Find(ctx context.Context) (*Engine, error) {
	client, err := Client()
	if err != nil {
		return nil, fmt.Errorf("dockertest: no docker client: %w", err)
	}
	e := &Engine{Client: client}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := e.Output(ctx, "version", "--format", "{{.Server.Version}}")
	if err != nil {
		return nil, fmt.Errorf("dockertest: the daemon does not answer %s: %w", client, err)
	}
	e.ServerVersion = v
	return e, nil
}

// Shared returns the engine a test package shares (from its TestMain).
// Without one it returns nil and no error, so the package's tests can skip
// with [Hint]; when [Required] (CI), a missing engine is an error instead,
// so CI never passes by skipping them.
func Shared() (*Engine, error) {
	e, err := Find(context.Background())
	if err != nil {
		if Required() {
			return nil, fmt.Errorf("CI=true but %s (%w)", Hint, err)
		}
		return nil, nil
	}
	return e, nil
}

// Command is the docker client with args. Its environment is this
// process's, plus DOCKER_BUILDKIT=1, plus env (KEY=VALUE; later entries
// win): a `docker run -e KEY` takes KEY's value from there, as the GitHub
// runner passes its variables.
func (e *Engine) Command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.Client, args...)
	cmd.Env = append(append(os.Environ(), "DOCKER_BUILDKIT=1"), env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Output runs the client with args and returns its stdout, trimmed; an
// error carries its stderr.
func (e *Engine) Output(ctx context.Context, args ...string) (string, error) {
	cmd := e.Command(ctx, nil, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Image is a built image.
type Image struct {
	// Ref is the tag it was built with.
	Ref string
	// ID is its content-addressed id.
	ID string
	// Size is what `docker image inspect` reports: the bytes of all its
	// layers, uncompressed.
	Size int64
}

// BuildOptions configure [Engine.Build].
type BuildOptions struct {
	// Context is the build context directory (the repository root).
	Context string
	// Dockerfile defaults to Context/Dockerfile.
	Dockerfile string
	// Tag names the image.
	Tag string
	// BuildArgs are passed as --build-arg.
	BuildArgs map[string]string
	// Log receives the builder's output; nil discards it.
	Log io.Writer
}

// Build builds the Dockerfile with BuildKit and --network host (so that a
// `go mod download` in it reaches the module proxy through this machine),
// after making sure every image it starts from is present: a missing
// golang image gets a stand-in ([Engine.StandIn]); any other missing image
// is an error, since nothing is pulled.
func (e *Engine) Build(ctx context.Context, opts BuildOptions) (Image, error) {
	if opts.Dockerfile == "" {
		opts.Dockerfile = filepath.Join(opts.Context, "Dockerfile")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	src, err := os.ReadFile(opts.Dockerfile)
	if err != nil {
		return Image{}, fmt.Errorf("dockertest: %w", err)
	}
	bases, err := BaseImages(src)
	if err != nil {
		return Image{}, err
	}
	for _, ref := range bases {
		if err := e.ensureBase(ctx, ref, opts.Log); err != nil {
			return Image{}, err
		}
	}

	dir, err := os.MkdirTemp("", "dockertest-build-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(dir)
	dockerfile := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(dockerfile, DropSyntaxDirective(src), 0o600); err != nil {
		return Image{}, err
	}
	args := []string{"build", "--progress", "plain", "--network", "host", "-f", dockerfile, "-t", opts.Tag}
	for k, v := range opts.BuildArgs {
		args = append(args, "--build-arg", k+"="+v)
	}
	args = append(args, opts.Context)
	cmd := e.Command(ctx, nil, args...)
	var tail tailBuffer
	cmd.Stdout = io.MultiWriter(opts.Log, &tail)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return Image{}, fmt.Errorf("dockertest: docker build: %w; last output:\n%s", err, tail.String())
	}
	return e.Inspect(ctx, opts.Tag)
}

// Inspect returns the id and size of a local image.
func (e *Engine) Inspect(ctx context.Context, ref string) (Image, error) {
	out, err := e.Output(ctx, "image", "inspect", "--format", "{{.Id}} {{.Size}}", ref)
	if err != nil {
		return Image{}, err
	}
	id, size, ok := strings.Cut(out, " ")
	n, perr := strconv.ParseInt(size, 10, 64)
	if !ok || perr != nil {
		return Image{}, fmt.Errorf("dockertest: unexpected inspect output %q", out)
	}
	return Image{Ref: ref, ID: id, Size: n}, nil
}

// ensureBase makes sure ref is present: as it is, or as a current
// stand-in.
func (e *Engine) ensureBase(ctx context.Context, ref string, log io.Writer) error {
	label, present := e.label(ctx, ref, standInLabel)
	if !strings.HasPrefix(ref, "golang:") {
		if !present {
			return fmt.Errorf("dockertest: the Dockerfile starts from %s, which is not present here, and only golang images have a stand-in", ref)
		}
		return nil
	}
	if present && label == "" {
		fmt.Fprintf(log, "dockertest: using the local %s\n", ref)
		return nil // the real image, pulled earlier
	}
	return e.StandIn(ctx, ref, label, log)
}

// label returns an image's label and whether the image is present.
func (e *Engine) label(ctx context.Context, ref, key string) (string, bool) {
	out, err := e.Output(ctx, "image", "inspect", "--format", "{{index .Config.Labels "+strconv.Quote(key)+"}}", ref)
	if err != nil {
		return "", false
	}
	if out == "<no value>" {
		out = ""
	}
	return out, true
}

// tailBuffer keeps the last 8 KiB written, for an error message.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 8<<10; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// errNoFrom reports a Dockerfile without a FROM line.
var errNoFrom = errors.New("dockertest: the Dockerfile has no FROM line")
