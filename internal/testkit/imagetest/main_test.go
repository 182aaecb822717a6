package imagetest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/testkit/dockertest"
)

// imageTag names the image the tests build. It is not the published name
// (action.yml's ghcr.io/astro-sts/astro-sts:v1), so that a developer's
// pulled release is never shadowed by a test build.
const imageTag = "astro-sts:imagetest"

// containerLabel marks every container the tests start, so that leftovers
// of a killed run can be found: docker ps -a --filter label=astro-sts-imagetest
const containerLabel = "astro-sts-imagetest"

var (
	engine    *dockertest.Engine
	image     dockertest.Image
	buildTime time.Duration
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	e, err := dockertest.Shared()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagetest:", err)
		return 1
	}
	if e != nil {
		root, err := filepath.Abs(filepath.Join("..", "..", ".."))
		if err != nil {
			fmt.Fprintln(os.Stderr, "imagetest:", err)
			return 1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		start := time.Now()
		img, err := e.Build(ctx, dockertest.BuildOptions{
			Context:   root,
			Tag:       imageTag,
			BuildArgs: map[string]string{"VERSION": "imagetest"},
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "imagetest:", err)
			return 1
		}
		engine, image, buildTime = e, img, time.Since(start)
	}
	return m.Run()
}

// needImage returns the engine and the built image, or skips the test when
// there is no engine (TestMain has already failed the run in CI).
func needImage(t *testing.T) (*dockertest.Engine, dockertest.Image) {
	t.Helper()
	if engine == nil {
		if dockertest.Required() {
			t.Fatal(dockertest.Hint)
		}
		t.Skip(dockertest.Hint)
	}
	return engine, image
}

// containerSettings is deploy/broker-container.yaml: how the broker's
// container runs, shared with the Kubernetes manifests' test.
type containerSettings struct {
	User                          int      `yaml:"user"`
	Group                         int      `yaml:"group"`
	ReadOnlyRootFilesystem        bool     `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation      bool     `yaml:"allowPrivilegeEscalation"`
	DropCapabilities              []string `yaml:"dropCapabilities"`
	PolicyDir                     string   `yaml:"policyDir"`
	PolicyFile                    string   `yaml:"policyFile"`
	OrganizationTokenFile         string   `yaml:"organizationTokenFile"`
	TerminationGracePeriodSeconds int      `yaml:"terminationGracePeriodSeconds"`
	PreStopSleepSeconds           int      `yaml:"preStopSleepSeconds"`
	BrokerDrainSeconds            int      `yaml:"brokerDrainSeconds"`
}

// loadSettings reads deploy/broker-container.yaml strictly: an unknown or
// misspelt key fails the test instead of silently loosening the container.
func loadSettings(t *testing.T) containerSettings {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "..", "deploy", "broker-container.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	var s containerSettings
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("deploy/broker-container.yaml: %v", err)
	}
	if s.User == 0 || s.Group == 0 || s.PolicyDir == "" || s.PolicyFile == "" || s.OrganizationTokenFile == "" || s.TerminationGracePeriodSeconds == 0 {
		t.Fatalf("deploy/broker-container.yaml lacks a setting: %+v", s)
	}
	return s
}

// dockerFlags are the `docker run` flags for the settings' lockdown.
func (s containerSettings) dockerFlags() []string {
	flags := []string{"--user", strconv.Itoa(s.User) + ":" + strconv.Itoa(s.Group)}
	if s.ReadOnlyRootFilesystem {
		flags = append(flags, "--read-only")
	}
	for _, c := range s.DropCapabilities {
		flags = append(flags, "--cap-drop", c)
	}
	if !s.AllowPrivilegeEscalation {
		flags = append(flags, "--security-opt", "no-new-privileges")
	}
	return flags
}

// freeAddr returns a loopback address with a port free at the time of the
// call, for a container on the host network.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// containerName is a unique name with a readable prefix.
func containerName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// removeContainer removes a container the test started, and logs its
// output if the test failed.
func removeContainer(t *testing.T, e *dockertest.Engine, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if t.Failed() {
		cmd := e.Command(ctx, nil, "logs", name)
		out, _ := cmd.CombinedOutput()
		t.Logf("container %s output:\n%s", name, strings.TrimSpace(string(out)))
	}
	if _, err := e.Output(ctx, "rm", "--force", "--volumes", name); err != nil && !strings.Contains(err.Error(), "No such container") {
		t.Errorf("remove container %s: %v", name, err)
	}
}
