package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/antespam/antespam-milter/lookup"
)

// DefaultPath is where the packages install the configuration.
const DefaultPath = "/etc/antespam-milter/antespam-milter.toml"

// Config is the whole configuration. Field tags are the TOML keys, which are
// the contract documented in the README and packaging/antespam-milter.toml.
type Config struct {
	Listen             string        `toml:"listen"`
	SocketMode         string        `toml:"socket_mode"`
	SocketGroup        string        `toml:"socket_group"`
	Source             string        `toml:"source"`
	Mode               string        `toml:"mode"`
	TrustedNetworks    []string      `toml:"trusted_networks"`
	DecisionTimeout    time.Duration `toml:"decision_timeout"`
	ShutdownTimeout    time.Duration `toml:"shutdown_timeout"`
	SessionIdleTimeout time.Duration `toml:"session_idle_timeout"`
	MaxSessions        int           `toml:"max_sessions"`
	LogFormat          string        `toml:"log_format"`
	LogLevel           string        `toml:"log_level"`
	MetricsListen      string        `toml:"metrics_listen"`

	Hosts      Hosts      `toml:"hosts"`
	Recipients Recipients `toml:"recipients"`
	Cache      Cache      `toml:"cache"`
	Memcache   Memcache   `toml:"memcache"`
	LDAP       LDAP       `toml:"ldap"`
	File       File       `toml:"file"`

	// TrustedPrefixes is TrustedNetworks parsed; filled by Load.
	TrustedPrefixes []netip.Prefix `toml:"-"`
	// Path is the file the config was read from; filled by Load.
	Path string `toml:"-"`
	// Warnings are problems that do not make the config invalid (a
	// world-readable password file, say); filled by Load.
	Warnings []string `toml:"-"`
}

// Hosts configures the connect-stage check of the client host.
type Hosts struct {
	Enabled       bool   `toml:"enabled"`
	RejectReply   string `toml:"reject_reply"`
	TempfailReply string `toml:"tempfail_reply"`
	OnLookupError string `toml:"on_lookup_error"` // "accept" or "tempfail"
}

// Recipients configures the RCPT-stage check of recipient addresses.
type Recipients struct {
	Enabled            bool     `toml:"enabled"`
	Domains            []string `toml:"domains"`
	RecipientDelimiter string   `toml:"recipient_delimiter"`
	CaseFoldLocalPart  bool     `toml:"case_fold_local_part"`
	CatchAll           bool     `toml:"catch_all"`
	AlwaysAccept       []string `toml:"always_accept"`
	RejectReply        string   `toml:"reject_reply"`
	TempfailReply      string   `toml:"tempfail_reply"`
	OnLookupError      string   `toml:"on_lookup_error"` // "tempfail" or "accept"
}

// Cache configures the in-process LRU tier.
type Cache struct {
	Size        int           `toml:"size"`
	TTL         time.Duration `toml:"ttl"`
	NegativeTTL time.Duration `toml:"negative_ttl"`
	StaleMax    time.Duration `toml:"stale_max"`
}

// Memcache configures the shared memcached tier; no servers turns it off.
type Memcache struct {
	Servers      []string      `toml:"servers"`
	KeyPrefix    string        `toml:"key_prefix"`
	TTL          time.Duration `toml:"ttl"`
	NegativeTTL  time.Duration `toml:"negative_ttl"`
	Timeout      time.Duration `toml:"timeout"`
	MaxIdleConns int           `toml:"max_idle_conns"`
	// LockTimeout bounds how long a daemon waits for another daemon of the
	// fleet that holds the per-key lock to publish its answer.
	LockTimeout time.Duration `toml:"lock_timeout"`
}

// LDAP configures the LDAP directory source.
type LDAP struct {
	URLs             []string      `toml:"urls"`
	StartTLS         bool          `toml:"start_tls"`
	TLSCAFile        string        `toml:"tls_ca_file"`
	BindDN           string        `toml:"bind_dn"`
	BindPasswordFile string        `toml:"bind_password_file"`
	BaseDN           string        `toml:"base_dn"`
	RecipientFilter  string        `toml:"recipient_filter"`
	HostFilter       string        `toml:"host_filter"`
	Timeout          time.Duration `toml:"timeout"`
	Connections      int           `toml:"connections"`
	// MaxInFlight caps the requests outstanding on one connection; slapd
	// drops an anonymous connection past 100 pending requests.
	MaxInFlight int `toml:"max_in_flight"`
	// BindPassword is read from BindPasswordFile by Load; never logged.
	BindPassword string `toml:"-"`
}

