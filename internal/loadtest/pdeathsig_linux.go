package loadtest

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has Linux kill the child if the benchmark process
// dies without calling Close, so no server outlives its benchmark.
func setParentDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
