package redistest

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has Linux kill the server if the test process dies
// without calling Close (a panic, a killed `go test`), so no redis-server outlives
// its tests.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
