package testserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SendmailRoot is where scripts/test-deps.sh unpacks Sendmail's .debs
// (they conflict with the postfix package), relative to the repository.
const SendmailRoot = ".cache/sendmail"

// SendmailHostname is the FQDN Sendmail runs under, in its own UTS
// namespace: without a dot in the hostname it sleeps about 60 s at start.
const SendmailHostname = "mx.test.example"

// SendmailOptions describe an isolated Sendmail instance.
type SendmailOptions struct {
	// Snippet is .mc text, normally the README's recommended lines
	// (examples/sendmail.mc.snippet); every milter socket spec in it
	// (inet:PORT@HOST, unix:/path, local:/path) is replaced by Milter.
	Snippet string
	// Milter is a Sendmail milter spec: "inet:PORT@127.0.0.1" or
	// "unix:/path".
	Milter string
	// RelayHost is "IP:PORT" where accepted mail is relayed (an SMTP
	// sink); Sendmail has no local domains. Not on 127.0.0.1: Sendmail
	// counts its interfaces' addresses as itself and will not relay there
	// (use 127.0.0.5, say).
	RelayHost string
	// IPv6 adds a listener on [::1].
	IPv6 bool
}

// Sendmail is a running sendmail -bD started by StartSendmail.
type Sendmail struct {
	// Dir holds sendmail.mc, sendmail.cf, the queue and the output.
	Dir string
	// Addr is "127.0.0.1:PORT"; Addr6 "[::1]:PORT" when IPv6 is set.
	Addr, Addr6 string
	// MC is the .mc the configuration was built from.
	MC string

	proc *Process
	log  *syslogSink
}

