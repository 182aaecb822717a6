package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/astro-sts/astro-sts/internal/testkit/pdeathsig"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

// Process is a server under test running as a child process, so that its
// CPU time is its own: the load generator, the OIDC issuer signing tokens
// and the other servers run in other processes.
type Process struct {
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	exited chan struct{}
	once   sync.Once
}

// Start starts cmd (whose Stdout and Stderr must be unset) and passes each
// line it prints on stdout to ready until ready returns true (the line that
// says the server listens, and where), then each later line to each (nil:
// discarded), one at a time and in order. It returns once ready has
// returned true; if the process exits first, or ctx ends, it stops the
// process and returns an error with what it printed on stderr.
func Start(ctx context.Context, cmd *exec.Cmd, ready func(line []byte) bool, each func(line []byte)) (*Process, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, stderr: &syncbuf.Buffer{Limit: 64 << 10}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	pdeathsig.Set(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("loadtest: start %s: %w", cmd.Path, err)
	}
	isReady := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		waiting := true
		for sc.Scan() {
			switch {
			case waiting:
				if ready(sc.Bytes()) {
					waiting = false
					close(isReady)
				}
			case each != nil:
				each(sc.Bytes())
			}
		}
		// A line too long for the scanner ends it: keep draining, so
		// that the process never blocks writing to a full pipe.
		_, _ = io.Copy(io.Discard, out)
		// Wait only after stdout is drained, as os/exec asks.
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-isReady:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("loadtest: %s exited before it was ready (%v):\n%s", cmd.Path, cmd.ProcessState, p.stderr.String())
	case <-ctx.Done():
		_ = p.Close()
		return nil, fmt.Errorf("loadtest: %s not ready: %w:\n%s", cmd.Path, ctx.Err(), p.stderr.String())
	}
}

// PID is the process id, for [Load.Watch].
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Stderr is what the process printed on stderr so far (capped at 64 KiB).
func (p *Process) Stderr() string { return p.stderr.String() }

// Close interrupts the process, kills it if it has not exited after 10 s,
// and waits for it. It is safe to call twice.
func (p *Process) Close() error {
	var err error
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			err = errors.New("loadtest: process did not stop within 10s of an interrupt; killed")
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return err
}
