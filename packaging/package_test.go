package packaging_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

const (
	pkg      = "antespam-milter"
	confDir  = "/etc/antespam-milter"
	confFile = "/etc/antespam-milter/antespam-milter.toml"
	binary   = "/usr/sbin/antespam-milter"
	unitDeb  = "/lib/systemd/system/antespam-milter.service"
	unitRPM  = "/usr/lib/systemd/system/antespam-milter.service"
)

// build is one make run ("package" for both packages, or "deb") into its
// own directory, in the background.
type build struct {
	target  string
	version string
	dir     string
	deb     string
	rpm     string
	done    chan struct{}
	err     string // make's output when it failed
	took    time.Duration
}

// startMake starts `make TARGET VERSION=version` into a temporary
// directory. Several at once get more of a busy machine's CPU.
func startMake(t *testing.T, target, version string) *build {
	t.Helper()
	mk := testserver.Require(t, "make")
	root := testserver.RepoRoot(t)
	b := &build{target: target, version: version, dir: t.TempDir(), done: make(chan struct{})}
	t.Cleanup(func() { <-b.done }) // before the directory goes
	go func() {
		defer close(b.done)
		start := time.Now()
		cmd := exec.Command(mk, "-C", root, target, "VERSION="+version,
			"BIN="+filepath.Join(b.dir, "antespam-milter"), "DIST="+b.dir)
		// Under `make test`, the outer make's flags and variables stay out.
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
		})
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = string(out) + err.Error()
		}
		b.took = time.Since(start)
	}()
	return b
}

// wait waits for the make run and finds its packages.
func (b *build) wait(t *testing.T) {
	t.Helper()
	<-b.done
	if b.err != "" {
		t.Fatalf("make %s VERSION=%s:\n%s", b.target, b.version, b.err)
	}
	t.Logf("make %s VERSION=%s: %s", b.target, b.version, b.took.Round(time.Millisecond))
	b.deb = onlyFile(t, b.dir, "*.deb")
	if b.target == "package" {
		b.rpm = onlyFile(t, b.dir, "*.rpm")
	}
}

func onlyFile(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) != 1 {
		t.Fatalf("want one %s in %s, found %q (%v)", pattern, dir, m, err)
	}
	return m[0]
}