// File configures the plain-text list source.
type File struct {
	Recipients string `toml:"recipients"`
	Hosts      string `toml:"hosts"`
}

// Default returns the configuration used for every key the file omits.
func Default() Config {
	return Config{
		Listen:             "inet:8890@127.0.0.1",
		SocketMode:         "0660",
		Source:             "file",
		Mode:               "enforce",
		DecisionTimeout:    5 * time.Second,
		ShutdownTimeout:    10 * time.Second,
		SessionIdleTimeout: 10 * time.Minute,
		MaxSessions:        10000,
		LogFormat:          "text",
		LogLevel:           "info",
		Hosts: Hosts{
			Enabled:       true,
			RejectReply:   "554 5.7.1 Connection refused: client host is listed",
			TempfailReply: "451 4.3.0 Temporary lookup failure",
			OnLookupError: "accept",
		},
		Recipients: Recipients{
			Enabled:           true,
			CaseFoldLocalPart: true,
			AlwaysAccept:      []string{"postmaster"},
			RejectReply:       "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
			TempfailReply:     "451 4.3.0 <{rcpt}>: Temporary lookup failure",
			OnLookupError:     "tempfail",
		},
		Cache: Cache{
			Size:        100000,
			TTL:         time.Minute,
			NegativeTTL: 30 * time.Second,
			StaleMax:    24 * time.Hour,
		},
		Memcache: Memcache{
			KeyPrefix:   "antespam:1:",
			TTL:         time.Hour,
			NegativeTTL: 5 * time.Minute,
			Timeout:     100 * time.Millisecond,
			LockTimeout: 2 * time.Second,
		},
		LDAP: LDAP{
			RecipientFilter: "(|(mail=%s)(mailLocalAddress=%s))",
			HostFilter:      "(|(ipHostNumber=%s)(cn=%s))",
			Timeout:         2 * time.Second,
			Connections:     4,
			MaxInFlight:     64,
		},
		File: File{
			Recipients: "/etc/antespam-milter/recipients",
			Hosts:      "/etc/antespam-milter/hosts",
		},
	}
}

// Error is one problem with one key.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // "section.key", or "" for the file as a whole
	Msg  string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file. Load returns it as its error.
type Errors []Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates data as if read from the file name.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	// The defaults' lists must not leak into an explicitly set list.
	c.Recipients.AlwaysAccept = nil
	v := &validator{file: name, lines: keyLines(data)}
	// Decoded key by key: a value of the wrong type is reported with its
	// key and line and does not hide the problems after it.
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Errors{{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}}
		}
		return nil, Errors{{File: name, Msg: err.Error()}}
	}
	decodeKeys(&md, v, top, reflect.ValueOf(&c).Elem(), nil)
	if !md.IsDefined("recipients", "always_accept") {
		c.Recipients.AlwaysAccept = Default().Recipients.AlwaysAccept
	}
	// decodeKeys reported the unknown keys it met; anything else left
	// undecoded lies under one of them.
	reported := map[string]bool{}
	for _, e := range v.errs {
		reported[e.Key] = true
	}
undecoded:
	for _, k := range md.Undecoded() {
		for i := 1; i <= len(k); i++ {
			if reported[k[:i].String()] {
				continue undecoded
			}
		}
		v.add(k.String(), "unknown key")
	}
	// A key that did not decode keeps its default; validating it again
	// would only add noise.
	bad := map[string]bool{}
	for _, e := range v.errs {
		bad[e.Key] = true
	}
	decodeErrs := v.errs
	v.errs = nil
	c.Path = name
	c.validate(v)
	for _, e := range v.errs {
		if !bad[e.Key] {
			decodeErrs = append(decodeErrs, e)
		}
	}
	v.errs = decodeErrs
	if len(v.errs) > 0 {
		sort.SliceStable(v.errs, func(i, j int) bool {
			if v.errs[i].Line != v.errs[j].Line {
				return v.errs[i].Line < v.errs[j].Line
			}
			return v.errs[i].Key < v.errs[j].Key
		})
		return nil, v.errs
	}
	return &c, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// decodeKeys decodes each of prims into the field of rv (a struct) whose
