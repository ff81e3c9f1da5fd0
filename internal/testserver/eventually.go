package testserver

import "time"

// Eventually polls cond until it holds, and reports whether it did within
// timeout. cond is called at once, then every 10 ms growing to 200 ms, so
// that a condition met quickly is seen quickly and a slow one is not
// hammered; a cond that itself takes long (an SMTP session) is fine. The
// caller says what did not happen: t.Errorf or t.Fatalf with what it saw.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 200*time.Millisecond)
	}
}
