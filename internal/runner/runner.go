// Package runner plays the GitHub Actions runner's side of the contract
// with a container action, so that tests (this repository's unit tests and the
// end-to-end test) can run the action's main and post steps hermetically and
// read back what a real runner would have seen.
//
// It is ordinary production code without a testing import, so that any test
// package can use it: [NewRunner] prepares the file-command files and the
// environment of a container action, [ParseFileCommands] reads
// GITHUB_ENV/GITHUB_OUTPUT/GITHUB_STATE with the runner's own rules, and
// [IDTokenHandler] stands in for the runner's OIDC token endpoint.
package runner

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrFileCommand reports a file-command file the runner would refuse.
var ErrFileCommand = errors.New("invalid file command")

// ParseFileCommands reads a GITHUB_ENV, GITHUB_OUTPUT or GITHUB_STATE file
// the way the runner does (actions/runner FileCommandManager on Linux):
//
//   - lines are separated by "\n"; empty lines are skipped;
//   - "name=value" when "=" comes before any "<<": the value is the rest of
//     the line, "=" and "<<" included;
//   - "name<<DELIM" otherwise: the value is every following line up to a line
//     equal to DELIM byte for byte (a trailing "\r" or space does not match),
//     joined with "\n";
//   - an empty name or delimiter, a line with neither form, or a missing
//     closing delimiter is an error;
//   - a name given twice keeps the last value, as the runner does for env.
//
// A missing file is an empty result, as for a step that wrote nothing.
func ParseFileCommands(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	return parseFileCommands(string(data))
}

func parseFileCommands(text string) (map[string]string, error) {
	out := map[string]string{}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if line == "" {
			continue
		}
		eq := strings.Index(line, "=")
		hd := strings.Index(line, "<<")
		switch {
		case eq >= 0 && (hd < 0 || eq < hd):
			name, value := line[:eq], line[eq+1:]
			if name == "" {
				return nil, fmt.Errorf("%w: line %d: empty name", ErrFileCommand, i+1)
			}
			out[name] = value
		case hd >= 0:
			name, delim := line[:hd], line[hd+2:]
			if name == "" || delim == "" {
				return nil, fmt.Errorf("%w: line %d: empty name or delimiter", ErrFileCommand, i+1)
			}
			start := i + 1
			end := -1
			for j := start; j < len(lines); j++ {
				if lines[j] == delim {
					end = j
					break
				}
			}
			if end < 0 {
				return nil, fmt.Errorf("%w: line %d: delimiter of %q not found", ErrFileCommand, i+1, name)
			}
			out[name] = strings.Join(lines[start:end], "\n")
			i = end
		default:
			return nil, fmt.Errorf("%w: line %d: neither name=value nor name<<delimiter", ErrFileCommand, i+1)
		}
	}
	return out, nil
}

// Runner is one job's runner-side state for a container action: the
// file-command files it mounts into the container and the environment it
// passes. Build it with [NewRunner].
type Runner struct {
	// Dir is RUNNER_TEMP; the file-command files live under it.
	Dir string
	// EnvFile, OutputFile, StateFile, SummaryFile and PathFile are the
	// paths passed as GITHUB_ENV, GITHUB_OUTPUT, GITHUB_STATE,
	// GITHUB_STEP_SUMMARY and GITHUB_PATH.
	EnvFile, OutputFile, StateFile, SummaryFile, PathFile string

	env map[string]string
}

// Options configure [NewRunner].
type Options struct {
	// Inputs are the action's inputs by their action.yml names
	// ("broker-url"); they become INPUT_<NAME> with the name upper-cased and
	// spaces turned into "_" (hyphens kept), as the runner does. Give every
	// declared input, "" included, as the runner does after applying
	// action.yml defaults.
	Inputs map[string]string
	// IDTokenURL is ACTIONS_ID_TOKEN_REQUEST_URL, e.g. a loopback server's
	// URL + "/token?api-version=2.0" serving [IDTokenHandler]. Empty leaves
	// it unset, as in a job without `permissions: id-token: write`.
	IDTokenURL string
	// IDTokenRequestToken is ACTIONS_ID_TOKEN_REQUEST_TOKEN, the bearer
	// token the runner's endpoint expects.
	IDTokenRequestToken string
	// Env is extra environment (job env, GITHUB_REPOSITORY, ...); it wins
	// over what NewRunner sets.
	Env map[string]string
}

