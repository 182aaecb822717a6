package imagetest_test

// The GitHub runner's side of a container action, as actions/runner runs
// one (src/Runner.Worker/Handlers/ContainerActionHandler.cs,
// Container/DockerCommandManager.cs DockerRun, Container/ContainerInfo.cs,
// FileCommandManager.cs):
//
//   - per job, under RUNNER_TEMP: _github_home (HOME), _github_workflow
//     (event.json) and _runner_file_commands; the workspace elsewhere;
//   - per step, new file-command files in _runner_file_commands named
//     set_env_, set_output_, save_state_, step_summary_ and add_path_
//     followed by one fresh GUID;
//   - every variable passed with its value translated from the host path
//     to the container path (the mounts below), and given to docker run as
//     "-e NAME" only: the value travels in the docker client's environment;
//   - docker run --name IMAGE_xxxxxx --label LABEL --workdir
//     /github/workspace --rm -e ... -e GITHUB_ACTIONS=true -e CI=true
//     --entrypoint ENTRYPOINT [--network NET] -v /var/run/docker.sock:...
//     -v home:/github/home -v workflow:/github/workflow -v
//     file_commands:/github/file_commands -v workspace:/github/workspace
//     IMAGE, with the main step's entrypoint or the post-entrypoint from
//     action.yml and no arguments (action.yml has no args);
//   - after the main step, GITHUB_ENV's exports join the environment of
//     the later steps and GITHUB_STATE's values reach the post step as
//     STATE_<name>.
//
// Two differences, both for this test's sake: the network is the host's
// (the broker and issuer listen on 127.0.0.1 only), where a runner passes
// its job network if it made one; and the label is a fixed word (the
// runner's is a hash of its configuration) so that leftovers can be found.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/runner"
	"github.com/astro-sts/astro-sts/internal/testkit/dockertest"
)

// actionManifest is the part of action.yml the runner reads to run a
// container action.
type actionManifest struct {
	Inputs map[string]struct {
		Default string `yaml:"default"`
	} `yaml:"inputs"`
	Runs struct {
		Using          string   `yaml:"using"`
		Image          string   `yaml:"image"`
		Entrypoint     string   `yaml:"entrypoint"`
		PostEntrypoint string   `yaml:"post-entrypoint"`
		PostIf         string   `yaml:"post-if"`
		Args           []string `yaml:"args"`
	} `yaml:"runs"`
}

func loadActionManifest(t *testing.T) actionManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "action.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var m actionManifest
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("action.yml: %v", err)
	}
	if m.Runs.Using != "docker" || !strings.HasPrefix(m.Runs.Image, "docker://") || m.Runs.Entrypoint == "" || m.Runs.PostEntrypoint == "" {
		t.Fatalf("action.yml runs = %+v, want a docker action with a prebuilt image, an entrypoint and a post-entrypoint", m.Runs)
	}
	if len(m.Runs.Args) != 0 {
		t.Fatalf("action.yml has args %q, which this runner does not pass", m.Runs.Args)
	}
	return m
}

// runnerJob is one job on a runner: its directories and environment.
type runnerJob struct {
	manifest actionManifest
	image    string // what runs in place of the manifest's image

	temp, home, workflow, fileCommands, workspace string

	// env is the step environment before the file-command paths: the
	// job's GITHUB_*, RUNNER_* and ACTIONS_* variables and the inputs.
	env map[string]string
	// exported and state are what the main step left for later steps.
	exported, state map[string]string
}

