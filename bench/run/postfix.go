package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// A Postfix instance with four smtpd listeners, one per setup compared:
//
//	a   floor: every RCPT rejected by smtpd_recipient_restrictions = reject, no lookup
//	b   antespam-milter (LRU + LDAP) as smtpd_milters
//	b0  the no-op milter as smtpd_milters
//	c   Postfix's own relay_recipient_maps = proxy:ldap:... (domain = set)
//
// DATA is always refused (smtpd_data_restrictions = reject), so nothing is
// queued: what is measured is the SMTP session up to the recipients.
type postfix struct {
	p     *proc
	ports map[string]int
	log   string
}

var pfSetups = []string{"a", "b", "b0", "c"}

var pfNames = map[string]string{
	"a":  "(a) floor: reject, no lookup",
	"b":  "(b) antespam-milter",
	"b0": "(b0) no-op milter",
	"c":  "(c) Postfix proxy:ldap",
}

func startPostfix(dir string, ldapURL, daemonAddr, noopAddr string) (*postfix, error) {
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		return nil, fmt.Errorf("user postfix: %w (is postfix installed?)", err)
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	pd := filepath.Join(dir, "postfix")
	for _, d := range []string{"", "etc", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(pd, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(filepath.Join(pd, "data"), uid, -1); err != nil {
		return nil, err
	}
	ldapCF := filepath.Join(pd, "etc", "ldap-rcpt.cf")
	if err := os.WriteFile(ldapCF, []byte(fmt.Sprintf(`server_host = %s
search_base = %s
version = 3
query_filter = (|(mail=%%s)(mailLocalAddress=%%s))
result_attribute = mail
domain = %s
`, ldapURL, suffix, domain)), 0o644); err != nil {
		return nil, err
	}
	pf := &postfix{ports: map[string]int{}, log: filepath.Join(pd, "maillog")}
	main := fmt.Sprintf(`# written by bench/run
%[1]s
myhostname = mx.bench.test
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = %[2]s
relay_recipient_maps =
proxy_read_maps = proxy:ldap:%[3]s
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
smtpd_data_restrictions = reject
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 10000
smtpd_hard_error_limit = 10000
smtpd_junk_command_limit = 10000
milter_default_action = tempfail
smtpd_milters =
`, testserver.PostfixInstance(pd), domain, ldapCF)
	var services strings.Builder
	overrides := map[string]string{
		"a":  " -o smtpd_relay_restrictions= -o smtpd_recipient_restrictions=reject",
		"b":  " -o smtpd_milters=" + milterSpec(daemonAddr),
		"b0": " -o smtpd_milters=" + milterSpec(noopAddr),
		"c":  " -o relay_recipient_maps=proxy:ldap:" + ldapCF,
	}
	for _, s := range pfSetups {
		port := freePort()
		pf.ports[s] = port
		fmt.Fprintf(&services, "127.0.0.1:%d inet n - n - - smtpd%s\n", port, overrides[s])
	}
	services.WriteString(testserver.PostfixServices)
	etc := filepath.Join(pd, "etc")
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(main), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(services.String()), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command("postfix", "-c", etc, "check").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("postfix check: %v\n%s", err, out)
	}
	p, err := start(dir, "postfix-master", "", "/usr/lib/postfix/sbin/master", "-c", etc, "-d")
	if err != nil {
		return nil, err
	}
	pf.p = p
	for _, s := range pfSetups {
		if err := waitTCP(p, net.JoinHostPort("127.0.0.1", strconv.Itoa(pf.ports[s])), 20*time.Second); err != nil {
			return nil, err
		}
	}
	return pf, nil
}

// milterSpec turns inet:PORT@HOST into Postfix's inet:HOST:PORT.
func milterSpec(addr string) string {
	port, host, _ := strings.Cut(strings.TrimPrefix(addr, "inet:"), "@")
	return "inet:" + host + ":" + port
}

// pfRun sends msgs messages of rcpts recipients to port: 90% of them (18
// of 20 parallel sessions) to the same repeating recipients
// (rcptBase, 2rcptBase, ...), 10% (2 sessions, -N) to recipients never seen
// before (<seq>new<tag>@example.com). It returns the wall time of both.
func pfRun(port, msgs, rcpts int, rcptBase, tag string) (time.Duration, string, error) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	common := []string{"-A", "-r", strconv.Itoa(rcpts), "-f", "sender@bench.test", "-M", "client.bench.test"}
	runs := [][]string{
		append(append([]string{}, common...), "-s", "18", "-m", strconv.Itoa(msgs*9/10), "-t", rcptBase+"@"+domain, addr),
		append(append([]string{}, common...), "-N", "-s", "2", "-m", strconv.Itoa(msgs/10), "-t", "new"+tag+"@"+domain, addr),
	}
	var wg sync.WaitGroup
	errs := make([]error, len(runs))
	outs := make([]string, len(runs))
	t0 := time.Now()
	for i, a := range runs {
		wg.Add(1)
		go func(i int, a []string) {
			defer wg.Done()
			cmd := exec.Command("smtp-source", a...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				errs[i] = err
				return
			}
			go func() { done <- cmd.Wait() }()
			select {
			case errs[i] = <-done:
			case <-time.After(2 * time.Minute):
				_ = cmd.Process.Kill()
				errs[i] = fmt.Errorf("smtp-source did not finish in 2 minutes")
				<-done
			}
			outs[i] = out.String()
		}(i, a)
	}
	wg.Wait()
	el := time.Since(t0)
	for i, err := range errs {
		if err != nil {
			return 0, "", fmt.Errorf("smtp-source %s: %v\n%s", strings.Join(runs[i], " "), err, outs[i])
		}
	}
	return el, strings.TrimSpace(outs[0] + outs[1]), nil
}