// run runs a command with stdin closed and returns its combined output.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// dpkg runs dpkg, retrying while another dpkg holds the lock.
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	for i := 0; ; i++ {
		out, err := run("dpkg", args...)
		if err == nil {
			return out
		}
		if i < 30 && strings.Contains(out, "lock") {
			time.Sleep(time.Second)
			continue
		}
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// status is the package's dpkg status abbreviation, trimmed ("ii", "rc"),
// or "" when dpkg does not know the package.
func status(t *testing.T) string {
	t.Helper()
	out, err := run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// TestPackages builds the .deb and the .rpm, and a .deb of a later
// version; installs the first .deb on this machine, checks what it
// installed, upgrades to the second with an edited config, removes and
// purges it; runs lintian; and compares the .rpm's layout. It needs root
// and leaves the machine as it found it, except for the antespam-milter
// user and group, which a purge keeps (Debian policy: files elsewhere may
// still belong to them).
func TestPackages(t *testing.T) {
	if os.Geteuid() != 0 {
		testserver.Unavailable(t, "installing the .deb needs root")
	}
	for _, p := range []string{"dpkg", "dpkg-deb", "dpkg-query", "lintian", "rpm", "systemd-analyze"} {
		testserver.Require(t, p)
	}
	lockMachine(t)
	if s := status(t); s != "" && s != "un" && s != "pn" {
		t.Fatalf("%s is already on this machine (dpkg status %q); the test installs and purges it: dpkg -P %s first", pkg, s, pkg)
	}
	// Start from no user, so that the install is seen creating it.
	if _, err := user.Lookup(pkg); err == nil {
		mustRun(t, "userdel", pkg)
	}
	if _, err := user.LookupGroup(pkg); err == nil {
		mustRun(t, "groupdel", pkg)
	}

	start := time.Now()
	// A is the install and the .rpm to compare; B, a later version, only
	// the upgrade target, built while A is checked.
	a := startMake(t, "package", "0.0.1+test.a")
	b := startMake(t, "deb", "0.0.2+test.b")

	t.Run("preinst without systemd-sysusers", func(t *testing.T) {
		preinstFallback(t, "adduser", "systemd-sysusers")
	})
	t.Run("preinst without systemd-sysusers and adduser", func(t *testing.T) {
		preinstFallback(t, "useradd", "systemd-sysusers", "adduser")
	})

	a.wait(t)

	// lintian takes a while: run it alongside the install checks.
	var lintOut bytes.Buffer
	// --show-overrides lists the accepted tags (O:) but makes lintian fail on
	// overridden errors: the E: and W: lines below decide instead.
	lint := exec.Command("lintian", "--display-info", "--pedantic", "--show-overrides", "--fail-on", "none", a.deb)
	lint.Stdout, lint.Stderr = &lintOut, &lintOut
	if err := lint.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if lint.ProcessState == nil { // the test stopped early
			_ = lint.Process.Kill()
			_ = lint.Wait()
		}
	})
	t.Run("rpm", func(t *testing.T) { checkRPM(t, a) })

	t.Cleanup(func() {
		if s := status(t); s != "" && s != "un" && s != "pn" {
			if out, err := run("dpkg", "-P", pkg); err != nil {
				t.Errorf("cleanup: dpkg -P %s: %v\n%s", pkg, err, out)
			}
		}
	})
	dpkg(t, "-i", a.deb)
	if !t.Run("installed", func(t *testing.T) { checkInstalled(t, a) }) {
		t.Fatal("the installed package is broken; not testing upgrade and removal")
	}

	t.Run("upgrade keeps an edited config", func(t *testing.T) {
		edited := strings.Replace(readFile(t, confFile), `log_level = "info"`, `log_level = "debug"`, 1) + "\n# edited by the package test\n"
		if err := os.WriteFile(confFile, []byte(edited), 0o640); err != nil {
			t.Fatal(err)
		}
		b.wait(t)
		dpkg(t, "-i", b.deb)
		if got := readFile(t, confFile); got != edited {
			t.Errorf("%s after the upgrade is not the edited one:\n%s", confFile, got)
		}
		if _, err := os.Stat(confFile + ".dpkg-dist"); err == nil {
			t.Errorf("%s.dpkg-dist appeared though the shipped config did not change", confFile)
		}
		checkVersion(t, b.version)
		// The edited config is still valid and still readable by the daemon.
		configTestAsDaemon(t)
	})

	t.Run("remove keeps the config, purge deletes it", func(t *testing.T) {
		// An admin enabled it; removal must not leave a dangling symlink.
		wants := "/etc/systemd/system/multi-user.target.wants/antespam-milter.service"
		mustRun(t, "systemctl", "enable", "antespam-milter.service")
		t.Cleanup(func() { os.Remove(wants) })
		if _, err := os.Lstat(wants); err != nil {
			t.Fatalf("systemctl enable made no link: %v", err)
		}
		dpkg(t, "-r", pkg)
		if _, err := os.Lstat(wants); err == nil {
			t.Errorf("%s is still there after dpkg -r", wants)
		}
		if s := status(t); s != "rc" {
			t.Errorf("dpkg status after -r = %q, want rc", s)
		}
		for _, p := range []string{binary, unitDeb, "/usr/share/man/man8/antespam-milter.8.gz", "/usr/share/doc/antespam-milter"} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s is still there after dpkg -r", p)
			}
		}
		if !strings.Contains(readFile(t, confFile), "# edited by the package test") {
			t.Errorf("dpkg -r did not keep the edited %s", confFile)
		}
		// An admin's own file there (a bind password, say) goes with the purge too.
		if err := os.WriteFile(filepath.Join(confDir, "bind-password"), []byte("secret\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		dpkg(t, "-P", pkg)
		if s := status(t); s != "" && s != "un" && s != "pn" {
			t.Errorf("dpkg status after -P = %q", s)
		}
		if _, err := os.Lstat(confDir); err == nil {
			t.Errorf("%s is still there after dpkg -P", confDir)
		}
		if _, err := user.Lookup(pkg); err != nil {
			t.Errorf("the %s user is gone after the purge; policy keeps it: %v", pkg, err)
		}
	})

	if err := lint.Wait(); err != nil {
		t.Errorf("lintian %s: %v\n%s", filepath.Base(a.deb), err, lintOut.String())
	}
	var overridden []string
	for _, l := range strings.Split(lintOut.String(), "\n") {
		switch {
		case strings.HasPrefix(l, "E: "), strings.HasPrefix(l, "W: "):
			t.Errorf("lintian: %s", l)
		case strings.HasPrefix(l, "O: "):
			overridden = append(overridden, strings.TrimPrefix(l, "O: "+pkg+": "))
		case strings.HasPrefix(l, "I: "), strings.HasPrefix(l, "P: "):
			t.Logf("lintian: %s", l)
		}
	}
	t.Logf("lintian: accepted (packaging/lintian-overrides): %s", strings.Join(overridden, "; "))
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

// lockMachine makes concurrent runs of this test on one machine (two
// `make test` at once) take turns: each installs and purges the package.
func lockMachine(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/run/lock/antespam-milter-package-test.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock, after the other cleanups
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// preinstFallback runs packaging/scripts/preinstall.sh as rpm's %pre
// would on a first install, with the hidden programs out of PATH, checks
// the user and group it made (way names the path taken) and deletes them.
func preinstFallback(t *testing.T, way string, hidden ...string) {
	bin := t.TempDir()
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if slices.Contains(hidden, e.Name()) {
				continue
			}
			// The first directory in PATH order wins, as for the shell.
			_ = os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(bin, e.Name()))
		}
	}
	script := filepath.Join(testserver.RepoRoot(t), "packaging", "scripts", "preinstall.sh")
	defer func() {
		_, _ = run("userdel", pkg)
		_, _ = run("groupdel", pkg)
	}()
	cmd := exec.Command("/bin/sh", "-x", script, "1")
	cmd.Env = []string{"PATH=" + bin}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("preinstall.sh 1: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), way) {
		t.Errorf("preinstall.sh did not use %s:\n%s", way, out)
	}
	checkUser(t)
	// A second run (an upgrade) leaves the user alone.
	if out, err := exec.Command("/bin/sh", script, "2").CombinedOutput(); err != nil {
		t.Errorf("preinstall.sh 2: %v\n%s", err, out)
	}
}

