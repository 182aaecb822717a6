//go:build !linux

// Package pdeathsig ties a child process's life to its parent's where the
// system can (Linux); elsewhere the helpers' Close is the only stop.
package pdeathsig

import "os/exec"

// Set does nothing outside Linux: there is no parent-death signal.
func Set(*exec.Cmd) {}
