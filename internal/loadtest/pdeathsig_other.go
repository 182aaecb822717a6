//go:build !linux

package loadtest

import "os/exec"

// setParentDeathSignal is Linux-only; elsewhere Close is the only stop.
func setParentDeathSignal(*exec.Cmd) {}
