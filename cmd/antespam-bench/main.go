// Command antespam-bench plays an MTA against a milter and measures it.
//
// Each worker opens a milter connection per SMTP session (dial + option
// negotiation), sends Connect, Helo, then -msgs messages of Mail and -rcpts
// RcptTo each, ending every message with Abort (or EOB with -eom) and the
// session with Quit, the way Postfix drives smtpd_milters. It speaks
// through go-milter's client with protocol-v2 masks, honours the stages
// the milter masks off, and so works against any milter. It stops after
// -n sessions or -d of load, whichever comes first, and always within
// -timeout.
//
// The summary gives sessions/s, messages/s and RcptTo/s, the latency of
// negotiation, of the Connect decision and of each RcptTo decision
// (p50/p90/p99/max), the replies by stage and code, and errors; -json
// prints it as one JSON object for scripts. -idle N instead opens N
// negotiated sessions, holds them for -hold and closes them (a memory
// benchmark for the milter).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"
)

type options struct {
	addr       string
	conc       int
	n          int
	dur        time.Duration
	timeout    time.Duration
	ioTimeout  time.Duration
	rcpts      int
	msgs       int
	rcptFile   string
	clientFile string
	seq        bool
	knownFrac  float64
	uniqFrac   float64
	pool       int
	knownN     int
	domain     string
	nClients   int
	seed       uint64
	barrier    bool
	eom        bool
	idle       int
	hold       time.Duration
	readyFile  string
	jsonOut    bool
	progress   bool
	label      string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("antespam-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "inet:8890@127.0.0.1", "milter address: inet:PORT@HOST, inet6:PORT@[HOST], unix:/path, local:/path or HOST:PORT")
	fs.IntVar(&o.conc, "c", 16, "concurrent milter connections")
	fs.IntVar(&o.n, "n", 0, "SMTP sessions (milter connections) in all; 0 with -d means no count limit")
	fs.DurationVar(&o.dur, "d", 0, "duration of the load; 0 means until -n sessions")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "hard limit on the whole run")
	fs.DurationVar(&o.ioTimeout, "io-timeout", 10*time.Second, "read and write timeout of each milter packet")
	fs.IntVar(&o.rcpts, "rcpts", 3, "RCPTs per message")
	fs.IntVar(&o.msgs, "msgs", 1, "messages per SMTP session (per milter connection)")
	fs.StringVar(&o.rcptFile, "rcpt-file", "", "recipients, one a line, drawn at random (in order with -seq) instead of generated ones")
	fs.StringVar(&o.clientFile, "client-file", "", "client IP addresses, one a line, used in turn instead of generated ones")
	fs.BoolVar(&o.seq, "seq", false, "draw -rcpt-file recipients in file order (shared by all workers)")
	fs.Float64Var(&o.knownFrac, "known-frac", 0.5, "fraction of generated recipients that exist (user<i>@domain, i < -known-n)")
	fs.Float64Var(&o.uniqFrac, "unique-frac", 0, "fraction of generated recipients never drawn before (the rest repeat from a pool of -pool)")
	fs.IntVar(&o.pool, "pool", 1000, "size of the repeated known and unknown recipient sets")
	fs.IntVar(&o.knownN, "known-n", 10000, "known recipients are user0..user<known-n - 1>@domain")
	fs.StringVar(&o.domain, "domain", "example.com", "domain of generated recipients")
	fs.IntVar(&o.nClients, "clients", 100, "distinct generated client addresses (198.18.0.0/15); 0 means a new one per session")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed and run id of unique recipients; 0 means from the clock")
	fs.BoolVar(&o.barrier, "barrier", false, "every worker's first session waits, after MAIL, until all -c are there, then they send RCPT together")
	fs.BoolVar(&o.eom, "eom", false, "end a message with an accepted recipient by end-of-body instead of Abort")
	fs.IntVar(&o.idle, "idle", 0, "open this many negotiated sessions (Connect and Helo sent), hold them -hold, close them; no load")
	fs.DurationVar(&o.hold, "hold", 10*time.Second, "how long -idle sessions stay open")
	fs.StringVar(&o.readyFile, "ready-file", "", "with -idle: write this file once every session is open")
	fs.BoolVar(&o.jsonOut, "json", false, "print the summary as JSON")
	fs.BoolVar(&o.progress, "progress", true, "live progress line when stdout (or, with -json, stderr) is a terminal")
	fs.StringVar(&o.label, "label", "", "free text copied into the summary")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch {
	case o.conc < 1:
		return nil, errors.New("-c must be at least 1")
	case o.rcpts < 0 || o.msgs < 1:
		return nil, errors.New("-rcpts must be 0 or more and -msgs at least 1")
	case o.n < 0 || o.dur < 0 || o.timeout <= 0:
		return nil, errors.New("-n, -d and -timeout must not be negative")
	case o.knownFrac < 0 || o.knownFrac > 1 || o.uniqFrac < 0 || o.uniqFrac > 1:
		return nil, errors.New("-known-frac and -unique-frac are fractions between 0 and 1")
	case o.pool < 1 || o.knownN < 1:
		return nil, errors.New("-pool and -known-n must be at least 1")
	case o.barrier && o.n != 0 && o.n < o.conc:
		return nil, errors.New("-barrier needs -n of at least -c")
	}
	if o.n == 0 && o.dur == 0 {
		o.n = 10000
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return o, nil
}

// milterAddr turns the milter socket syntax into a network and address.
func milterAddr(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"), strings.HasPrefix(s, "local:"):
		return "unix", s[strings.IndexByte(s, ':')+1:], nil
	case strings.HasPrefix(s, "inet:"), strings.HasPrefix(s, "inet6:"):
		rest := s[strings.IndexByte(s, ':')+1:]
		port, host, ok := strings.Cut(rest, "@")
		if !ok {
			host = "127.0.0.1"
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return "", "", fmt.Errorf("%q: bad port %q", s, port)
		}
		return "tcp", net.JoinHostPort(host, port), nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", "", fmt.Errorf("%q is not inet:PORT@HOST, unix:/path or HOST:PORT", s)
	}
	return "tcp", s, nil
}