func benchPostfix(dir string) (string, error) {
	var extra []string
	for i := 1; i <= 10; i++ {
		p := ""
		if i > 1 {
			p = strconv.Itoa(i)
		}
		extra = append(extra, p+"known@"+domain)
	}
	s, err := startSlapd(dir, *ldapUsers, false, extra...)
	if err != nil {
		return "", err
	}
	d, err := startDaemon(dir, "daemon", "", daemonConfig{LDAP: s.url, CacheSize: 100000, LogLevel: *logLevel})
	if err != nil {
		return "", err
	}
	noop, err := startNoop(dir, "noop", "")
	if err != nil {
		return "", err
	}
	pf, err := startPostfix(dir, s.url, d.addr, noop.addr)
	if err != nil {
		return "", err
	}
	// Warm-up: start smtpd processes and proxymap, fill the daemon's LRU
	// with the repeating recipients.
	for _, st := range pfSetups {
		for _, base := range []string{"known", "unknown"} {
			if _, out, err := pfRun(pf.ports[st], 200, 10, base, "warm"+st); err != nil {
				return "", err
			} else if out != "" {
				logf("  smtp-source warm-up %s: %s", st, firstLine(out))
			}
		}
	}
	msgsFor := map[int]int{1: 4000, 3: 2400, 10: 1200}
	type key struct {
		base  string
		rcpts int
		setup string
	}
	rates := map[key][]float64{}
	cpu := map[key][]float64{} // milter CPU µs per message, (b) and (b0)
	milterOf := map[string]*proc{"b": d.p, "b0": noop.p}
	var decisions, sentB float64
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	n := 0
	for _, base := range []string{"unknown", "known"} {
		for _, rc := range []int{1, 3, 10} {
			for r := 0; r < *rounds; r++ {
				for i := range pfSetups {
					st := pfSetups[(i+r)%len(pfSetups)]
					n++
					m0, _ := scrape(d.metrics)
					var c0 int64
					if mp := milterOf[st]; mp != nil {
						c0 = cpuTicks(mp.pid())
					}
					el, out, err := pfRun(pf.ports[st], msgsFor[rc], rc, base, fmt.Sprintf("%s%d", run, n))
					if err != nil {
						return "", err
					}
					if out != "" {
						logf("  smtp-source said: %s", firstLine(out))
					}
					rate := float64(msgsFor[rc]) / el.Seconds()
					rates[key{base, rc, st}] = append(rates[key{base, rc, st}], rate)
					if mp := milterOf[st]; mp != nil {
						cpu[key{base, rc, st}] = append(cpu[key{base, rc, st}], float64(cpuTicks(mp.pid())-c0)*1e6/clockTicks/float64(msgsFor[rc]))
					}
					if st == "b" {
						m1, _ := scrape(d.metrics)
						decisions += sumMetric(m1, "antespam_decisions_total", `stage="rcpt"`) - sumMetric(m0, "antespam_decisions_total", `stage="rcpt"`)
						sentB += float64(msgsFor[rc] * rc)
					}
					logf("  %-7s %2d rcpt round %d %-4s %6.0f msgs/s", base, rc, r+1, st, rate)
				}
			}
		}
	}

	var b strings.Builder
	allB0, allC := true, true
	b.WriteString("| recipients | RCPT/conn | setup | msgs/s median (min–max) | RCPT/s median | milter CPU µs/msg | b / b0 per round | b / b0 median | b / c per round | b / c median | vs floor (a) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, base := range []string{"unknown", "known"} {
		for _, rc := range []int{1, 3, 10} {
			rb, rb0, rcc, ra := rates[key{base, rc, "b"}], rates[key{base, rc, "b0"}], rates[key{base, rc, "c"}], rates[key{base, rc, "a"}]
			bb0, bc := ratios(rb0, rb), ratios(rcc, rb)
			okB0 := statsOf(bb0).med >= 0.95
			okC := rc != 10 || statsOf(bc).med >= 1
			allB0, allC = allB0 && okB0, allC && okC
			for _, st := range pfSetups {
				v := rates[key{base, rc, st}]
				mc := ""
				if c := cpu[key{base, rc, st}]; len(c) > 0 {
					mc = fmt.Sprintf("%.0f", statsOf(c).med)
				}
				row := fmt.Sprintf("| %s | %d | %s | %s | %.0f | %s |", base, rc, pfNames[st], statsOf(v).f(0), statsOf(v).med*float64(rc), mc)
				if st == "b" {
					goalC := ""
					if rc == 10 {
						goalC = " (target ≥ 1: " + verdict(okC) + ")"
					}
					row += fmt.Sprintf(" %s | **%.2f** (target ≥ 0.95: %s) | %s | **%.2f**%s |", fmtList(bb0, 2), statsOf(bb0).med, verdict(okB0), fmtList(bc, 2), statsOf(bc).med, goalC)
				} else {
					row += " | | | |"
				}
				row += fmt.Sprintf(" %.2f |", statsOf(v).med/statsOf(ra).med)
				b.WriteString(row + "\n")
			}
		}
	}
	fmt.Fprintf(&b, "\nLoad per run: `smtp-source -A -s 18 -m 0.9M -r R -t {known,unknown}@example.com` and, at the same time, `smtp-source -A -N -s 2 -m 0.1M -r R -t new<tag>@example.com` (one connection per message, 20 in parallel; M = 4000, 2400, 1200 messages for R = 1, 3, 10); msgs/s = M / wall time of both. smtp-source cannot draw from a pool: the repeating 90%% are R fixed addresses (`known`, `2known`, … — listed in the directory — or the same for `unknown`, which are not), the new 10%% are numbered by -N and tagged per run, never seen before (unknown). DATA is refused (smtpd_data_restrictions = reject), so nothing is queued. Setups alternated in each round, %d rounds. Milters and Postfix unpinned.\n\n", *rounds)
	if sentB > 0 {
		fmt.Fprintf(&b, "The daemon counted %.0f RCPT decisions for %.0f RCPTs sent to setup (b).\n\n", decisions, sentB)
	}
	fmt.Fprintf(&b, "Targets: (b) ≥ 0.95 × (b0) everywhere: %s; (b) ≥ (c) at 10 RCPTs per connection: %s.\n", verdict(allB0), verdict(allC))
	return b.String(), nil
}
