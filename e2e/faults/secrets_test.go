package faults_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// TestBindPasswordNeverShown: the daemon binds with the password from a
// file (slapd sees the bind), and the password appears nowhere: not in
// the daemon's output at debug level through lookups, a reload, a
// directory outage and a reload with a wrong password, nor in /metrics,
// nor in what config-test and check print. The daemon, running as root
// here, warns that it does.
func TestBindPasswordNeverShown(t *testing.T) {
	raw := make([]byte, 12)
	rand.Read(raw)
	password := "pw-" + hex.EncodeToString(raw)
	wrong := "wrong-" + hex.EncodeToString(raw)
	pwFile := filepath.Join(t.TempDir(), "bind.pw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	e := startEnv(t, envOptions{slapd: testserver.SlapdOptions{RootPassword: password},
		bindPasswordFile: pwFile, extra: "log_level = \"debug\"", cache: shortTTLs,
	})
	if got := ask(t, e.d, userAddr(0), "nobody@example.com"); got[0] != accept || got[1] != reject {
		t.Fatalf("lookups: %q", got)
	}
	if !strings.Contains(e.slapd.Log(), `BIND dn="`+testserver.SlapdRootDN+`" method=128`) {
		t.Error("slapd saw no simple bind as the root DN")
	}
	if os.Geteuid() == 0 {
		if !strings.Contains(e.d.Output(), "running as root") {
			t.Errorf("running as root and no warning:\n%s", e.d.Output())
		}
	} else if strings.Contains(e.d.Output(), "running as root") {
		t.Error("root warning while not root")
	}
	if !strings.Contains(e.d.Output(), "world-readable") {
		t.Errorf("no warning about the world-readable password file:\n%s", e.d.Output())
	}

	reloaded := func(n int, line string) {
		t.Helper()
		if err := e.d.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !testserver.Eventually(10*time.Second, func() bool { return strings.Count(e.d.Output(), line) >= n }) {
			t.Fatalf("%q not logged:\n%s", line, e.d.Output())
		}
	}
	reloaded(1, "config reloaded")
	ask(t, e.d, userAddr(1), userAddr(2))
	e.slapd.Stop()
	time.Sleep(1100 * time.Millisecond)
	if got := ask(t, e.d, userAddr(3)); got[0] != tempfail {
		t.Errorf("slapd down, new user: %s, want 451", got[0])
	}
	e.slapd.Start()
	// A wrong password in the file: the reload's bind fails, the old
	// stack stays and serves.
	if err := os.WriteFile(pwFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded(1, "keeping the old one")
	if !testserver.Eventually(20*time.Second, func() bool { return ask(t, e.d, userAddr(4))[0] == accept }) {
		t.Errorf("the old stack does not serve after a reload with a wrong password")
	}
	body := ""
	for k := range metricsAll(t, e.metrics) {
		body += k + "\n"
	}

	cfgOut, cfgErr, code := testserver.RunDaemonCommand(t, "config-test", "-config", e.cfg)
	if code != 0 {
		t.Errorf("config-test: exit %d: %s %s", code, cfgOut, cfgErr)
	}
	chkOut, chkErr, _ := testserver.RunDaemonCommand(t, "check", "-config", e.cfg, "rcpt", userAddr(5))
	jsonOut, jsonErr, _ := testserver.RunDaemonCommand(t, "check", "-json", "-no-cache", "-config", e.cfg, "rcpt", userAddr(6))

	out := e.d.Output()
	for name, text := range map[string]string{
		"daemon output": out, "/metrics": body,
		"config-test": cfgOut + cfgErr, "check": chkOut + chkErr, "check -json": jsonOut + jsonErr,
	} {
		for _, secret := range []string{password, wrong} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds the bind password %q:\n%s", name, secret, text)
			}
		}
	}
}

// TestAbsurdConfigExits2: config-test and serve on a file with an
// invalid value on nearly every line (config/testdata/every-error.toml,
// wrong types included) print every error as FILE:LINE: key: message and
// exit 2; the daemon does not start.
func TestAbsurdConfigExits2(t *testing.T) {
	path := filepath.Join(testserver.RepoRoot(t), "config", "testdata", "every-error.toml")
	stdout, stderr, code := testserver.RunDaemonCommand(t, "config-test", "-config", path)
	if code != 2 || strings.Contains(stdout, "config OK") {
		t.Fatalf("config-test: exit %d, stdout %q; want exit 2", code, stdout)
	}
	lines := 0
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, path+":") {
			lines++
		}
	}
	for _, want := range []string{
		path + ":1: listen: ", path + ":6: decision_timeout: ", path + ":8: max_sessions: ",
		path + ":12: bogus: unknown key", path + ":24: recipients.reject_reply: ", path + ":44: ldap.max_in_flight: ",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("config-test output lacks %q", want)
		}
	}
	if lines < 30 {
		t.Errorf("%d error lines, want every error (30 or more):\n%s", lines, stderr)
	}
	d := testserver.StartDaemonWith(t, path, testserver.DaemonOptions{NoWait: true})
	if !d.Wait(15 * time.Second) {
		t.Fatal("serve still running on an invalid config")
	}
	if d.ExitCode() != 2 {
		t.Errorf("serve: exit %d, want 2:\n%s", d.ExitCode(), d.Output())
	}
}
