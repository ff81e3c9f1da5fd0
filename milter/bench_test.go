package milter

import (
	"io"
	"log/slog"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// BenchmarkRcptDecision: one RCPT round trip over loopback on an open
// session, the Checker answering from a map (as from an LRU hit); half
// the recipients exist, half get a 550.
func BenchmarkRcptDecision(b *testing.B) { benchRcpt(b, discard()) }

// BenchmarkRcptDecisionLogged: the same with every decision logged (JSON,
// info level, to io.Discard), as the daemon runs.
func BenchmarkRcptDecisionLogged(b *testing.B) {
	benchRcpt(b, slog.New(slog.NewJSONHandler(io.Discard, nil)))
}

// BenchmarkRcptDecisionText: the same logged as text, the daemon's
// default format (slog's TextHandler: the daemon's own fast path is in
// cmd/antespam-milter).
func BenchmarkRcptDecisionText(b *testing.B) {
	benchRcpt(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func benchRcpt(b *testing.B, log *slog.Logger) {
	src := newMapSource("known@example.org")
	_, addr := startServer(b, newPolicy(b, src, testConfig(), log), ServerOptions{MaxSessions: 100}, discard())
	s := dial(b, "tcp", addr)
	must(b)(s.Conn("h", gomilter.FamilyInet, 25, "198.51.100.1"))
	must(b)(s.Mail("a@b.test", nil))
	rcpts := []string{"known@example.org", "unknown@example.org"}
	b.ReportAllocs()
	defer testserver.ReportCPU(b)()
	i := 0
	for b.Loop() {
		if _, err := s.Rcpt(rcpts[i&1], nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkSession: a whole MTA session per op, on a fresh connection:
// negotiate, connect (host lookup), MAIL, 3 RCPT, close; one at a time.
func BenchmarkSession(b *testing.B) {
	client := benchServer(b, discard())
	b.ReportAllocs()
	defer testserver.ReportCPU(b)()
	for b.Loop() {
		benchSession(b, client)
	}
}

// BenchmarkSessionLogged: the same with its 4 decisions logged as text.
func BenchmarkSessionLogged(b *testing.B) {
	client := benchServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.ReportAllocs()
	defer testserver.ReportCPU(b)()
	for b.Loop() {
		benchSession(b, client)
	}
}

// BenchmarkSessionParallel: the same with GOMAXPROCS clients at once.
func BenchmarkSessionParallel(b *testing.B) {
	client := benchServer(b, discard())
	b.ReportAllocs()
	defer testserver.ReportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			benchSession(b, client)
		}
	})
}

func benchServer(b *testing.B, log *slog.Logger) *gomilter.Client {
	src := newMapSource("known@example.org", "192.0.2.66")
	_, addr := startServer(b, newPolicy(b, src, testConfig(), log), ServerOptions{MaxSessions: 1000}, discard())
	return gomilter.NewClientWithOptions("tcp", addr, clientOpts)
}

func benchSession(b *testing.B, client *gomilter.Client) {
	s, err := client.Session()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Conn("mx.test", gomilter.FamilyInet, 25, "198.51.100.1"); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Mail("a@b.test", nil); err != nil {
		b.Fatal(err)
	}
	for _, r := range []string{"known@example.org", "unknown@example.org", "known+x@example.org"} {
		if _, err := s.Rcpt(r, nil); err != nil {
			b.Fatal(err)
		}
	}
}
