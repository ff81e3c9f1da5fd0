package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/antespam/antespam-milter/internal/testserver"
)

// The directory every benchmark slapd serves: the layout and slapd.conf of
// internal/testserver (dc=example,dc=com, ou=people, ou=hosts), with
// users user0..user<n-1> whose mail is user<i>@example.com.
const (
	suffix = testserver.SlapdSuffix
	domain = "example.com"
)

type slapd struct {
	p    *proc
	url  string
	addr string
	dir  string
}

// startSlapd seeds n users with slapadd and starts slapd on a free port;
// stats turns on slapd's stats log (one line per search, for counting).
// extra are more addresses to list (uid "x<i>").
func startSlapd(dir string, n int, stats bool, extra ...string) (*slapd, error) {
	sd := filepath.Join(dir, "slapd")
	if err := os.MkdirAll(filepath.Join(sd, "data"), 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(sd, "slapd.conf")
	if err := os.WriteFile(conf, []byte(testserver.SlapdConfig(sd, "", "secret", 256<<20)), 0o600); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n", suffix)
	fmt.Fprintf(&b, "dn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n\n", suffix)
	fmt.Fprintf(&b, "dn: ou=hosts,%s\nobjectClass: organizationalUnit\nou: hosts\n\n", suffix)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "dn: uid=user%[1]d,ou=people,%[2]s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\nuid: user%[1]d\ncn: user%[1]d\nsn: user%[1]d\nmail: user%[1]d@%[3]s\n\n", i, suffix, domain)
	}
	for i, m := range extra {
		fmt.Fprintf(&b, "dn: uid=x%[1]d,ou=people,%[2]s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\nuid: x%[1]d\ncn: x%[1]d\nsn: x%[1]d\nmail: %[3]s\n\n", i, suffix, m)
	}
	// One listed host, so that host lookups have something to find.
	fmt.Fprintf(&b, "dn: cn=192.0.2.66,ou=hosts,%s\nobjectClass: device\nobjectClass: ipHost\ncn: 192.0.2.66\nipHostNumber: 192.0.2.66\n", suffix)
	ldif := filepath.Join(sd, "seed.ldif")
	if err := os.WriteFile(ldif, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.Command("slapadd", "-q", "-f", conf, "-l", ldif).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("slapadd: %v\n%s", err, out)
	}
	port := freePort()
	s := &slapd{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: sd}
	s.url = "ldap://" + s.addr
	level := "0"
	if stats {
		level = "stats"
	}
	p, err := start(dir, "slapd", "", "/usr/sbin/slapd", "-f", conf, "-h", s.url, "-d", level)
	if err != nil {
		return nil, err
	}
	s.p = p
	return s, waitTCP(p, s.addr, 15*time.Second)
}

// searches counts the searches in slapd's stats log whose line contains
// token (all searches when token is "").
func (s *slapd) searches(token string) int {
	b, _ := os.ReadFile(s.p.log)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, " SRCH base=") && strings.Contains(line, token) {
			n++
		}
	}
	return n
}

func startMemcached(dir string) (string, *proc, error) {
	port := freePort()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := start(dir, "memcached-"+strconv.Itoa(port), "", "memcached", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "256", "-c", "8192", "-t", "2", "-u", "root")
	if err != nil {
		return "", nil, err
	}
	return addr, p, waitTCP(p, addr, 10*time.Second)
}

// daemonConfig describes one antespam-milter setup.
type daemonConfig struct {
	LDAP      string   // slapd URL
	Memcached []string // memcached servers; none: no memcached tier
	CacheSize int      // 0: no LRU
	MaxSess   int
	LogLevel  string
	Extra     string // more TOML, appended
	Bin       string // daemon binary; bin/antespam-milter when empty
	Env       []string
}

type daemon struct {
	p       *proc
	addr    string // milter address for antespam-bench
	metrics string // host:port of /metrics
}

// startDaemon writes a config and starts bin/antespam-milter serve.
func startDaemon(dir, name, cpus string, c daemonConfig) (*daemon, error) {
	port, mport := freePort(), freePort()
	d := &daemon{
		addr:    fmt.Sprintf("inet:%d@127.0.0.1", port),
		metrics: net.JoinHostPort("127.0.0.1", strconv.Itoa(mport)),
	}
	if c.MaxSess == 0 {
		c.MaxSess = 10000
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	mc := ""
	if len(c.Memcached) > 0 {
		mc = fmt.Sprintf("[memcache]\nservers = [%q]\nttl = \"1h\"\nnegative_ttl = \"1h\"\nmax_idle_conns = 512\ntimeout = \"500ms\"\n", strings.Join(c.Memcached, `", "`))
	}
	cfg := fmt.Sprintf(`# written by bench/run for %[1]s
listen = %[2]q
source = "ldap"
max_sessions = %[3]d
metrics_listen = %[4]q
log_level = %[5]q

[recipients]
domains = [%[6]q]

[cache]
size = %[7]d
ttl = "1h"
negative_ttl = "1h"
stale_max = "24h"

[ldap]
urls = [%[8]q]
base_dn = %[9]q
%[10]s
%[11]s`, name, d.addr, c.MaxSess, d.metrics, c.LogLevel, domain, c.CacheSize, c.LDAP, suffix, mc, c.Extra)
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	bin := c.Bin
	if bin == "" {
		bin = binPath("antespam-milter")
	}
	p, err := startEnv(dir, name, cpus, c.Env, bin, "serve", "-config", path)
	if err != nil {
		return nil, err
	}
	d.p = p
	if err := waitTCP(p, fmt.Sprintf("127.0.0.1:%d", port), 15*time.Second); err != nil {
		return nil, err
	}
	return d, nil
}

// startNoop starts the no-op milter of bench/noop.
func startNoop(dir, name, cpus string) (*daemon, error) {
	port := freePort()
	d := &daemon{addr: fmt.Sprintf("inet:%d@127.0.0.1", port)}
	p, err := start(dir, name, cpus, binPath("antespam-noop"), "-listen", d.addr)
	if err != nil {
		return nil, err
	}
	d.p = p
	return d, waitTCP(p, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
}