// checkUser checks the antespam-milter system user and its own group.
func checkUser(t *testing.T) {
	t.Helper()
	u, err := user.Lookup(pkg)
	if err != nil {
		t.Fatalf("no %s user: %v", pkg, err)
	}
	g, err := user.LookupGroup(pkg)
	if err != nil {
		t.Fatalf("no %s group: %v", pkg, err)
	}
	if u.Gid != g.Gid {
		t.Errorf("user %s has gid %s, want its own group's %s", pkg, u.Gid, g.Gid)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid == 0 || uid >= 1000 {
		t.Errorf("user %s has uid %d, want a system uid", pkg, uid)
	}
	passwd := mustRun(t, "getent", "passwd", pkg)
	if !strings.HasSuffix(strings.TrimSpace(passwd), "nologin") {
		t.Errorf("user %s can log in: %s", pkg, passwd)
	}
}

// checkInstalled checks the files, the user, the conffiles and the
// installed binary right after `dpkg -i`.
func checkInstalled(t *testing.T, bd *build) {
	if s := status(t); s != "ii" {
		t.Fatalf("dpkg status = %q, want ii", s)
	}
	checkUser(t)

	files := []struct {
		path         string
		mode         fs.FileMode
		owner, group string
	}{
		{binary, 0o755, "root", "root"},
		{confDir, fs.ModeDir | 0o755, "root", "root"},
		{confFile, 0o640, "root", pkg},
		{confDir + "/recipients", 0o640, "root", pkg},
		{confDir + "/hosts", 0o640, "root", pkg},
		{unitDeb, 0o644, "root", "root"},
		{"/usr/lib/sysusers.d/antespam-milter.conf", 0o644, "root", "root"},
		{"/usr/share/man/man8/antespam-milter.8.gz", 0o644, "root", "root"},
		{"/usr/share/doc/antespam-milter/README.md", 0o644, "root", "root"},
		{"/usr/share/doc/antespam-milter/changelog.gz", 0o644, "root", "root"},
		{"/usr/share/doc/antespam-milter/copyright", 0o644, "root", "root"},
		{"/usr/share/doc/antespam-milter/examples/postfix-chroot.conf", 0o644, "root", "root"},
	}
	for _, f := range files {
		fi, err := os.Lstat(f.path)
		if err != nil {
			t.Errorf("missing: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		owner, group := name(user.LookupId(strconv.Itoa(int(st.Uid)))), groupName(strconv.Itoa(int(st.Gid)))
		if fi.Mode() != f.mode || owner != f.owner || group != f.group {
			t.Errorf("%s: %s %s:%s, want %s %s:%s", f.path, fi.Mode(), owner, group, f.mode, f.owner, f.group)
		}
	}
	man := gunzip(t, "/usr/share/man/man8/antespam-milter.8.gz")
	for _, want := range []string{".TH antespam-milter 8 ", "SYNOPSIS", "config-test", "cache purge", "EXIT STATUS", "SIGHUP", "postfix-chroot.conf"} {
		if !strings.Contains(man, want) {
			t.Errorf("the man page lacks %q", want)
		}
	}
	if cl := gunzip(t, "/usr/share/doc/antespam-milter/changelog.gz"); !strings.HasPrefix(cl, "antespam-milter (") {
		t.Errorf("changelog.gz is not a Debian changelog: %.60q", cl)
	}

	conffiles := mustRun(t, "dpkg-query", "-W", "-f=${Conffiles}", pkg)
	for _, f := range []string{confFile, confDir + "/recipients", confDir + "/hosts"} {
		if !strings.Contains(conffiles, f+" ") {
			t.Errorf("%s is not a conffile:\n%s", f, conffiles)
		}
	}

	checkVersion(t, bd.version)
	out, err := run(binary, "config-test", "-config", confFile)
	if err != nil {
		t.Errorf("%s config-test -config %s: %v\n%s", binary, confFile, err, out)
	}
	configTestAsDaemon(t)
	t.Run("serve as the unit would", serveAsUnit)

	// With the binary installed, verify finds nothing missing.
	out, err = run("systemd-analyze", "verify", unitDeb)
	if err != nil || strings.Contains(out, "antespam-milter") {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitDeb, err, out)
	}
}

// checkVersion checks that the installed package and binary agree on v.
func checkVersion(t *testing.T, v string) {
	t.Helper()
	if got := mustRun(t, "dpkg-query", "-W", "-f=${Version}", pkg); got != v {
		t.Errorf("dpkg-query Version = %q, want %q", got, v)
	}
	out, err := run(binary, "version")
	if err != nil || !strings.Contains(" "+strings.TrimSpace(out)+" ", " "+v+" ") {
		t.Errorf("%s version = %q (%v), want it to print %s", binary, out, err, v)
	}
}

// daemonCredential is the antespam-milter user and group, as the unit's
// User= and Group= set them (no supplementary groups).
func daemonCredential(t *testing.T) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(pkg)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// serveAsUnit runs the installed binary the way antespam-milter.service
// does: its user, its command line, an empty environment but for
// NOTIFY_SOCKET, cwd /, a unix socket in /run/antespam-milter (what
// RuntimeDirectory= makes) with socket_group set. It checks READY=1, the
// socket's mode and group, RELOADING=1 on SIGHUP (ExecReload), and that
// SIGTERM ends it with STOPPING=1 and exit 0. It runs under strace: every
// system call the daemon made must pass the unit's SystemCallFilter=
// (blocked calls would fail with EPERM under systemd).
func serveAsUnit(t *testing.T) {
	strace := testserver.Require(t, "strace")
	cred := daemonCredential(t)
	runDir := "/run/antespam-milter"
	os.RemoveAll(runDir) // a leftover of a killed run; systemd makes it afresh too
	if err := os.Mkdir(runDir, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	if err := os.Chown(runDir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	listen := filepath.Join(runDir, "milter.sock")
	conf := filepath.Join(confDir, "package-test.toml")
	data := strings.NewReplacer(
		`listen = "inet:8890@127.0.0.1"`, `listen = "unix:`+listen+`"`,
		`socket_group = ""`, `socket_group = "`+pkg+`"`,
	).Replace(readFile(t, confFile))
	if err := os.WriteFile(conf, []byte(data), 0o640); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(conf) })
	if err := os.Chown(conf, 0, int(cred.Gid)); err != nil {
		t.Fatal(err)
	}

	// The notify socket and the trace, in a directory of the daemon's
	// user; a short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "n.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	if err := errors.Join(os.Chown(dir, int(cred.Uid), int(cred.Gid)), os.Chown(sock, int(cred.Uid), int(cred.Gid))); err != nil {
		t.Fatal(err)
	}
	expect := func(state string) {
		t.Helper()
		buf := make([]byte, 4096)
		notify.SetReadDeadline(time.Now().Add(15 * time.Second))
		for {
			n, err := notify.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s on NOTIFY_SOCKET: %v", state, err)
			}
			if strings.Contains(string(buf[:n]), state) {
				return
			}
		}
	}

	trace := filepath.Join(dir, "trace")
	cmd := exec.Command(strace, "-f", "-qq", "-o", trace, binary, "serve", "-config", conf)
	cmd.Env = []string{"NOTIFY_SOCKET=" + sock}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	p := testserver.Start(t, cmd, filepath.Join(t.TempDir(), "serve.log"))
	expect("READY=1")

	fi, err := os.Stat(listen)
	if err != nil {
		t.Fatalf("no socket: %v\n%s", err, p.Output())
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != fs.ModeSocket|0o660 || st.Uid != cred.Uid || st.Gid != cred.Gid {
		t.Errorf("%s: %s %d:%d, want %s %d:%d", listen, fi.Mode(), st.Uid, st.Gid, fs.ModeSocket|0o660, cred.Uid, cred.Gid)
	}
	c, err := net.Dial("unix", listen)
	if err != nil {
		t.Fatalf("connect to %s: %v", listen, err)
	}
	c.Close()

	// The daemon is strace's child: its pid starts the trace's lines.
	first, _, _ := strings.Cut(readFile(t, trace), " ")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatalf("no pid in the trace: %q", first)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	expect("RELOADING=1")
	expect("READY=1")
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("STOPPING=1")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after SIGTERM: %v\n%s", err, p.Output())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve still running 15s after SIGTERM\n%s", p.Output())
	}

	allowed := unitSyscalls(t, filepath.Join(testserver.RepoRoot(t), "antespam-milter.service"))
	used := tracedSyscalls(t, trace)
	for _, sc := range used {
		if !allowed[sc] {
			t.Errorf("the daemon called %s, which the unit's SystemCallFilter= blocks", sc)
		}
	}
	t.Logf("%d distinct system calls, all allowed by the unit", len(used))
}

