package loadtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// ProcessCPU is the CPU time the process pid has spent so far, to the
// nanosecond: the sum of the on-CPU time of each of its threads, from
// /proc/PID/task/*/schedstat. (/proc/PID/stat has the same figure rounded
// to 10 ms, too coarse for a run that costs a second.) A thread that exited
// takes its time with it; Go programs keep their threads, so the sum over
// a run is the process's.
func ProcessCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil {
		return 0, err
	}
	if len(tasks) == 0 {
		return 0, fmt.Errorf("loadtest: no process %d (or no schedstat in /proc)", pid)
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread exited between the glob and the read
			}
			return 0, err
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			return 0, fmt.Errorf("loadtest: %s is empty", t)
		}
		ns, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadtest: %s: %v", t, err)
		}
		total += time.Duration(ns)
	}
	return total, nil
}

// SelfCPU is the CPU time (user and system) this process has spent so far,
// all threads included: what an in-process benchmark divides by b.N.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
