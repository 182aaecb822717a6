package main

import (
	"os/exec"
	"syscall"
)

// dieWithTest has Linux kill a child process if the test process dies
// without its cleanup (a panic, a killed `go test`), so no broker outlives
// its test.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
