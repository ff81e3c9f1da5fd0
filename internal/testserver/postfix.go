package testserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostfixOptions describe an isolated Postfix instance.
type PostfixOptions struct {
	// Snippet is main.cf text, normally the README's recommended lines
	// (examples/postfix-main.cf.snippet); every milter socket spec in it
	// (inet:..., unix:..., local:...) is replaced by Milters[0].
	Snippet string
	// Milters are Postfix milter specs ("inet:127.0.0.1:PORT",
	// "unix:/path"). Each gets its own smtpd listener: the first uses
	// main.cf (the snippet), the others override smtpd_milters in
	// master.cf. Listeners[i] is where to connect for Milters[i].
	Milters []string
	// RelayHost is "HOST:PORT" where accepted mail is relayed (an SMTP
	// sink); Postfix has no local domains.
	RelayHost string
	// IPv6 adds an smtpd listener on [::1] for each milter.
	IPv6 bool
	// MainCF is appended to main.cf last (it wins).
	MainCF string
}

// Postfix is a running Postfix master started by StartPostfix.
type Postfix struct {
	// Dir holds etc/ (main.cf, master.cf), queue/, data/ and maillog.
	Dir string
	// Listeners are "127.0.0.1:PORT", one per PostfixOptions.Milters.
	Listeners []string
	// Listeners6 are "[::1]:PORT", one per milter, when IPv6 is set.
	Listeners6 []string
	// MainCF is the main.cf written.
	MainCF string

	proc *Process
}

var milterSpecRE = regexp.MustCompile(`\b(?:inet6?|unix|local):[^\s,{}'"]+`)

// SubstituteMilter replaces every milter socket spec in snippet by spec.
func SubstituteMilter(snippet, spec string) string {
	return milterSpecRE.ReplaceAllLiteralString(snippet, spec)
}

// StartPostfix writes a Postfix configuration in a temp dir (its own
// config, queue and data directories, log file, smtpd on free loopback
// ports), runs master in the foreground, waits for its listeners and
// stops it by PID in t.Cleanup. A missing Postfix goes through
// Unavailable.
func StartPostfix(t testing.TB, o PostfixOptions) *Postfix {
	t.Helper()
	master := Require(t, "master", "/usr/lib/postfix/sbin")
	postfixCmd := Require(t, "postfix", "/usr/sbin")
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		Unavailable(t, "user postfix does not exist (is postfix installed?)")
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	if len(o.Milters) == 0 {
		t.Fatal("postfix: no milter")
	}
	if o.RelayHost == "" {
		t.Fatal("postfix: no relay host")
	}
	// Postfix's processes run as the postfix user and must traverse the
	// path to the queue: t.TempDir's dirs are 0700.
	dir, err := mtaTempDir("antespam-postfix")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &Postfix{Dir: dir}
	for _, d := range []string{"", "etc", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		t.Fatal(err)
	}

	protocols, interfaces, networks := "ipv4", "127.0.0.1", "127.0.0.0/8"
	if o.IPv6 {
		protocols, interfaces, networks = "all", "127.0.0.1, [::1]", "127.0.0.0/8 [::1]/128"
	}
	main := fmt.Sprintf(`# written by testserver.StartPostfix
%[1]s
myhostname = mx.test.example
mydomain = test.example
myorigin = $myhostname
inet_interfaces = %[2]s
inet_protocols = %[3]s
mynetworks = %[4]s
relay_domains =
relayhost = [%[5]s]:%[6]s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connect_timeout = 5s

# The snippet (examples/postfix-main.cf.snippet), milter address
# substituted: the milter settings, milter_default_action included, are
# the snippet's alone.
%[7]s

%[8]s
`, PostfixInstance(dir), interfaces, protocols, networks, mtaHost(o.RelayHost), mtaPort(o.RelayHost),
		SubstituteMilter(o.Snippet, o.Milters[0]), o.MainCF)
	p.MainCF = main

	var services strings.Builder
	for i, m := range o.Milters {
		override := ""
		if i > 0 {
			override = " -o smtpd_milters=" + m
		}
		port := FreePort(t, "127.0.0.1")
		p.Listeners = append(p.Listeners, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		fmt.Fprintf(&services, "127.0.0.1:%d inet n - n - - smtpd%s\n", port, override)
		if o.IPv6 {
			port6 := FreePort(t, "::1")
			p.Listeners6 = append(p.Listeners6, net.JoinHostPort("::1", strconv.Itoa(port6)))
			fmt.Fprintf(&services, "[::1]:%d inet n - n - - smtpd%s\n", port6, override)
		}
	}
	services.WriteString(PostfixServices)
	writeMTAFile(t, filepath.Join(dir, "etc", "main.cf"), main)
	writeMTAFile(t, filepath.Join(dir, "etc", "master.cf"), services.String())

	// "postfix check" creates the queue directories with the right
	// owners and modes (post-install create-missing).
	if out, err := exec.Command(postfixCmd, "-c", filepath.Join(dir, "etc"), "check").CombinedOutput(); err != nil {
		t.Fatalf("postfix check: %v\n%s", err, out)
	}
	// master -d stays in the foreground: the test owns its PID, and its
	// children are in its process group.
	p.proc = Start(t, exec.Command(master, "-c", filepath.Join(dir, "etc"), "-d"), filepath.Join(dir, "master.out"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix maillog:\n%s", p.Log())
		}
	})
	for _, a := range append(append([]string{}, p.Listeners...), p.Listeners6...) {
		if err := waitListening(p.proc.Cmd.Process.Pid, a, 30*time.Second); err != nil {
			t.Fatalf("postfix: %v\n%s\n%s", err, p.proc.Output(), p.Log())
		}
	}
	return p
}

// Log is Postfix's maillog so far.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "maillog"))
	return string(b)
}

// WaitLog waits up to timeout for a maillog line that matches re and
// returns it, or "".
func (p *Postfix) WaitLog(re *regexp.Regexp, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindString(p.Log()); m != "" {
			return m
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the master and its children (by PID and process group).
func (p *Postfix) Stop() { p.proc.Stop() }

// PostfixServices is Debian's master.cf without smtpd, local delivery and
// the pipe services: the tests' and the benchmarks' Postfix add their
// own smtpd lines to it.
const PostfixServices = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// mtaTempDir makes a temp dir named prefix-PID-*, world-traversable (the
// MTAs' processes run as other users), after removing the dirs of test
// binaries that died without cleaning up (a go test timeout, say).
func mtaTempDir(prefix string) (string, error) {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"-*"))
	for _, d := range old {
		f := strings.SplitN(strings.TrimPrefix(filepath.Base(d), prefix+"-"), "-", 2)
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s-%d-", prefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	return dir, os.Chmod(dir, 0o755)
}

func writeMTAFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mtaHost(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return h
}

func mtaPort(hostport string) string {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "25"
	}
	return p
}

// PostfixInstance is the part of main.cf that makes a private Postfix
// instance in dir (queue, data and log there; Debian's programs; no local
// delivery, no DNS, no delays), for StartPostfix and the benchmarks
// (bench/run); the rest of main.cf says what the instance does.
func PostfixInstance(dir string) string {
	return fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtputf8_enable = no
biff = no
in_flow_delay = 0
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s`, dir)
}
