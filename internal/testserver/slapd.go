package testserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The directory every test slapd serves.
const (
	// SlapdSuffix is the naming context of the test directory.
	SlapdSuffix = "dc=example,dc=com"
	// SlapdRootDN is the test directory's manager; its password is
	// SlapdOptions.RootPassword.
	SlapdRootDN = "cn=admin," + SlapdSuffix
	// SlapdPeople is where Person puts its entries.
	SlapdPeople = "ou=people," + SlapdSuffix
	// SlapdHosts is where Host puts its entries.
	SlapdHosts = "ou=hosts," + SlapdSuffix
)

// SlapdOptions configure StartSlapd.
type SlapdOptions struct {
	// Entries are loaded with slapadd before the first start, after the
	// suffix, ou=people and ou=hosts entries that are always there.
	Entries []Entry
	// RootPassword is SlapdRootDN's password; "secret" when empty.
	RootPassword string
	// TLS adds an ldaps:// listener on a second port and enables StartTLS
	// on the ldap:// one, with a certificate for 127.0.0.1, ::1 and
	// localhost signed by a CA made for this server (CAFile).
	TLS bool
	// Quiet turns off slapd's stats log (for benchmarks, where it costs
	// time and disk); Searches then fails the test.
	Quiet bool
	// Restrict lists operations slapd answers with unwillingToPerform
	// (53) for everyone, as slapd.conf's restrict: "bind", "extended"
	// (the "who am I?" probe), "search"...
	Restrict []string
}

// Entry is one LDAP entry for Seed or Add. Attribute values are written
// base64-encoded when LDIF requires it, so any bytes are safe.
type Entry struct {
	DN    string
	Attrs map[string][]string
}

// Person is an inetOrgPerson under SlapdPeople with mail (when not "")
// and mailLocalAddress values (objectClass inetLocalMailRecipient, from
// misc.schema). A catch-all is Person("catchall", "@example.org").
func Person(uid, mail string, localAddresses ...string) Entry {
	attrs := map[string][]string{
		"objectClass": {"inetOrgPerson", "inetLocalMailRecipient"},
		"uid":         {uid},
		"cn":          {uid},
		"sn":          {uid},
	}
	if mail != "" {
		attrs["mail"] = []string{mail}
	}
	if len(localAddresses) > 0 {
		attrs["mailLocalAddress"] = localAddresses
	}
	return Entry{DN: "uid=" + escapeDNValue(uid) + "," + SlapdPeople, Attrs: attrs}
}

// Host is a device under SlapdHosts named cn (an IP, a network such as
// "192.0.2.0/24" or "192.0.2", or a hostname), with ipHostNumber values
// (objectClass ipHost, from nis.schema) when any are given.
func Host(cn string, ipHostNumbers ...string) Entry {
	attrs := map[string][]string{
		"objectClass": {"device"},
		"cn":          {cn},
	}
	if len(ipHostNumbers) > 0 {
		attrs["objectClass"] = append(attrs["objectClass"], "ipHost")
		attrs["ipHostNumber"] = ipHostNumbers
	}
	return Entry{DN: "cn=" + escapeDNValue(cn) + "," + SlapdHosts, Attrs: attrs}
}

// Referral is an entry under SlapdSuffix named ou=name that refers to
// url (objectClass referral): a subtree search that does not use the
// ManageDsaIT control gets a continuation reference to url for it.
func Referral(name, url string) Entry {
	return Entry{DN: "ou=" + escapeDNValue(name) + "," + SlapdSuffix, Attrs: map[string][]string{
		"objectClass": {"referral", "extensibleObject"},
		"ou":          {name},
		"ref":         {url},
	}}
}

// Slapd is an OpenLDAP slapd started by a test: back-mdb, suffix
// SlapdSuffix, schemas core, cosine, inetorgperson, nis and misc, equality
// indexes on mail, mailLocalAddress, ipHostNumber and cn.
type Slapd struct {
	t        testing.TB
	bin      string
	dir      string
	conf     string
	port     int
	tlsPort  int
	password string
	quiet    bool
	caFile   string

	mu      sync.Mutex
	proc    *Process
	logs    []string
	started int
}

