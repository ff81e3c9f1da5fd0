// Command noop is the ceiling baseline of the benchmarks: a milter on the
// same go-milter library as antespam-milter that continues at every stage
// and does nothing else. It negotiates like the daemon (the same stages
// masked off, the same action flags), so that the difference between
// the two is the daemon's own work.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	gomilter "github.com/emersion/go-milter"
)

// noop answers continue everywhere. Body returns RespContinue, not the
// library's RespAccept, so that the handler is not replaced after a message.
type noop struct{ gomilter.NoOpMilter }

func (noop) Body(*gomilter.Modifier) (gomilter.Response, error) { return gomilter.RespContinue, nil }

// listen opens a milter socket address: inet:PORT@HOST, inet6:PORT@[HOST],
// unix:/path, local:/path or HOST:PORT.
func listen(s string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(s, "unix:"), strings.HasPrefix(s, "local:"):
		p := s[strings.IndexByte(s, ':')+1:]
		_ = os.Remove(p)
		return net.Listen("unix", p)
	case strings.HasPrefix(s, "inet:"), strings.HasPrefix(s, "inet6:"):
		port, host, _ := strings.Cut(s[strings.IndexByte(s, ':')+1:], "@")
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		return net.Listen("tcp", net.JoinHostPort(host, port))
	}
	return net.Listen("tcp", s)
}

func main() {
	addr := flag.String("listen", "inet:8891@127.0.0.1", "milter address: inet:PORT@HOST, unix:/path or HOST:PORT")
	proto := flag.String("protocol", "0x"+strconv.FormatUint(uint64(Protocol), 16), "protocol flags answered in negotiation (stages masked off)")
	actions := flag.String("actions", "0x"+strconv.FormatUint(uint64(Actions), 16), "action flags answered in negotiation")
	flag.Parse()

	p, err := strconv.ParseUint(*proto, 0, 32)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noop: -protocol:", err)
		os.Exit(2)
	}
	a, err := strconv.ParseUint(*actions, 0, 32)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noop: -actions:", err)
		os.Exit(2)
	}
	ln, err := listen(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return noop{} },
		Actions:   gomilter.OptAction(a),
		Protocol:  gomilter.OptProtocol(p),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	fmt.Fprintf(os.Stderr, "noop: listening on %s (protocol %#x, actions %#x)\n", ln.Addr(), p, a)
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	}
}