// NewRunner creates the file-command files under dir (use t.TempDir()) and
// the environment a runner gives a container action's main step.
func NewRunner(dir string, opts Options) (*Runner, error) {
	r := &Runner{
		Dir:         dir,
		EnvFile:     filepath.Join(dir, "github_env"),
		OutputFile:  filepath.Join(dir, "github_output"),
		StateFile:   filepath.Join(dir, "github_state"),
		SummaryFile: filepath.Join(dir, "github_step_summary"),
		PathFile:    filepath.Join(dir, "github_path"),
	}
	for _, p := range []string{r.EnvFile, r.OutputFile, r.StateFile, r.SummaryFile, r.PathFile} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return nil, err
		}
	}
	r.env = map[string]string{
		"GITHUB_ACTIONS":      "true",
		"CI":                  "true",
		"RUNNER_TEMP":         dir,
		"GITHUB_ENV":          r.EnvFile,
		"GITHUB_OUTPUT":       r.OutputFile,
		"GITHUB_STATE":        r.StateFile,
		"GITHUB_STEP_SUMMARY": r.SummaryFile,
		"GITHUB_PATH":         r.PathFile,
	}
	if opts.IDTokenURL != "" {
		r.env["ACTIONS_ID_TOKEN_REQUEST_URL"] = opts.IDTokenURL
		r.env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = opts.IDTokenRequestToken
	}
	for name, v := range opts.Inputs {
		r.env[InputEnvName(name)] = v
	}
	for k, v := range opts.Env {
		r.env[k] = v
	}
	return r, nil
}

// InputEnvName is the variable the runner sets for an input: "broker-url"
// becomes "INPUT_BROKER-URL".
func InputEnvName(input string) string {
	return "INPUT_" + strings.ToUpper(strings.ReplaceAll(input, " ", "_"))
}

// Env returns a copy of the main step's environment.
func (r *Runner) Env() map[string]string {
	m := make(map[string]string, len(r.env))
	for k, v := range r.env {
		m[k] = v
	}
	return m
}

// Environ returns [Runner.Env] as KEY=VALUE pairs, for code that takes an
// os.Environ-shaped slice.
func (r *Runner) Environ() []string {
	return Environ(r.Env())
}

// Environ turns a map into KEY=VALUE pairs.
func Environ(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// PostEnv returns the post step's environment: the main step's, plus what
// the main step exported through GITHUB_ENV, plus STATE_<name> for each
// entry of GITHUB_STATE, with the name's case kept, as the runner does.
// Like the runner, it gives the post step fresh file-command files.
func (r *Runner) PostEnv() (map[string]string, error) {
	exported, err := r.ExportedEnv()
	if err != nil {
		return nil, err
	}
	state, err := r.State()
	if err != nil {
		return nil, err
	}
	env := r.Env()
	for k, v := range exported {
		env[k] = v
	}
	for k, v := range state {
		env["STATE_"+k] = v
	}
	for _, name := range []string{"GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STATE", "GITHUB_STEP_SUMMARY", "GITHUB_PATH"} {
		p := env[name] + ".post"
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return nil, err
		}
		env[name] = p
	}
	return env, nil
}

// ExportedEnv parses GITHUB_ENV.
func (r *Runner) ExportedEnv() (map[string]string, error) { return ParseFileCommands(r.EnvFile) }

// Outputs parses GITHUB_OUTPUT.
func (r *Runner) Outputs() (map[string]string, error) { return ParseFileCommands(r.OutputFile) }

// State parses GITHUB_STATE.
func (r *Runner) State() (map[string]string, error) { return ParseFileCommands(r.StateFile) }

// Summary returns the step summary's markdown.
func (r *Runner) Summary() (string, error) {
	b, err := os.ReadFile(r.SummaryFile)
	return string(b), err
}

// Paths returns the lines added to GITHUB_PATH.
func (r *Runner) Paths() ([]string, error) {
	f, err := os.Open(r.PathFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if s.Text() != "" {
			out = append(out, s.Text())
		}
	}
	return out, s.Err()
}