// toml tag is its key, recursing into sections, and reports the keys
// that have none as unknown.
func decodeKeys(md *toml.MetaData, v *validator, prims map[string]toml.Primitive, rv reflect.Value, path []string) {
	fields := map[string]reflect.Value{}
	for i := 0; i < rv.NumField(); i++ {
		if tag := rv.Type().Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			fields[tag] = rv.Field(i)
		}
	}
	keys := make([]string, 0, len(prims))
	for k := range prims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kp := append(append([]string(nil), path...), k)
		key := strings.Join(kp, ".")
		f, ok := fields[k]
		if !ok {
			v.add(key, "unknown key")
			continue
		}
		if f.Kind() == reflect.Struct {
			var sub map[string]toml.Primitive
			// The decoder silently decodes a non-table into an empty map.
			if err := md.PrimitiveDecode(prims[k], &sub); err != nil || md.Type(kp...) != "Hash" {
				v.add(key, "must be a table ([%s]), not %s", key, article(md.Type(kp...)))
				continue
			}
			decodeKeys(md, v, sub, f, kp)
			continue
		}
		if f.Type() == durationType && md.Type(kp...) != "String" {
			// The decoder would take a number as nanoseconds.
			_ = md.PrimitiveDecode(prims[k], new(any)) // mark it decoded
			v.add(key, "must be a duration string such as \"5s\", not %s", article(md.Type(kp...)))
			continue
		}
		if err := md.PrimitiveDecode(prims[k], f.Addr().Interface()); err != nil {
			v.add(key, "%s", decodeError(err, f.Type(), md.Type(kp...)))
		}
	}
}

// decodeError says why a value did not decode, without the decoder's
// "toml: line N (last key ...)" prefix (Error has the line and key).
func decodeError(err error, t reflect.Type, tomlType string) string {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return pe.Message
	}
	want := map[reflect.Kind]string{
		reflect.String: "a string", reflect.Bool: "true or false", reflect.Int: "an integer",
		reflect.Slice: "an array",
	}[t.Kind()]
	if want != "" && strings.Contains(err.Error(), "incompatible types") {
		return fmt.Sprintf("must be %s, not %s", want, article(tomlType))
	}
	msg := err.Error()
	if i := strings.Index(msg, "): "); strings.HasPrefix(msg, "toml: ") && i >= 0 {
		msg = msg[i+3:]
	}
	return msg
}

// article names a TOML type for a message: "a string", "an integer".
func article(tomlType string) string {
	switch tomlType {
	case "":
		return "a value of another type"
	case "Integer", "Array", "Inline Table":
		return "an " + strings.ToLower(tomlType)
	}
	return "a " + strings.ToLower(tomlType)
}

type validator struct {
	file  string
	lines map[string]int
	errs  Errors
}