var syscallRE = regexp.MustCompile(`^[0-9]+ +([a-z0-9_]+)\(`)

// tracedSyscalls lists the system calls in an `strace -f` output file.
func tracedSyscalls(t *testing.T, path string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, l := range strings.Split(readFile(t, path), "\n") {
		if m := syscallRE.FindStringSubmatch(l); m != nil {
			seen[m[1]] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// unitSyscalls is the set of system calls the unit's SystemCallFilter=
// lines allow, groups expanded by systemd-analyze: the first line is an
// allow list; later lines add to it, or remove with ~, in order.
func unitSyscalls(t *testing.T, unit string) map[string]bool {
	t.Helper()
	groups := map[string][]string{}
	group := ""
	// stdout only: a note on stderr could split a line.
	out, err := exec.Command("systemd-analyze", "syscall-filter", "--no-pager").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "@"):
			group = strings.Fields(l)[0]
		case group != "" && strings.HasPrefix(l, "    ") && !strings.HasPrefix(strings.TrimSpace(l), "#"):
			groups[group] = append(groups[group], strings.TrimSpace(l))
		}
	}
	var expand func(name string) []string
	expand = func(name string) []string {
		if !strings.HasPrefix(name, "@") {
			return []string{name}
		}
		var out []string
		for _, m := range groups[name] {
			out = append(out, expand(m)...)
		}
		if out == nil {
			t.Fatalf("systemd-analyze syscall-filter knows no %s", name)
		}
		return out
	}
	allowed := map[string]bool{}
	first := true
	for _, l := range strings.Split(readFile(t, unit), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(l), "SystemCallFilter=")
		if !ok {
			continue
		}
		deny := strings.HasPrefix(v, "~")
		if first && deny {
			t.Fatalf("%s: the first SystemCallFilter= is a deny list; this check expects an allow list", unit)
		}
		first = false
		for _, name := range strings.Fields(strings.TrimPrefix(v, "~")) {
			for _, sc := range expand(name) {
				allowed[sc] = !deny
			}
		}
	}
	return allowed
}

