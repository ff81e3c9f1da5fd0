package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// maxExposure is the highest `systemd-analyze security` score the unit may
// have. It measured 1.4 (systemd 252): what remains is network access
// (AF_INET*, no IPAddressDeny, which LDAP, memcached and the MTA need),
// PrivateUsers and fchownat for socket_group (see the unit), the host's
// root directory and ProtectClock's read access to the RTC.
const maxExposure = 1.4

var exposureRE = regexp.MustCompile(`Overall exposure level for antespam-milter\.service: ([0-9.]+)`)

// TestUnitSecurity scores the unit offline and checks the settings the
// daemon relies on.
func TestUnitSecurity(t *testing.T) {
	analyze := testserver.Require(t, "systemd-analyze")
	unit := filepath.Join(testserver.RepoRoot(t), "antespam-milter.service")
	out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security --offline=yes: exposure %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure %.1f > %.1f; what systemd-analyze flags:\n%s", score, maxExposure, flagged(string(out)))
	}

	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"Type=notify",
		"ExecStart=/usr/sbin/antespam-milter serve -config /etc/antespam-milter/antespam-milter.toml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"User=antespam-milter",
		"Group=antespam-milter",
		"RuntimeDirectory=antespam-milter",
		"RuntimeDirectoryMode=0750",
		"Restart=on-failure",
		"RestartPreventExitStatus=2",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
		"CapabilityBoundingSet=",
		"SystemCallFilter=@system-service",
		"SystemCallFilter=~@privileged @resources",
		"SystemCallFilter=fchownat",
		"MemoryDenyWriteExecute=yes",
		"WantedBy=multi-user.target",
	} {
		if !lines[want] {
			t.Errorf("antespam-milter.service lacks %q", want)
		}
	}
	// ExecStartPre= would restart-loop: RestartPreventExitStatus covers
	// the main process only.
	if strings.Contains(string(data), "\nExecStartPre=") {
		t.Error("antespam-milter.service has an ExecStartPre=")
	}
}

// flagged keeps the lines of a systemd-analyze security report that cost.
func flagged(report string) string {
	var b strings.Builder
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "✗") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
