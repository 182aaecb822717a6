package demo

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode"

	"github.com/astro-sts/astro-sts/action"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/issuer"
)

// icuIgnorable are characters that ICU's root collation (ICU 72, en_US,
// tertiary strength: what .NET's culture-aware string.IndexOf(string) uses
// on Linux) weighs as nothing, and that the action's cleaning keeps: they
// are not format, default-ignorable or variation-selector characters. So
// the runner's IndexOf("##[") finds "##[" across them. A sample of the 467
// such code points (445 Mn, 12 Mc, 5 Me, 2 Lm, 2 Po, 1 Lo), found by
// usearch over every code point.
var icuIgnorable = []rune{0x0640, 0x0591, 0x05A2, 0x0610, 0x07FA, 0x180A, 0x1CD3, 0xFE73, 0x0488}

// redTeamJob runs the action's main step, as cmd/astro-sts runs it, for a
// job the sample policy does not trust, with claims set by the caller,
// against the real broker, emulator and issuer. With ASTRO_STS_BIN set it
// runs that binary's 'action' subcommand in the runner's environment;
// otherwise action.Main and action.ReportError in-process.
func redTeamJob(t *testing.T, set func(c *issuer.Claims)) (log, summary string) {
	t.Helper()
	dir := t.TempDir()
	s, err := startStack(clock.New(nil), newHTTPClient(), slog.New(slog.DiscardHandler), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close() })
	d := &demo{stack: s, p: &printer{w: &strings.Builder{}}, dir: dir}
	c := untrustedClaims("2001")
	set(&c)
	j, err := d.newJob(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if bin := os.Getenv("ASTRO_STS_BIN"); bin != "" {
		cmd := exec.Command(bin, "action")
		cmd.Env = j.runner.Environ()
		cmd.Stdout, cmd.Stderr = &out, &out
		_ = cmd.Run()
	} else {
		a := d.githubAction(j.runner.Env(), &out)
		if err := action.Main(context.Background(), a, d.actionDeps()); err != nil {
			action.ReportError(a, err)
		}
	}
	summary, err = j.runner.Summary()
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), summary
}

// A claim that hides "##[" behind a character ICU ignores reaches the job
// log with the runner's culture-aware IndexOf("##[") still finding it
// (ICU usearch: "prod#\u0640#[set-output ..." matches at index 4, length
// 4). The runner's legacy parser then takes the name from index+3, which
// here is the "[", so this line names no registered command; the promise
// (no ##[ as the runner searches for it) is broken all the same.
func TestRedTeamCultureAwareLegacyPrefix(t *testing.T) {
	log, _ := redTeamJob(t, func(c *issuer.Claims) {
		c.Environment = "prod#\u0640#[set-output name=token]FAKE-env"
		c.Ref = "refs/heads/x#\u0591#[add-mask]FAKE-ref"
	})
	if !strings.Contains(log, "FAKE-env") {
		t.Fatalf("the log does not show the environment claim:\n%s", log)
	}
	for i, line := range strings.Split(log, "\n") {
		bare := strings.Map(func(r rune) rune {
			if unicode.Is(unicode.Cf, r) || strings.ContainsRune(string(icuIgnorable), r) {
				return -1
			}
			return r
		}, line)
		if strings.Contains(bare, "##[") {
			t.Errorf("job log line %d holds ##[ for a culture-aware search: %q", i+1, line)
		}
	}
}

// A claim holding a URL becomes a link in the step summary: GFM's
// extended autolinks need no markup that md escapes.
func TestRedTeamSummaryAutolink(t *testing.T) {
	_, summary := redTeamJob(t, func(c *issuer.Claims) {
		c.Environment = "see https://evil.example/login or www.evil.example"
	})
	for _, link := range []string{"https://evil.example/login", "www.evil.example"} {
		if strings.Contains(summary, link) {
			t.Errorf("the step summary holds %q, which GitHub renders as a link:\n%s", link, summary)
		}
	}
}