// Summary is what a run measured; -json prints it as is.
type Summary struct {
	Label        string  `json:"label,omitempty"`
	Addr         string  `json:"addr"`
	Concurrency  int     `json:"concurrency"`
	RcptsPerMsg  int     `json:"rcpts_per_msg"`
	MsgsPerConn  int     `json:"msgs_per_conn"`
	ElapsedS     float64 `json:"elapsed_s"`
	Sessions     uint64  `json:"sessions"`
	SessionsOK   uint64  `json:"sessions_ok"`
	Messages     uint64  `json:"messages"`
	Rcpts        uint64  `json:"rcpts"`
	SessionsPerS float64 `json:"sessions_per_s"`
	MessagesPerS float64 `json:"messages_per_s"`
	RcptsPerS    float64 `json:"rcpts_per_s"`
	Negotiate    Latency `json:"negotiate_latency"`
	Connect      Latency `json:"connect_latency"`
	Rcpt         Latency `json:"rcpt_latency"`
	// Replies counts the milter's answers by stage ("connect", "helo",
	// "mail", "rcpt", "eom") and code: "continue", "accept", "reject",
	// "tempfail", "discard", or the SMTP code of a custom reply ("550").
	Replies     map[string]map[string]uint64 `json:"replies"`
	Errors      map[string]uint64            `json:"errors"`
	ErrorsTotal uint64                       `json:"errors_total"`
	// Idle mode.
	IdleOpen   uint64 `json:"idle_open,omitempty"`
	IdleFailed uint64 `json:"idle_failed,omitempty"`
}

type bench struct {
	o      *options
	client *gomilter.Client
	wl     *workload

	negotiate, connect, rcpt hist

	started, sessions, sessionsOK, messages, rcpts atomic.Uint64

	mu      sync.Mutex
	replies map[string]map[string]uint64
	errs    map[string]uint64
	nerrs   atomic.Uint64

	barrier sync.WaitGroup
}

func (b *bench) reply(stage string, a *gomilter.Action) {
	var code string
	switch a.Code {
	case gomilter.ActContinue:
		code = "continue"
	case gomilter.ActAccept:
		code = "accept"
	case gomilter.ActReject:
		code = "reject"
	case gomilter.ActTempFail:
		code = "tempfail"
	case gomilter.ActDiscard:
		code = "discard"
	case gomilter.ActReplyCode:
		code = strconv.Itoa(a.SMTPCode)
	default:
		code = string(rune(a.Code))
	}
	b.mu.Lock()
	m := b.replies[stage]
	if m == nil {
		m = map[string]uint64{}
		b.replies[stage] = m
	}
	m[code]++
	b.mu.Unlock()
}

