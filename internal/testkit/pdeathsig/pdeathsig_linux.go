// Package pdeathsig ties a child process's life to its parent's: the test
// helpers that start real servers (Vault, redis-server, the benchmarks'
// broker and emulator) use it so that no server outlives a test process
// that died without stopping it (a panic, a killed `go test`).
package pdeathsig

import (
	"os/exec"
	"syscall"
)

// Set has Linux kill cmd's process with SIGKILL when the process that
// started it dies. Call it before cmd.Start; other SysProcAttr settings
// are kept.
func Set(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