func (v *validator) add(key, format string, args ...any) {
	// A key in an inline table or a dotted key has no line of its own:
	// its table's line is the next best.
	line := 0
	for k := key; line == 0 && k != ""; {
		line = v.lines[k]
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	v.errs = append(v.errs, Error{File: v.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// addAll adds each of errs on key.
func (v *validator) addAll(key string, errs []error) {
	for _, err := range errs {
		v.add(key, "%v", err)
	}
}

var (
	logLevels  = map[string]bool{"debug": true, "info": true, "warn": true, "error": true}
	onErrHosts = map[string]bool{"accept": true, "tempfail": true}
)

// listenForms names the forms of a milter socket spec, for messages.
const listenForms = "inet:PORT@HOST, inet6:PORT@[HOST], unix:/path or local:/path"

// ParseListen splits a milter socket spec, in the syntax Sendmail, Postfix
// and OpenDKIM share, into a network for net.Listen or net.Dial and an
// address:
//
//	inet:PORT@HOST     "tcp", HOST:PORT (HOST a name or an address; [brackets] allowed)
//	inet:PORT          "tcp", :PORT (every interface, as OpenDKIM does)
//	inet6:PORT@[HOST]  "tcp6", [HOST]:PORT
//	inet6:PORT         "tcp6", :PORT
//	unix:/path         "unix", /path; local:/path is the same
//
// PORT is 0 to 65535 (0: any free port). It is the one parser of the
// spec: milter.Listen opens what it returns, and config validation adds
// the daemon's rules (a port other than 0, an absolute socket path).
func ParseListen(spec string) (network, address string, err error) {
	proto, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return "", "", fmt.Errorf("%q is not %s", spec, listenForms)
	}
	switch proto {
	case "unix", "local":
		if rest == "" {
			return "", "", fmt.Errorf("%q is not %s: no socket path", spec, listenForms)
		}
		if strings.ContainsRune(rest, 0) {
			return "", "", fmt.Errorf("%q: the socket path holds a NUL", spec)
		}
		return "unix", rest, nil
	case "inet", "inet6":
		port, host, at := strings.Cut(rest, "@")
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return "", "", fmt.Errorf("%q is not %s: port %q is not a number", spec, listenForms, port)
		}
		if p, err := strconv.Atoi(port); err != nil || p > 65535 {
			return "", "", fmt.Errorf("%q: port %q is not between 1 and 65535 (nor 0, any free port)", spec, port)
		}
		if at && host == "" {
			return "", "", fmt.Errorf("%q is not %s: no host after @", spec, listenForms)
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if strings.ContainsAny(host, "[]@/ \t\x7f") || strings.IndexFunc(host, func(r rune) bool { return r < 0x20 }) >= 0 {
			return "", "", fmt.Errorf("%q: %q is not a host name or address", spec, host)
		}
		network := "tcp"
		if proto == "inet6" {
			network = "tcp6"
		}
		return network, net.JoinHostPort(host, port), nil
	}
	return "", "", fmt.Errorf("%q is not %s: unknown socket type %q (inet, inet6, unix or local)", spec, listenForms, proto)
}

func (c *Config) validate(v *validator) {
	// The daemon's rules on top of the syntax: the MTA must know the port
	// (0, any free port, is for tests) and a unix socket path is absolute.
	if network, addr, err := ParseListen(c.Listen); err != nil {
		v.add("listen", "%v", err)
	} else if network == "unix" {
		if len(addr) < 2 || addr[0] != '/' || strings.ContainsRune(addr, '\n') {
			v.add("listen", "%q is not %s: the socket path must be absolute", c.Listen, listenForms)
		}
	} else if _, port, _ := net.SplitHostPort(addr); port != "" {
		if p, _ := strconv.Atoi(port); p == 0 {
			v.add("listen", "port %q is not between 1 and 65535: the MTA must know which port to connect to", port)
		}
	}
	if m, err := strconv.ParseUint(c.SocketMode, 8, 32); err != nil || m > 0o777 {
		v.add("socket_mode", "%q is not an octal file mode such as \"0660\"", c.SocketMode)
	}
	switch c.Source {
	case "file":
		if c.File.Recipients == "" && c.Recipients.Enabled {
			v.add("file.recipients", "must name a file when source = \"file\" and recipients are checked")
		}
		if c.File.Hosts == "" && c.Hosts.Enabled {
			v.add("file.hosts", "must name a file when source = \"file\" and hosts are checked")
		}
	case "ldap":
		c.LDAP.validate(v, c)
	default:
		v.add("source", "%q is not \"file\" or \"ldap\"", c.Source)
	}
	if c.Mode != "enforce" && c.Mode != "report" {
		v.add("mode", "%q is not \"enforce\" or \"report\"", c.Mode)
	}
	c.TrustedPrefixes = nil
	for _, n := range c.TrustedNetworks {
		p, err := parsePrefix(n)
		if err != nil {
			v.add("trusted_networks", "%q is not an IP address or network: %v", n, err)
			continue
		}
		c.TrustedPrefixes = append(c.TrustedPrefixes, p)
	}
	positive(v, "decision_timeout", c.DecisionTimeout)
	positive(v, "shutdown_timeout", c.ShutdownTimeout)
	positive(v, "session_idle_timeout", c.SessionIdleTimeout)
	if c.MaxSessions < 1 {
		v.add("max_sessions", "must be at least 1, not %d", c.MaxSessions)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		v.add("log_format", "%q is not \"text\" or \"json\"", c.LogFormat)
	}
	if !logLevels[c.LogLevel] {
		v.add("log_level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	if c.MetricsListen != "" {
		if port, ok := strings.CutPrefix(c.MetricsListen, "localhost:"); ok {
			if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 || port[0] == '+' || port[0] == '-' {
				v.add("metrics_listen", "port %q is not a number between 0 and 65535", port)
			}
		} else if _, err := netip.ParseAddrPort(c.MetricsListen); err != nil {
			v.add("metrics_listen", "%q is not HOST:PORT with an IP address: %v", c.MetricsListen, err)
		}
	}

	reply(v, "hosts.reject_reply", c.Hosts.RejectReply, '5')
	reply(v, "hosts.tempfail_reply", c.Hosts.TempfailReply, '4')
	if !onErrHosts[c.Hosts.OnLookupError] {
		v.add("hosts.on_lookup_error", "%q is not \"accept\" or \"tempfail\"", c.Hosts.OnLookupError)
	}
	reply(v, "recipients.reject_reply", c.Recipients.RejectReply, '5')
	reply(v, "recipients.tempfail_reply", c.Recipients.TempfailReply, '4')
	if !onErrHosts[c.Recipients.OnLookupError] {
		v.add("recipients.on_lookup_error", "%q is not \"accept\" or \"tempfail\"", c.Recipients.OnLookupError)
	}
	// Each value is checked here, then as lookup.NewChecker checks it (an
	// IDN that does not convert, a quote...), one error per value.
	for _, d := range c.Recipients.Domains {
		if d == "" || strings.ContainsAny(d, "@ \t<>") {
			v.add("recipients.domains", "%q is not a domain name", d)
			continue
		}
		v.addAll("recipients.domains", lookup.ValidateCheckerOptions(lookup.CheckerOptions{Domains: []string{d}}))
	}
	for _, r := range c.Recipients.RecipientDelimiter {
		if r == '@' || r == ' ' || r > 0x7e || r < 0x21 {
			v.add("recipients.recipient_delimiter", "%q cannot be a delimiter", r)
			continue
		}
		v.addAll("recipients.recipient_delimiter", lookup.ValidateCheckerOptions(lookup.CheckerOptions{RecipientDelimiter: string(r)}))
	}
	for _, a := range c.Recipients.AlwaysAccept {
		if a == "" || strings.ContainsAny(a, "@ \t<>") {
			v.add("recipients.always_accept", "%q is not a local part", a)
			continue
		}
		v.addAll("recipients.always_accept", lookup.ValidateCheckerOptions(lookup.CheckerOptions{AlwaysAccept: []string{a}}))
	}
	if c.Recipients.Enabled && len(c.Recipients.Domains) == 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s: recipients.domains: is empty, so every recipient domain is checked, including mail relayed for trusted or authenticated clients to outside domains; list your domains", v.file))
	}

	if c.Cache.Size < 0 {
		v.add("cache.size", "must be 0 (off) or more, not %d", c.Cache.Size)
	}
	positive(v, "cache.ttl", c.Cache.TTL)
	positive(v, "cache.negative_ttl", c.Cache.NegativeTTL)
	if c.Cache.StaleMax < c.Cache.TTL {
		v.add("cache.stale_max", "%s is shorter than cache.ttl %s", c.Cache.StaleMax, c.Cache.TTL)
	}

	for _, s := range c.Memcache.Servers {
		if _, _, err := splitHostPort(s); err != nil {
			v.add("memcache.servers", "%q is not HOST:PORT or a /path: %v", s, err)
		}
	}
	if len(c.Memcache.KeyPrefix) > 64 || strings.ContainsFunc(c.Memcache.KeyPrefix, func(r rune) bool { return r <= 0x20 || r >= 0x7f }) {
		v.add("memcache.key_prefix", "%q must be at most 64 printable ASCII characters without spaces", c.Memcache.KeyPrefix)
	}
	positive(v, "memcache.ttl", c.Memcache.TTL)
	positive(v, "memcache.negative_ttl", c.Memcache.NegativeTTL)
	positive(v, "memcache.timeout", c.Memcache.Timeout)
	positive(v, "memcache.lock_timeout", c.Memcache.LockTimeout)
	if c.Memcache.MaxIdleConns < 0 {
		v.add("memcache.max_idle_conns", "must be 0 (default) or more, not %d", c.Memcache.MaxIdleConns)
	}
	if len(c.Memcache.Servers) > 0 && c.Cache.StaleMax < c.Memcache.TTL {
		v.add("cache.stale_max", "%s is shorter than memcache.ttl %s", c.Cache.StaleMax, c.Memcache.TTL)
	}
}

func (l *LDAP) validate(v *validator, c *Config) {
	if len(l.URLs) == 0 {
		v.add("ldap.urls", "at least one URL is needed when source = \"ldap\"")
	}
	for _, u := range l.URLs {
		if !strings.HasPrefix(u, "ldap://") && !strings.HasPrefix(u, "ldaps://") && !strings.HasPrefix(u, "ldapi://") {
			v.add("ldap.urls", "%q is not an ldap://, ldaps:// or ldapi:// URL", u)
		} else if err := lookup.ValidateLDAPURL(u); err != nil {
			v.add("ldap.urls", "%v", err)
		}
	}
	if l.BaseDN == "" {
		v.add("ldap.base_dn", "must be set when source = \"ldap\"")
	}
	// A filter of a disabled check is not needed, but lookup.NewLDAP still
	// compiles it when it is set.
	for _, f := range []struct {
		key, tmpl string
		enabled   bool
		kind      lookup.Kind
	}{
		{"ldap.recipient_filter", l.RecipientFilter, c.Recipients.Enabled, lookup.Recipient},
		{"ldap.host_filter", l.HostFilter, c.Hosts.Enabled, lookup.Host},
	} {
		if f.enabled && !filter(v, f.key, f.tmpl) {
			continue
		}
		if f.tmpl == "" {
			continue
		}
		if err := lookup.ValidateFilter(f.tmpl, f.kind); err != nil {
			v.add(f.key, "%v", err)
		}
	}
	if l.RecipientFilter == "" && l.HostFilter == "" && !c.Recipients.Enabled && !c.Hosts.Enabled {
		v.add("ldap.recipient_filter", "and ldap.host_filter are both empty: set one (lookup.NewLDAP needs a filter)")
	}
	positive(v, "ldap.timeout", l.Timeout)
	if l.Connections < 1 || l.Connections > 64 {
		v.add("ldap.connections", "must be between 1 and 64, not %d", l.Connections)
	}
	if l.MaxInFlight < 1 || l.MaxInFlight > 1000 {
		v.add("ldap.max_in_flight", "must be between 1 and 1000, not %d", l.MaxInFlight)
	}
	if l.TLSCAFile != "" {
		if err := lookup.ValidateCAFile(l.TLSCAFile); err != nil {
			v.add("ldap.tls_ca_file", "%v", err)
		}
	}
	// Reported on the key that is set, which has a line.
	switch {
	case l.BindDN != "" && l.BindPasswordFile == "":
		v.add("ldap.bind_dn", "is set without ldap.bind_password_file (they are set together or not at all)")
	case l.BindDN == "" && l.BindPasswordFile != "":
		v.add("ldap.bind_password_file", "is set without ldap.bind_dn (they are set together or not at all)")
	}
	if l.BindPasswordFile != "" {
		fi, err := os.Stat(l.BindPasswordFile)
		if err != nil {
			v.add("ldap.bind_password_file", "%v", err)
			return
		}
		if !fi.Mode().IsRegular() {
			// /dev/zero or a FIFO would hang the reading.
			v.add("ldap.bind_password_file", "%s is not a regular file", l.BindPasswordFile)
			return
		}
		data, err := os.ReadFile(l.BindPasswordFile)
		if err != nil {
			v.add("ldap.bind_password_file", "%v", err)
			return
		}
		l.BindPassword = strings.TrimRight(string(data), "\r\n")
		if l.BindPassword == "" {
			// An empty password makes a simple bind anonymous (RFC 4513
			// §5.1.2); lookup.NewLDAP refuses it too.
			v.add("ldap.bind_password_file", "%s holds no password", l.BindPasswordFile)
		}
		if fi.Mode().Perm()&0o004 != 0 {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: ldap.bind_password_file: %s is world-readable (mode %04o); chmod 0640 it", v.file, l.BindPasswordFile, fi.Mode().Perm()))
		}
	}
}

// filter checks the shape of a filter template and reports whether it
// passed.
func filter(v *validator, key, f string) bool {
	if !strings.HasPrefix(f, "(") || !strings.HasSuffix(f, ")") {
		v.add(key, "%q is not an LDAP filter in parentheses", f)
		return false
	}
	ok := true
	if !strings.Contains(f, "%s") && !strings.Contains(f, "%u") && !strings.Contains(f, "%d") {
		v.add(key, "%q has no %%s, %%u or %%d placeholder", f)
		ok = false
	}
	depth := 0
	for _, r := range f {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		}
		if depth < 0 {
			break
		}
	}
	if depth != 0 {
		v.add(key, "%q has unbalanced parentheses", f)
		ok = false
	}
	return ok
}

func positive(v *validator, key string, d time.Duration) {
	if d <= 0 {
		v.add(key, "must be a positive duration such as \"5s\", not %s", d)
	}
}

func reply(v *validator, key, r string, class byte) {
	if err := ValidReply(r, class); err != nil {
		v.add(key, "%v", err)
	} else if strings.ContainsAny(r, "\r\n") {
		v.add(key, "reply must be one line")
	}
}

// ValidReply checks that line starts as a reply Postfix accepts from a
// milter, of the given class ('2', '4' or '5'): a 3-digit code, a space,
// an enhanced status code of the same class (1 to 3 digits in each of its
// other two parts), a space and a character of text that is not white
// space. What follows that character is not looked at: the configuration
// refuses CR and LF in a reply template separately, and the milter strips
// control characters before it checks. It is the one definition of a
// reply template, for config validation and for the milter, which runs it
// on every reply it sends (so it is written out rather than a regexp).
func ValidReply(line string, class byte) error {
	if !replyShape(line) {
		return fmt.Errorf("%q is not a reply such as \"%c50 %c.1.1 text\"", line, class, class)
	}
	switch {
	case line[0] != class:
		return fmt.Errorf("%q must be a %cxx reply", line, class)
	case line[4] != line[0]:
		return fmt.Errorf("%q: the SMTP code %cxx and the enhanced code %c.x.x disagree in class", line, line[0], line[4])
	}
	return nil
}

// replyShape: `^[245][0-9][0-9] [245]\.[0-9]{1,3}\.[0-9]{1,3} \S`.
func replyShape(line string) bool {
	replyClass := func(c byte) bool { return c == '2' || c == '4' || c == '5' }
	if len(line) < 6 || !replyClass(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) ||
		line[3] != ' ' || !replyClass(line[4]) || line[5] != '.' {
		return false
	}
	i := 6
	for _, sep := range []byte{'.', ' '} {
		n := 0
		for i < len(line) && isDigit(line[i]) {
			i++
			n++
		}
		if n < 1 || n > 3 || i >= len(line) || line[i] != sep {
			return false
		}
		i++
	}
	// \S: anything but ASCII white space (RE2's \s is [\t\n\f\r ]).
	return i < len(line) && !strings.ContainsRune(" \t\n\f\r", rune(line[i]))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parsePrefix accepts an address or a CIDR network.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func splitHostPort(s string) (string, string, error) {
	if strings.HasPrefix(s, "/") {
		return s, "", nil
	}
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", errors.New("missing port")
	}
	if p, err := strconv.Atoi(s[i+1:]); err != nil || p < 1 || p > 65535 || s[i+1] == '+' {
		return "", "", errors.New("port is not a number between 1 and 65535")
	}
	return s[:i], s[i+1:], nil
}

var (
	tableRE = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]`)
	keyRE   = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+)\s*=`)
)

// keyLines maps "section.key" to the line it is set on, for error messages.
// The TOML decoder keeps positions private; the config format is flat
// enough for a line scan to find them.
func keyLines(data []byte) map[string]int {
	m := map[string]int{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if t := tableRE.FindStringSubmatch(line); t != nil {
			section = t[1]
			if _, ok := m[section]; !ok {
				m[section] = n
			}
			continue
		}
		if k := keyRE.FindStringSubmatch(line); k != nil {
			full := k[1]
			if section != "" {
				full = section + "." + k[1]
			}
			if _, ok := m[full]; !ok {
				m[full] = n
			}
		}
	}
	return m
}
