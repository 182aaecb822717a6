//go:build !linux

package loadtest

import (
	"errors"
	"time"
)

// ProcessCPU needs Linux's /proc; elsewhere it reports an error, and the
// benchmarks that need it skip.
func ProcessCPU(pid int) (time.Duration, error) {
	return 0, errors.New("loadtest: measuring another process's CPU time needs Linux")
}

// SelfCPU is 0 outside Linux.
func SelfCPU() time.Duration { return 0 }
