package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

func TestMilterAddr(t *testing.T) {
	tests := []struct {
		in, network, addr string
		wantErr           bool
	}{
		{in: "inet:8890@127.0.0.1", network: "tcp", addr: "127.0.0.1:8890"},
		{in: "inet6:8890@[::1]", network: "tcp", addr: "[::1]:8890"},
		{in: "unix:/run/x.sock", network: "unix", addr: "/run/x.sock"},
		{in: "local:/run/x.sock", network: "unix", addr: "/run/x.sock"},
		{in: "127.0.0.1:8890", network: "tcp", addr: "127.0.0.1:8890"},
		{in: "inet:notaport@127.0.0.1", wantErr: true},
		{in: "nonsense", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, a, err := milterAddr(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("milterAddr(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && (n != tt.network || a != tt.addr) {
				t.Errorf("milterAddr(%q) = %q %q, want %q %q", tt.in, n, a, tt.network, tt.addr)
			}
		})
	}
}

func TestHistBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 255, 256, 258, 1000, 1 << 20, 123456789, 1 << 40} {
		b := bucket(v)
		if b <= prev {
			t.Errorf("bucket(%d) = %d, not above the previous %d", v, b, prev)
		}
		prev = b
		mid := bucketValue(b)
		if diff := float64(mid-v) / float64(max(v, 1)); diff > 0.01 || diff < -0.01 {
			t.Errorf("bucketValue(bucket(%d)) = %d, more than 1%% off", v, mid)
		}
	}
	var h hist
	for i := 1; i <= 100; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	if got := h.quantile(0.5); got < 49*time.Millisecond || got > 51*time.Millisecond {
		t.Errorf("p50 of 1..100 ms = %s", got)
	}
	if got := h.quantile(1); got != 100*time.Millisecond {
		t.Errorf("p100 = %s, want the max 100ms", got)
	}
}

// rejecter continues everywhere but rejects nobody* recipients with a
// custom 550 reply, like antespam-milter.
type rejecter struct{ gomilter.NoOpMilter }

func (rejecter) RcptTo(rcpt string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.HasPrefix(rcpt, "nobody") {
		return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "550 5.1.1 no such user"), nil
	}
	return gomilter.RespContinue, nil
}

func TestRunAgainstMilter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return rejecter{} },
		Protocol:  gomilter.OptNoHelo | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoBody,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	var out, errOut bytes.Buffer
	code := run([]string{"-addr", ln.Addr().String(), "-c", "4", "-n", "40", "-rcpts", "3", "-msgs", "2",
		"-known-frac", "0.5", "-json", "-timeout", "1m"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("run = %d, stderr %s", code, errOut.String())
	}
	var s Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("bad JSON %q: %v", out.String(), err)
	}
	if s.Sessions != 40 || s.SessionsOK != 40 || s.Messages != 80 || s.Rcpts != 240 || s.ErrorsTotal != 0 {
		t.Errorf("sessions %d ok %d messages %d rcpts %d errors %v; want 40, 40, 80, 240, none",
			s.Sessions, s.SessionsOK, s.Messages, s.Rcpts, s.Errors)
	}
	r := s.Replies["rcpt"]
	if r["continue"]+r["550"] != 240 || r["continue"] == 0 || r["550"] == 0 {
		t.Errorf("rcpt replies %v, want a mix of continue and 550 adding up to 240", r)
	}
	if s.Rcpt.Count != 240 {
		t.Errorf("rcpt latency count %d, want 240", s.Rcpt.Count)
	}
}

func TestIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} }}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	var out, errOut bytes.Buffer
	if code := run([]string{"-addr", ln.Addr().String(), "-idle", "50", "-c", "8", "-hold", "10ms", "-json"}, &out, &errOut); code != 0 {
		t.Fatalf("run = %d, stderr %s", code, errOut.String())
	}
	var s Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	if s.IdleOpen != 50 || s.IdleFailed != 0 || s.SessionsOK != 50 {
		t.Errorf("idle open %d failed %d closed %d; want 50, 0, 50", s.IdleOpen, s.IdleFailed, s.SessionsOK)
	}
}