// fail counts an error under a short key: the stage and the error's last
// part, so that addresses and ports do not make every key unique.
func (b *bench) fail(stage string, err error) {
	b.nerrs.Add(1)
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	key := stage + ": " + msg
	b.mu.Lock()
	if _, ok := b.errs[key]; !ok && len(b.errs) >= 32 {
		key = stage + ": other"
	}
	b.errs[key]++
	b.mu.Unlock()
}

// goOn reports whether a stage's answer lets the transaction go on.
func goOn(a *gomilter.Action) bool {
	return a.Code == gomilter.ActContinue || a.Code == gomilter.ActAccept
}

// session runs one SMTP session's worth of milter traffic.
func (b *bench) session(r *rand.Rand, first bool, barrierDone func()) {
	defer b.sessions.Add(1)
	t0 := time.Now()
	s, err := b.client.Session()
	if err != nil {
		barrierDone()
		b.fail("negotiate", err)
		return
	}
	b.negotiate.record(time.Since(t0))
	ok := false
	defer func() {
		if err := s.Close(); err != nil && ok {
			b.fail("quit", err)
			ok = false
		}
		if ok {
			b.sessionsOK.Add(1)
		}
	}()
	ip := b.wl.client(r)
	host := "client-" + strings.ReplaceAll(ip, ".", "-") + ".bench.test"
	if err := s.Macros(gomilter.CodeConn, "j", "mx.bench.test", "{daemon_name}", "antespam-bench",
		"{client_addr}", ip, "{client_name}", host, "_", host+" ["+ip+"]"); err != nil {
		barrierDone()
		b.fail("connect", err)
		return
	}
	t := time.Now()
	a, err := s.Conn(host, gomilter.FamilyInet, uint16(1024+r.IntN(60000)), ip)
	if err != nil {
		barrierDone()
		b.fail("connect", err)
		return
	}
	b.connect.record(time.Since(t))
	b.reply("connect", a)
	if !goOn(a) {
		barrierDone()
		ok = true
		return
	}
	if err := s.Macros(gomilter.CodeHelo, "{tls_version}", ""); err != nil {
		barrierDone()
		b.fail("helo", err)
		return
	}
	if a, err = s.Helo(host); err != nil {
		barrierDone()
		b.fail("helo", err)
		return
	}
	if a.Code != gomilter.ActContinue {
		b.reply("helo", a)
	}
	for m := 0; m < b.o.msgs; m++ {
		qid := strconv.FormatUint(r.Uint64()&0xffffffffff, 16)
		if err := s.Macros(gomilter.CodeMail, "i", qid, "{mail_addr}", "sender@bench.test", "{auth_authen}", ""); err != nil {
			barrierDone()
			b.fail("mail", err)
			return
		}
		if a, err = s.Mail("sender@bench.test", nil); err != nil {
			barrierDone()
			b.fail("mail", err)
			return
		}
		b.messages.Add(1)
		if a.Code != gomilter.ActContinue {
			b.reply("mail", a)
		}
		if first && m == 0 {
			barrierDone()
			if b.o.barrier {
				b.barrier.Wait()
			}
		}
		accepted := 0
		if goOn(a) {
			for i := 0; i < b.o.rcpts; i++ {
				rc := b.wl.rcpt(r)
				if err := s.Macros(gomilter.CodeRcpt, "{rcpt_addr}", rc, "{rcpt_mailer}", "smtp"); err != nil {
					b.fail("rcpt", err)
					return
				}
				t := time.Now()
				a, err := s.Rcpt(rc, nil)
				if err != nil {
					b.fail("rcpt", err)
					return
				}
				b.rcpt.record(time.Since(t))
				b.rcpts.Add(1)
				b.reply("rcpt", a)
				if goOn(a) {
					accepted++
				}
			}
		}
		switch {
		case b.o.eom && accepted > 0:
			_, a, err := s.End()
			if err != nil {
				b.fail("eom", err)
				return
			}
			b.reply("eom", a)
		case m < b.o.msgs-1:
			// The last message's Abort is sent by Close, before Quit,
			// as Postfix does when the client quits.
			if err := s.Abort(); err != nil {
				b.fail("abort", err)
				return
			}
		}
	}
	ok = true
}