// newRunnerJob lays out a job's directories under a temporary "work"
// directory and its environment: the inputs given in with, every other
// input of action.yml at its default, and the job variables in jobEnv.
func newRunnerJob(t *testing.T, m actionManifest, image string, with, jobEnv map[string]string) *runnerJob {
	t.Helper()
	work := filepath.Join(t.TempDir(), "work")
	j := &runnerJob{
		manifest:     m,
		image:        image,
		temp:         filepath.Join(work, "_temp"),
		workspace:    filepath.Join(work, "dags", "dags"),
		env:          map[string]string{},
		exported:     map[string]string{},
		state:        map[string]string{},
		home:         filepath.Join(work, "_temp", "_github_home"),
		workflow:     filepath.Join(work, "_temp", "_github_workflow"),
		fileCommands: filepath.Join(work, "_temp", "_runner_file_commands"),
	}
	for _, d := range []string{j.home, j.workflow, j.fileCommands, j.workspace} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(j.workflow, "event.json"), []byte(`{"ref":"refs/heads/main"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, input := range m.Inputs {
		j.env[runner.InputEnvName(name)] = input.Default
	}
	for name, v := range with {
		if _, ok := m.Inputs[name]; !ok {
			t.Fatalf("input %q is not declared in action.yml", name)
		}
		j.env[runner.InputEnvName(name)] = v
	}
	for k, v := range map[string]string{
		"HOME":              j.home,
		"GITHUB_WORKSPACE":  j.workspace,
		"GITHUB_EVENT_PATH": filepath.Join(j.workflow, "event.json"),
		"RUNNER_TEMP":       j.temp,
		"RUNNER_OS":         "Linux",
		"GITHUB_ACTION":     "__astro-sts_astro-sts",
		"GITHUB_EVENT_NAME": "push",
		"GITHUB_REF":        "refs/heads/main",
	} {
		j.env[k] = v
	}
	for k, v := range jobEnv {
		j.env[k] = v
	}
	return j
}

// stepResult is what one step printed and how it ended, and what it wrote
// to its file-command files.
type stepResult struct {
	stdout, stderr string
	code           int
	env, output    map[string]string
	state          map[string]string
	summary        string
}

// translate maps a host path under one of the mounts to the container's,
// as ContainerInfo.TranslateToContainerPath does; other values pass as
// they are.
func (j *runnerJob) translate(v string) string {
	for _, m := range []struct{ host, ctr string }{
		{j.home, "/github/home"}, {j.workflow, "/github/workflow"},
		{j.fileCommands, "/github/file_commands"}, {j.workspace, "/github/workspace"},
	} {
		if v == m.host {
			return m.ctr
		}
		if strings.HasPrefix(v, m.host+"/") {
			return m.ctr + strings.TrimPrefix(v, m.host)
		}
	}
	return v
}

// dockerRun returns the docker run arguments and the client's environment
// for one step, in the runner's order.
func (j *runnerJob) dockerRun(entrypoint string, env map[string]string) (args, clientEnv []string) {
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(j.image, "") + "_" + hex.EncodeToString(suffix)
	args = []string{"run", "--name", name, "--label", containerLabel, "--workdir", "/github/workspace", "--rm"}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-e", k)
		clientEnv = append(clientEnv, k+"="+j.translate(env[k]))
	}
	args = append(args, "-e", "GITHUB_ACTIONS=true")
	if _, ok := env["CI"]; !ok {
		args = append(args, "-e", "CI=true")
	}
	args = append(args, "--entrypoint", entrypoint, "--network", "host")
	mounts := []struct{ host, ctr string }{
		{"/var/run/docker.sock", "/var/run/docker.sock"},
		{j.home, "/github/home"}, {j.workflow, "/github/workflow"},
		{j.fileCommands, "/github/file_commands"}, {j.workspace, "/github/workspace"},
	}
	if _, err := os.Stat(mounts[0].host); err != nil {
		// An engine reached through DOCKER_HOST: bind-mounting a missing
		// socket would create a directory in its place.
		mounts = mounts[1:]
	}
	for _, v := range mounts {
		args = append(args, "-v", v.host+":"+v.ctr)
	}
	return append(args, j.image), clientEnv
}

// runStep runs the main or the post step in a new container and reads back
// its file commands. The main step's exports and state are kept for the
// post step.
func (j *runnerJob) runStep(t *testing.T, e *dockertest.Engine, post bool) stepResult {
	t.Helper()
	guid := newGUID()
	files := map[string]string{}
	for _, p := range []struct{ name, prefix string }{
		{"GITHUB_ENV", "set_env_"}, {"GITHUB_OUTPUT", "set_output_"}, {"GITHUB_STATE", "save_state_"},
		{"GITHUB_STEP_SUMMARY", "step_summary_"}, {"GITHUB_PATH", "add_path_"},
	} {
		files[p.name] = filepath.Join(j.fileCommands, p.prefix+guid)
		if err := os.WriteFile(files[p.name], nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{}
	for k, v := range j.env {
		env[k] = v
	}
	for k, v := range j.exported {
		env[k] = v
	}
	entrypoint := j.manifest.Runs.Entrypoint
	if post {
		entrypoint = j.manifest.Runs.PostEntrypoint
		for k, v := range j.state {
			env["STATE_"+k] = v
		}
	}
	for k, v := range files {
		env[k] = v
	}

	args, clientEnv := j.dockerRun(entrypoint, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.Command(ctx, clientEnv, args...)
	cmd.Dir = j.workspace
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := stepResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("docker run: %v", err)
	}
	if res.code == 125 || res.code == 126 || res.code == 127 {
		t.Fatalf("docker could not run the step (exit %d): %s", res.code, res.stderr)
	}

	read := func(name string) map[string]string {
		m, err := runner.ParseFileCommands(files[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}
	res.env, res.output, res.state = read("GITHUB_ENV"), read("GITHUB_OUTPUT"), read("GITHUB_STATE")
	summary, err := os.ReadFile(files["GITHUB_STEP_SUMMARY"])
	if err != nil {
		t.Fatal(err)
	}
	res.summary = string(summary)
	if !post {
		for k, v := range res.env {
			j.exported[k] = v
		}
		for k, v := range res.state {
			j.state[k] = v
		}
	}
	return res
}

// newGUID returns a random GUID in the runner's "D" format.
func newGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:])
}

// TestDockerRunArgs pins the runner's docker run line (no engine needed):
// the order of its flags, the mounts, and variables passed by name with
// their values, translated to container paths, in the client's
// environment only.
func TestDockerRunArgs(t *testing.T) {
	m := actionManifest{}
	m.Runs.Entrypoint = "/usr/local/bin/astro-sts-action"
	j := newRunnerJob(t, m, "astro-sts:imagetest", nil, map[string]string{"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "secret-request-token"})
	env := map[string]string{
		"GITHUB_ENV":                     filepath.Join(j.fileCommands, "set_env_1"),
		"HOME":                           j.home,
		"RUNNER_TEMP":                    j.temp,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "secret-request-token",
	}
	args, clientEnv := j.dockerRun(m.Runs.Entrypoint, env)
	if strings.Contains(strings.Join(args, " "), "secret-request-token") {
		t.Error("a variable's value is on the docker command line")
	}
	name := args[2]
	if !regexp.MustCompile(`^astrostsimagetest_[0-9a-f]{6}$`).MatchString(name) {
		t.Errorf("container name %q, want the sanitized image and 6 hex digits", name)
	}
	want := []string{"run", "--name", name, "--label", containerLabel, "--workdir", "/github/workspace", "--rm",
		"-e", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "-e", "GITHUB_ENV", "-e", "HOME", "-e", "RUNNER_TEMP",
		"-e", "GITHUB_ACTIONS=true", "-e", "CI=true",
		"--entrypoint", "/usr/local/bin/astro-sts-action", "--network", "host"}
	if _, err := os.Stat("/var/run/docker.sock"); err == nil {
		want = append(want, "-v", "/var/run/docker.sock:/var/run/docker.sock")
	}
	want = append(want,
		"-v", j.home+":/github/home", "-v", j.workflow+":/github/workflow",
		"-v", j.fileCommands+":/github/file_commands", "-v", j.workspace+":/github/workspace",
		"astro-sts:imagetest")
	if diff := cmp.Diff(want, args); diff != "" {
		t.Errorf("docker run args (-want +got):\n%s", diff)
	}
	wantEnv := []string{
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=secret-request-token",
		"GITHUB_ENV=/github/file_commands/set_env_1",
		"HOME=/github/home",
		"RUNNER_TEMP=" + j.temp, // not under a mount: the runner leaves it as it is
	}
	if diff := cmp.Diff(wantEnv, clientEnv); diff != "" {
		t.Errorf("client environment (-want +got):\n%s", diff)
	}
}