// StartSlapd seeds and starts a slapd in a temp dir on a free loopback
// port and returns when it accepts connections. It is stopped by PID when
// the test ends. A missing slapd goes through Unavailable.
func StartSlapd(t testing.TB, opts SlapdOptions) *Slapd {
	t.Helper()
	bin := Require(t, "slapd")
	slapadd := Require(t, "slapadd")
	if _, err := os.Stat("/etc/ldap/schema/inetorgperson.schema"); err != nil {
		Unavailable(t, "the OpenLDAP schemas are not installed: %v", err)
	}
	s := &Slapd{
		t:        t,
		bin:      bin,
		dir:      t.TempDir(),
		port:     FreePort(t, "127.0.0.1"),
		password: opts.RootPassword,
		quiet:    opts.Quiet,
	}
	if s.password == "" {
		s.password = "secret"
	}
	if strings.ContainsAny(s.password, "\"\\\n") {
		t.Fatalf("slapd: the root password cannot hold a quote, backslash or newline")
	}
	data := filepath.Join(s.dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatalf("slapd: %v", err)
	}
	var global string
	if len(opts.Restrict) > 0 {
		global = "restrict " + strings.Join(opts.Restrict, " ") + "\n"
	}
	if opts.TLS {
		s.tlsPort = FreePort(t, "127.0.0.1")
		global += s.writeCerts()
	}
	conf := SlapdConfig(s.dir, global, s.password, 64<<20)
	s.conf = filepath.Join(s.dir, "slapd.conf")
	writeFile(t, s.conf, conf)

	base := []Entry{
		{DN: SlapdSuffix, Attrs: map[string][]string{"objectClass": {"dcObject", "organization"}, "dc": {"example"}, "o": {"Example"}}},
		{DN: SlapdPeople, Attrs: map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"people"}}},
		{DN: SlapdHosts, Attrs: map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"hosts"}}},
	}
	seed := filepath.Join(s.dir, "seed.ldif")
	writeFile(t, seed, LDIF(append(base, opts.Entries...)...))
	if out, err := exec.Command(slapadd, "-q", "-f", s.conf, "-l", seed).CombinedOutput(); err != nil {
		t.Fatalf("slapadd %s: %v\n%s", seed, err, out)
	}
	s.Start()
	return s
}

// writeCerts makes a CA and a server certificate in s.dir and returns the
// slapd.conf lines that use them.
func (s *Slapd) writeCerts() string {
	t := s.t
	caCert, caKey := newCA(t, "antespam test CA")
	s.caFile = filepath.Join(s.dir, "ca.pem")
	writeFile(t, s.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})))

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("slapd: server key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("slapd: server certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("slapd: server key: %v", err)
	}
	certFile := filepath.Join(s.dir, "server.pem")
	keyFile := filepath.Join(s.dir, "server.key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return fmt.Sprintf("TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\n", s.caFile, certFile, keyFile)
}

// newCA makes a self-signed CA certificate and its key.
func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	return cert, key
}

// UntrustedCAFile writes a PEM file holding a fresh CA that signed
// nothing, for tests that a certificate from another CA is refused.
func UntrustedCAFile(t testing.TB) string {
	t.Helper()
	cert, _ := newCA(t, "antespam unrelated CA")
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	writeFile(t, p, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
	return p
}

// Start starts slapd (again, after Stop) on the same port and data and
// waits until it accepts connections.
func (s *Slapd) Start() {
	t := s.t
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && s.proc.Cmd.ProcessState == nil {
		t.Fatal("slapd: Start while running")
	}
	urls := s.url()
	if s.tlsPort != 0 {
		urls += " " + s.TLSURL()
	}
	args := []string{"-f", s.conf, "-h", urls}
	if s.quiet {
		args = append(args, "-d", "0")
	} else {
		args = append(args, "-d", "stats")
	}
	s.started++
	logPath := filepath.Join(s.dir, "slapd-"+strconv.Itoa(s.started)+".log")
	s.logs = append(s.logs, logPath)
	s.proc = Start(t, exec.Command(s.bin, args...), logPath)
	addrs := []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))}
	if s.tlsPort != 0 {
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort)))
	}
	for _, a := range addrs {
		if err := waitListening(s.proc.Cmd.Process.Pid, a, 30*time.Second); err != nil {
			t.Fatalf("slapd: %v\n%s", err, s.proc.Output())
		}
	}
}

// Stop stops slapd (SIGTERM, by PID); the data stays for Start.
func (s *Slapd) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Stop()
	}
}

// Freeze stops slapd with SIGSTOP: connections are accepted by the
// kernel but nothing is answered, like a black-holed server. It returns
// once every slapd thread is stopped (see Process.Freeze).
func (s *Slapd) Freeze() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.proc.Freeze(); err != nil {
		s.t.Fatalf("slapd: %v", err)
	}
}

// Thaw resumes a frozen slapd with SIGCONT.
func (s *Slapd) Thaw() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.proc.Thaw(); err != nil {
		s.t.Fatalf("slapd: %v", err)
	}
}