func (b *bench) progressLine(w io.Writer, start time.Time, last *uint64, lastT *time.Time) {
	now := time.Now()
	s, rc := b.sessions.Load(), b.rcpts.Load()
	rate := float64(s-*last) / now.Sub(*lastT).Seconds()
	*last, *lastT = s, now
	fmt.Fprintf(w, "\r\033[K%6.1fs  sessions %d (%.0f/s now)  rcpts %d  errors %d",
		now.Sub(start).Seconds(), s, rate, rc, b.nerrs.Load())
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (b *bench) summary(elapsed time.Duration) *Summary {
	sec := elapsed.Seconds()
	s := &Summary{
		Label: b.o.label, Addr: b.o.addr, Concurrency: b.o.conc,
		RcptsPerMsg: b.o.rcpts, MsgsPerConn: b.o.msgs,
		ElapsedS: float64(elapsed.Round(time.Millisecond)) / float64(time.Second),
		Sessions: b.sessions.Load(), SessionsOK: b.sessionsOK.Load(),
		Messages: b.messages.Load(), Rcpts: b.rcpts.Load(),
		Negotiate: b.negotiate.summary(), Connect: b.connect.summary(), Rcpt: b.rcpt.summary(),
		Replies: b.replies, Errors: b.errs, ErrorsTotal: b.nerrs.Load(),
	}
	if sec > 0 {
		s.SessionsPerS = float64(s.Sessions) / sec
		s.MessagesPerS = float64(s.Messages) / sec
		s.RcptsPerS = float64(s.Rcpts) / sec
	}
	return s
}

func printHuman(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "%s: -c %d, %d msgs/session, %d rcpts/msg, %.2fs\n", s.Addr, s.Concurrency, s.MsgsPerConn, s.RcptsPerMsg, s.ElapsedS)
	if s.IdleOpen > 0 || s.IdleFailed > 0 {
		fmt.Fprintf(w, "idle sessions opened %d, failed %d\n", s.IdleOpen, s.IdleFailed)
	}
	fmt.Fprintf(w, "sessions %d (%d complete)  %.0f/s\n", s.Sessions, s.SessionsOK, s.SessionsPerS)
	fmt.Fprintf(w, "messages %d  %.0f/s\n", s.Messages, s.MessagesPerS)
	fmt.Fprintf(w, "rcpts    %d  %.0f/s\n", s.Rcpts, s.RcptsPerS)
	fmt.Fprintf(w, "latency (µs)      %8s %8s %8s %8s %8s %9s\n", "mean", "p50", "p90", "p99", "p99.9", "max")
	for _, l := range []struct {
		name string
		l    Latency
	}{{"negotiate", s.Negotiate}, {"connect", s.Connect}, {"rcpt", s.Rcpt}} {
		if l.l.Count == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-15s %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f\n", l.name, l.l.Mean, l.l.P50, l.l.P90, l.l.P99, l.l.P999, l.l.Max)
	}
	for _, stage := range []string{"connect", "helo", "mail", "rcpt", "eom"} {
		m := s.Replies[stage]
		if len(m) == 0 {
			continue
		}
		fmt.Fprintf(w, "replies %-8s", stage)
		for _, k := range sortedKeys(m) {
			fmt.Fprintf(w, " %s=%d", k, m[k])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "errors %d\n", s.ErrorsTotal)
	for _, k := range sortedKeys(s.Errors) {
		fmt.Fprintf(w, "  %6d  %s\n", s.Errors[k], k)
	}
}

func sortedKeys(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// runLoad drives sessions until -n, -d, -timeout or a signal.
func (b *bench) runLoad(ctx context.Context) time.Duration {
	o := b.o
	var deadline time.Time
	if o.dur > 0 {
		deadline = time.Now().Add(o.dur)
	}
	take := func() bool {
		if ctx.Err() != nil || (!deadline.IsZero() && time.Now().After(deadline)) {
			return false
		}
		return o.n == 0 || b.started.Add(1) <= uint64(o.n)
	}
	if o.barrier {
		b.barrier.Add(o.conc)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(o.seed, uint64(w)))
			var once sync.Once
			done := func() {
				if o.barrier {
					once.Do(b.barrier.Done)
				}
			}
			defer done()
			first := true
			for take() {
				b.session(r, first, done)
				first = false
			}
		}(w)
	}
	b.watch(ctx, &wg, start)
	return time.Since(start)
}