// configTestAsDaemon runs config-test as the daemon's user and group: the
// unit reads the config (0640 root:antespam-milter) as them.
func configTestAsDaemon(t *testing.T) {
	t.Helper()
	cmd := exec.Command(binary, "config-test", "-config", confFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: daemonCredential(t)}
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("config-test as user %s: %v\n%s", pkg, err, out)
	}
}

func name(u *user.User, err error) string {
	if err != nil {
		return "?" + err.Error()
	}
	return u.Username
}

func groupName(gid string) string {
	g, err := user.LookupGroupId(gid)
	if err != nil {
		return gid
	}
	return g.Name
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	data, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(data)
}

// checkRPM compares the .rpm's files, modes and owners with the .deb's
// (the unit directory aside) and checks its version, config flags and
// scripts.
func checkRPM(t *testing.T, bd *build) {
	rpmFiles := map[string]string{}
	out := mustRun(t, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]`, bd.rpm)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("rpm -qp: unexpected line %q", l)
		}
		flags := ""
		if len(f) > 3 {
			flags = f[3]
		}
		path := f[0]
		if path == unitRPM {
			path = unitDeb
		}
		rpmFiles[path] = f[1] + " " + f[2] + " " + flags
	}

	debFiles := map[string]string{}
	conf := map[string]bool{}
	for _, c := range strings.Fields(mustRun(t, "sh", "-c", "dpkg-deb --ctrl-tarfile \"$1\" | tar -xO ./conffiles", "sh", bd.deb)) {
		conf[c] = true
	}
	for _, l := range strings.Split(strings.TrimSpace(mustRun(t, "dpkg-deb", "-c", bd.deb)), "\n") {
		// drwxr-xr-x root/root 0 2026-11-26 21:24 ./etc/antespam-milter/
		f := strings.Fields(l)
		path := strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "."), "/")
		if f[0][0] == 'd' && path != confDir {
			continue // rpm lists only the directories it owns
		}
		if path == "/usr/share/lintian/overrides/antespam-milter" {
			continue // deb only
		}
		flags := ""
		if conf[path] {
			flags = "cn" // %config(noreplace)
		}
		debFiles[path] = f[0] + " " + strings.Replace(f[1], "/", ":", 1) + " " + flags
	}
	if d, r := sortedKeys(debFiles), sortedKeys(rpmFiles); strings.Join(d, "\n") != strings.Join(r, "\n") {
		t.Errorf("the .deb and the .rpm install different files:\ndeb:\n%s\nrpm:\n%s", strings.Join(d, "\n"), strings.Join(r, "\n"))
	}
	for path, want := range debFiles {
		if got, ok := rpmFiles[path]; ok && got != want {
			t.Errorf("%s: rpm %q, deb %q", path, got, want)
		}
	}

	if v := mustRun(t, "rpm", "-qp", "--qf", "%{VERSION}", bd.rpm); v != bd.version {
		t.Errorf("rpm VERSION = %q, want %q", v, bd.version)
	}
	scripts := mustRun(t, "rpm", "-qp", "--scripts", bd.rpm)
	for _, want := range []string{
		"preinstall scriptlet", "systemd-sysusers", "useradd",
		"postinstall scriptlet", "try-restart",
		"preuninstall scriptlet", "stop antespam-milter.service",
		"postuninstall scriptlet", "daemon-reload",
	} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm -qp --scripts lacks %q:\n%s", want, scripts)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
