//go:build !linux

package redistest

import "os/exec"

// setParentDeathSignal is Linux-only; elsewhere Close is the only stop.
func setParentDeathSignal(*exec.Cmd) {}