// watch waits for wg, drawing the progress line meanwhile.
func (b *bench) watch(ctx context.Context, wg *sync.WaitGroup, start time.Time) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var out *os.File
	if b.o.progress {
		if !b.o.jsonOut && isTerminal(os.Stdout) {
			out = os.Stdout
		} else if isTerminal(os.Stderr) {
			out = os.Stderr
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastT := uint64(0), start
	for {
		select {
		case <-done:
			if out != nil {
				fmt.Fprint(out, "\r\033[K")
			}
			return
		case <-tick.C:
			if out != nil {
				b.progressLine(out, start, &last, &lastT)
			}
		}
	}
}

// runIdle opens -idle sessions with -c dialers, holds them, closes them.
func (b *bench) runIdle(ctx context.Context) (time.Duration, uint64, uint64) {
	o := b.o
	var open, failed atomic.Uint64
	sessions := make([]*gomilter.ClientSession, o.idle)
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(o.seed, uint64(w)))
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(o.idle) {
					return
				}
				t0 := time.Now()
				s, err := b.client.Session()
				if err != nil {
					failed.Add(1)
					b.fail("negotiate", err)
					continue
				}
				b.negotiate.record(time.Since(t0))
				ip := b.wl.client(r)
				_ = s.Macros(gomilter.CodeConn, "{client_addr}", ip, "{daemon_name}", "antespam-bench")
				t := time.Now()
				a, err := s.Conn("idle.bench.test", gomilter.FamilyInet, 25000, ip)
				if err == nil {
					b.connect.record(time.Since(t))
					b.reply("connect", a)
					_, err = s.Helo("idle.bench.test")
				}
				if err != nil {
					failed.Add(1)
					b.fail("connect", err)
					_ = s.Close()
					continue
				}
				sessions[i] = s
				open.Add(1)
			}
		}(w)
	}
	wg.Wait()
	if o.readyFile != "" {
		if err := os.WriteFile(o.readyFile, []byte(strconv.FormatUint(open.Load(), 10)+"\n"), 0o644); err != nil {
			b.fail("ready-file", err)
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(o.hold):
	}
	var cw sync.WaitGroup
	ch := make(chan *gomilter.ClientSession)
	for w := 0; w < o.conc; w++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for s := range ch {
				if err := s.Close(); err != nil {
					b.fail("quit", err)
				} else {
					b.sessionsOK.Add(1)
				}
				b.sessions.Add(1)
			}
		}()
	}
	for _, s := range sessions {
		if s != nil {
			ch <- s
		}
	}
	close(ch)
	cw.Wait()
	return time.Since(start), open.Load(), failed.Load()
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "antespam-bench:", err)
		return 2
	}
	network, address, err := milterAddr(o.addr)
	if err != nil {
		fmt.Fprintln(stderr, "antespam-bench: -addr:", err)
		return 2
	}
	wl := &workload{
		seq: o.seq, knownFrac: o.knownFrac, uniqFrac: o.uniqFrac, pool: o.pool,
		knownN: o.knownN, domain: o.domain, nClients: o.nClients,
		runID: strconv.FormatUint(o.seed%(1<<40), 36),
	}
	if o.rcptFile != "" {
		if wl.rcpts, err = readLines(o.rcptFile); err != nil {
			fmt.Fprintln(stderr, "antespam-bench: -rcpt-file:", err)
			return 2
		}
	}
	if o.clientFile != "" {
		if wl.clients, err = readLines(o.clientFile); err != nil {
			fmt.Fprintln(stderr, "antespam-bench: -client-file:", err)
			return 2
		}
	}
	b := &bench{
		o:  o,
		wl: wl,
		client: gomilter.NewClientWithOptions(network, address, gomilter.ClientOptions{
			Dialer:       &net.Dialer{Timeout: o.ioTimeout},
			ReadTimeout:  o.ioTimeout,
			WriteTimeout: o.ioTimeout,
			// Protocol version 2 masks: the library refuses to downgrade
			// to a v2 milter (go-milter's server) with anything wider.
			ActionMask:   0x3f,
			ProtocolMask: 0x7f,
		}),
		replies: map[string]map[string]uint64{},
		errs:    map[string]uint64{},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	var s *Summary
	if o.idle > 0 {
		elapsed, open, failed := b.runIdle(ctx)
		s = b.summary(elapsed)
		s.IdleOpen, s.IdleFailed = open, failed
	} else {
		s = b.summary(b.runLoad(ctx))
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(s); err != nil {
			fmt.Fprintln(stderr, "antespam-bench:", err)
			return 1
		}
	} else {
		printHuman(stdout, s)
	}
	if s.SessionsOK == 0 && s.Sessions > 0 {
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
