package testserver

import (
	"syscall"
	"testing"
	"time"
)

// ReportCPU reports the CPU time (user and system, all threads) this
// test process uses per op, as cpu-ns/op: steadier than ns/op on a machine
// shared with other loads, and, with a server in another process
// (memcached, slapd), the cost of our side alone. Call it before the loop
// and the function it returns after it.
func ReportCPU(b *testing.B) func() {
	start := ProcessCPU(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(ProcessCPU(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// ProcessCPU is the user and system CPU time this process has used.
func ProcessCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