// StartSendmail builds sendmail.cf with m4 from an .mc that includes
// o.Snippet, runs "sendmail -bD" in a private UTS and mount namespace
// (hostname SendmailHostname, its own /etc/hosts), waits for its
// listeners and stops it by PID in t.Cleanup. Missing Sendmail, m4 or
// unshare go through Unavailable.
func StartSendmail(t testing.TB, o SendmailOptions) *Sendmail {
	t.Helper()
	root := filepath.Join(RepoRoot(t), SendmailRoot)
	bin := filepath.Join(root, "usr/libexec/sendmail/sendmail")
	cfDir := filepath.Join(root, "usr/share/sendmail/cf")
	if _, err := os.Stat(bin); err != nil {
		Unavailable(t, "sendmail is not unpacked in %s", root)
	}
	if _, err := os.Stat(filepath.Join(cfDir, "m4", "cf.m4")); err != nil {
		Unavailable(t, "sendmail-cf is not unpacked in %s", root)
	}
	m4 := Require(t, "m4")
	unshare := Require(t, "unshare")
	// The namespaces need CAP_SYS_ADMIN (root, or a privileged container):
	// without it sendmail would never listen and the wait for its port
	// would fail later with nothing to say why.
	if out, err := exec.Command(unshare, "--uts", "--mount", "true").CombinedOutput(); err != nil {
		Unavailable(t, "sendmail runs in its own UTS and mount namespaces, and `unshare --uts --mount true` fails (no CAP_SYS_ADMIN?): %v: %s",
			err, strings.TrimSpace(string(out)))
	}
	if o.Milter == "" || o.RelayHost == "" {
		t.Fatal("sendmail: Milter and RelayHost are required")
	}

	dir, err := mtaTempDir("antespam-sendmail")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Mkdir(filepath.Join(dir, "mqueue"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := &Sendmail{Dir: dir}
	port := FreePort(t, "127.0.0.1")
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	listen6 := ""
	if o.IPv6 {
		port6 := FreePort(t, "::1")
		s.Addr6 = net.JoinHostPort("::1", strconv.Itoa(port6))
		listen6 = fmt.Sprintf("DAEMON_OPTIONS(`Port=%d, Addr=::1, Name=MTA-v6, Family=inet6')dnl\n", port6)
	}
	writeMTAFile(t, filepath.Join(dir, "service.switch"), "hosts files\naliases files\n")
	writeMTAFile(t, filepath.Join(dir, "hosts"),
		"127.0.0.1\t"+SendmailHostname+" mx localhost\n::1\tlocalhost ip6-localhost\n")

	s.MC = fmt.Sprintf(`divert(-1)
# written by testserver.StartSendmail
divert(0)dnl
OSTYPE(`+"`linux'"+`)dnl
define(`+"`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe,TrustStickyBit'"+`)dnl
define(`+"`QUEUE_DIR', `%[1]s/mqueue'"+`)dnl
define(`+"`confPID_FILE', `%[1]s/sendmail.pid'"+`)dnl
define(`+"`ALIAS_FILE', `'"+`)dnl
define(`+"`STATUS_FILE', `'"+`)dnl
define(`+"`confHELP_FILE', `'"+`)dnl
define(`+"`confSERVICE_SWITCH_FILE', `%[1]s/service.switch'"+`)dnl
define(`+"`confHOSTS_FILE', `%[1]s/hosts'"+`)dnl
define(`+"`confDOMAIN_NAME', `%[2]s'"+`)dnl
define(`+"`SMART_HOST', `[%[3]s]'"+`)dnl
define(`+"`RELAY_MAILER_ARGS', `TCP $h %[4]s'"+`)dnl
define(`+"`ESMTP_MAILER_ARGS', `TCP $h %[4]s'"+`)dnl
define(`+"`confTO_IDENT', `0s'"+`)dnl
define(`+"`confLOG_LEVEL', `12'"+`)dnl
dnl Test machines run loaded: never refuse or queue for the load average.
define(`+"`confREFUSE_LA', `10000'"+`)dnl
define(`+"`confQUEUE_LA', `10000'"+`)dnl
define(`+"`confDELAY_LA', `0'"+`)dnl
FEATURE(`+"`no_default_msa'"+`)dnl
FEATURE(`+"`nocanonify'"+`)dnl
FEATURE(`+"`accept_unresolvable_domains'"+`)dnl
FEATURE(`+"`promiscuous_relay'"+`)dnl
DAEMON_OPTIONS(`+"`Port=%[5]d, Addr=127.0.0.1, Name=MTA'"+`)dnl
%[6]s
dnl examples/sendmail.mc.snippet, milter address substituted
%[7]s
MAILER(`+"`smtp'"+`)dnl
`, dir, SendmailHostname, mtaHost(o.RelayHost), mtaPort(o.RelayHost), port, listen6,
		SubstituteMilter(o.Snippet, o.Milter))
	writeMTAFile(t, filepath.Join(dir, "sendmail.mc"), s.MC)

	m4cmd := exec.Command(m4, "-D_CF_DIR_="+cfDir+"/", filepath.Join(cfDir, "m4", "cf.m4"), filepath.Join(dir, "sendmail.mc"))
	var stderr strings.Builder
	m4cmd.Stderr = &stderr
	cf, err := m4cmd.Output()
	if err != nil {
		t.Fatalf("m4 sendmail.mc: %v\n%s", err, stderr.String())
	}
	writeMTAFile(t, filepath.Join(dir, "sendmail.cf"), string(cf))

	// The packaged binary is set-group-ID (mail), and exec of a set-ID
	// binary clears the parent-death signal Start asks for: run a plain
	// copy, so that a test binary that dies (a go test timeout) takes
	// sendmail with it.
	plain := filepath.Join(dir, "sendmail")
	if err := copyExecutable(bin, plain); err != nil {
		t.Fatal(err)
	}
	// Sendmail logs only to syslog (/dev/log). In its mount namespace /dev
	// is replaced by dir/dev: the few device nodes it needs, bound from the
	// real /dev, and a datagram socket of the test's as /dev/log.
	s.log = s.listenSyslog(t, filepath.Join(dir, "dev"))
	// unshare without --fork execs: the PID the test starts becomes
	// sendmail's, and its per-connection children share its group.
	script := fmt.Sprintf(`set -e
hostname %[1]s
mount --bind %[2]s/hosts /etc/hosts
for n in null zero random urandom; do touch %[2]s/dev/$n; mount --bind /dev/$n %[2]s/dev/$n; done
ln -s /proc/self/fd %[2]s/dev/fd
ln -s /proc/self/fd/0 %[2]s/dev/stdin
ln -s /proc/self/fd/1 %[2]s/dev/stdout
ln -s /proc/self/fd/2 %[2]s/dev/stderr
mount --rbind %[2]s/dev /dev
exec %[3]s -bD -C %[2]s/sendmail.cf`, SendmailHostname, dir, plain)
	s.proc = Start(t, exec.Command(unshare, "--uts", "--mount", "/bin/sh", "-c", script), filepath.Join(dir, "sendmail.out"))
	for _, a := range []string{s.Addr, s.Addr6} {
		if a == "" {
			continue
		}
		if err := waitListening(s.proc.Cmd.Process.Pid, a, 30*time.Second); err != nil {
			t.Fatalf("sendmail: %v\n%s\nlog:\n%s", err, s.proc.Output(), s.Log())
		}
	}
	return s
}

// copyExecutable copies the file src to dst with mode 0755 (no set-ID bits).
func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// syslogSink collects what Sendmail sends to /dev/log.
type syslogSink struct {
	mu    sync.Mutex
	lines []string
}

// listenSyslog makes devDir with a datagram socket "log" in it, and keeps
// every message it receives until the test ends.
func (s *Sendmail) listenSyslog(t testing.TB, devDir string) *syslogSink {
	t.Helper()
	if err := os.Mkdir(devDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(devDir, "log"), Net: "unixgram"})
	if err != nil {
		t.Fatalf("sendmail syslog socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	l := &syslogSink{}
	go func() {
		buf := make([]byte, 64*1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			// "<PRI>Mon DD HH:MM:SS tag[pid]: text": keep from the date.
			line := strings.TrimRight(string(buf[:n]), "\n\x00")
			if i := strings.IndexByte(line, '>'); strings.HasPrefix(line, "<") && i > 0 {
				line = line[i+1:]
			}
			l.mu.Lock()
			l.lines = append(l.lines, line)
			l.mu.Unlock()
		}
	}()
	return l
}

// Log is what Sendmail has logged so far, one line per syslog message.
func (s *Sendmail) Log() string {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	return strings.Join(s.log.lines, "\n")
}

// Output is what sendmail wrote to stdout and stderr (little: it logs
// to syslog, see Log).
func (s *Sendmail) Output() string { return s.proc.Output() }

// Stop stops sendmail and its children (by PID and process group).
func (s *Sendmail) Stop() { s.proc.Stop() }