func (s *Slapd) url() string { return "ldap://127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the ldap:// URL (StartTLS-capable when TLS is on).
func (s *Slapd) URL() string { return s.url() }

// TLSURL is the ldaps:// URL, or "" without TLS.
func (s *Slapd) TLSURL() string {
	if s.tlsPort == 0 {
		return ""
	}
	return "ldaps://127.0.0.1:" + strconv.Itoa(s.tlsPort)
}

// Addr is the host:port of the ldap:// listener.
func (s *Slapd) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// CAFile is the PEM file of the CA that signed the server certificate,
// or "" without TLS.
func (s *Slapd) CAFile() string { return s.caFile }

// RootPassword is SlapdRootDN's password.
func (s *Slapd) RootPassword() string { return s.password }

// Add adds entries to the running server with ldapadd as SlapdRootDN.
func (s *Slapd) Add(t testing.TB, entries ...Entry) {
	t.Helper()
	ldapadd := Require(t, "ldapadd")
	f := filepath.Join(t.TempDir(), "add.ldif")
	writeFile(t, f, LDIF(entries...))
	cmd := exec.Command(ldapadd, "-x", "-H", s.url(), "-D", SlapdRootDN, "-w", s.password, "-f", f)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ldapadd: %v\n%s", err, out)
	}
}

// Log is everything slapd has logged, over every start.
func (s *Slapd) Log() string {
	s.mu.Lock()
	logs := append([]string(nil), s.logs...)
	s.mu.Unlock()
	var b strings.Builder
	for _, p := range logs {
		data, err := os.ReadFile(p)
		if err != nil {
			s.t.Fatalf("slapd log: %v", err)
		}
		b.Write(data)
	}
	return b.String()
}

// Searches counts the search operations slapd has received, over every
// start (its stats log lines `SRCH base=`). slapd logs a search before
// answering it, so a search whose answer the client has seen is counted.
func (s *Slapd) Searches() int {
	s.t.Helper()
	if s.quiet {
		s.t.Fatal("slapd: Searches needs the stats log; do not set Quiet")
	}
	return strings.Count(s.Log(), " SRCH base=")
}

// SearchFilters returns the filters of every search slapd has received,
// in order, as slapd logged them.
func (s *Slapd) SearchFilters() []string {
	s.t.Helper()
	var out []string
	for _, line := range strings.Split(s.Log(), "\n") {
		if !strings.Contains(line, " SRCH base=") {
			continue
		}
		if i := strings.Index(line, ` filter="`); i >= 0 {
			out = append(out, strings.TrimSuffix(line[i+len(` filter="`):], `"`))
		}
	}
	return out
}

// BlackHole listens on a free loopback port, accepts connections and
// never answers, until the test ends; it returns the host:port.
func BlackHole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("black hole: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// LDIF renders entries as LDIF, attributes sorted by name (objectClass
// first), values base64-encoded where LDIF requires it.
func LDIF(entries ...Entry) string {
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteString("\n")
		}
		ldifLine(&b, "dn", e.DN)
		names := make([]string, 0, len(e.Attrs))
		for n := range e.Attrs {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool {
			if (names[i] == "objectClass") != (names[j] == "objectClass") {
				return names[i] == "objectClass"
			}
			return names[i] < names[j]
		})
		for _, n := range names {
			for _, v := range e.Attrs[n] {
				ldifLine(&b, n, v)
			}
		}
	}
	return b.String()
}

// ldifLine writes "name: value", or "name:: base64" when value is not an
// RFC 2849 SAFE-STRING.
func ldifLine(b *strings.Builder, name, value string) {
	safe := true
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == 0 || c == '\n' || c == '\r' || c >= 0x80 {
			safe = false
			break
		}
	}
	if value != "" && (value[0] == ' ' || value[0] == ':' || value[0] == '<' || value[len(value)-1] == ' ') {
		safe = false
	}
	if safe {
		fmt.Fprintf(b, "%s: %s\n", name, value)
		return
	}
	fmt.Fprintf(b, "%s:: %s\n", name, base64.StdEncoding.EncodeToString([]byte(value)))
}

// escapeDNValue escapes an RDN value per RFC 4514.
func escapeDNValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case strings.IndexByte(`,+"\<>;=`, c) >= 0,
			c == '#' && i == 0,
			c == ' ' && (i == 0 || i == len(v)-1):
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, `\%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// SlapdConfig is the slapd.conf of a directory of this package's layout
// (SlapdSuffix, SlapdRootDN with rootPW, eq indexes on the attributes the
// daemon searches) whose pid, args and data (dir/data) live in dir, with
// global lines (restrict, TLS) before the database and a database of at
// most maxSize bytes. StartSlapd and the benchmarks (bench/run) use it.
//
// loglevel 0: slapd's default formats a syslog line per operation, about
// 40 µs of slapd's CPU a search here, and nothing receives it (no
// /dev/log); "-d stats" still prints the search lines to stderr.
func SlapdConfig(dir, global, rootPW string, maxSize int) string {
	return fmt.Sprintf(`# written by testserver.SlapdConfig
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/misc.schema
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel 0
%[2]s
database mdb
maxsize %[6]d
suffix "%[3]s"
rootdn "%[4]s"
rootpw "%[5]s"
directory %[1]s/data
index objectClass eq
index mail,mailLocalAddress,ipHostNumber,cn eq
`, dir, global, SlapdSuffix, SlapdRootDN, rootPW, maxSize)
}
