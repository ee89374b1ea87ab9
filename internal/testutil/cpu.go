package testutil

import (
	"syscall"
	"time"
)

// CPUTime returns the CPU time (user and system) this process has used so
// far, so that a test can check that a client stays idle while a condition
// it must not retry in a loop lasts.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
