package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/milter"
)

// parse is config.Parse on a file named f.toml.
func parse(t *testing.T, data string) (*config.Config, config.Errors) {
	t.Helper()
	c, err := config.Parse("f.toml", []byte(data))
	if err == nil {
		return c, nil
	}
	var es config.Errors
	if !errors.As(err, &es) {
		t.Fatalf("Parse error is %T (%v), want config.Errors", err, err)
	}
	if c != nil {
		t.Errorf("Parse returned a config along with errors")
	}
	return nil, es
}

// located renders errors as "LINE key" for comparison.
func located(es config.Errors) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%d %s", e.Line, e.Key)
	}
	return out
}

func TestParseDefaults(t *testing.T) {
	for _, tt := range []struct{ name, data string }{
		{"empty", ""},
		{"comments only", "# nothing here\n\n   # indented\n"},
		{"empty sections", "[hosts]\n[recipients]\n[cache]\n[memcache]\n[ldap]\n[file]\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, es := parse(t, tt.data)
			if es != nil {
				t.Fatalf("errors: %v", es)
			}
			want := config.Default()
			want.Path = "f.toml"
			// The defaults check recipients in every domain: a warning.
			want.Warnings = c.Warnings
			if !reflect.DeepEqual(*c, want) {
				t.Errorf("got  %+v\nwant %+v", *c, want)
			}
			if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "recipients.domains: is empty") {
				t.Errorf("warnings: %q, want one about recipients.domains", c.Warnings)
			}
		})
	}
	// The documented defaults (README, packaging/antespam-milter.toml).
	d := config.Default()
	if d.Listen != "inet:8890@127.0.0.1" || d.DecisionTimeout != 5*time.Second || d.MaxSessions != 10000 ||
		d.Recipients.OnLookupError != "tempfail" || d.Hosts.OnLookupError != "accept" ||
		d.Cache.StaleMax != 24*time.Hour || d.LDAP.MaxInFlight != 64 || d.Memcache.Timeout != 100*time.Millisecond {
		t.Errorf("defaults changed: %+v", d)
	}
}

func TestParseEveryKey(t *testing.T) {
	c, err := config.Load(filepath.Join("testdata", "full.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != filepath.Join("testdata", "full.toml") {
		t.Errorf("Path %q", c.Path)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "unix:/run/antespam-milter/milter.sock"},
		{"socket_mode", c.SocketMode, "0600"},
		{"socket_group", c.SocketGroup, "postfix"},
		{"source", c.Source, "ldap"},
		{"mode", c.Mode, "report"},
		{"trusted prefixes", fmt.Sprint(c.TrustedPrefixes), "[127.0.0.1/32 192.0.2.0/24 198.51.100.7/32 2001:db8::/32]"},
		{"decision_timeout", c.DecisionTimeout, 3 * time.Second},
		{"shutdown_timeout", c.ShutdownTimeout, 20 * time.Second},
		{"session_idle_timeout", c.SessionIdleTimeout, 5 * time.Minute},
		{"max_sessions", c.MaxSessions, 500},
		{"log_format", c.LogFormat, "json"},
		{"log_level", c.LogLevel, "debug"},
		{"metrics_listen", c.MetricsListen, "127.0.0.1:9109"},
		{"hosts", c.Hosts, config.Hosts{Enabled: false, RejectReply: "550 5.7.1 Go away", TempfailReply: "421 4.7.0 Try later", OnLookupError: "tempfail"}},
		{"recipients.domains", c.Recipients.Domains, []string{"example.com", "example.org"}},
		{"recipients.always_accept", c.Recipients.AlwaysAccept, []string{"abuse"}},
		{"recipients.delimiter", c.Recipients.RecipientDelimiter, "+-"},
		{"recipients.case_fold", c.Recipients.CaseFoldLocalPart, false},
		{"recipients.catch_all", c.Recipients.CatchAll, true},
		{"recipients.on_lookup_error", c.Recipients.OnLookupError, "accept"},
		{"cache", c.Cache, config.Cache{Size: 5000, TTL: 2 * time.Minute, NegativeTTL: 10 * time.Second, StaleMax: 12 * time.Hour}},
		{"memcache.servers", c.Memcache.Servers, []string{"127.0.0.1:11211", "/run/memcached/memcached.sock"}},
		{"memcache.key_prefix", c.Memcache.KeyPrefix, "site:2:"},
		{"memcache.lock_timeout", c.Memcache.LockTimeout, time.Second},
		{"memcache.max_idle_conns", c.Memcache.MaxIdleConns, 16},
		{"ldap.urls", c.LDAP.URLs, []string{"ldaps://ldap1.example.com", "ldap://ldap2.example.com:389"}},
		{"ldap.start_tls", c.LDAP.StartTLS, true},
		{"ldap.max_in_flight", c.LDAP.MaxInFlight, 90},
		{"ldap.connections", c.LDAP.Connections, 2},
		{"ldap.host_filter", c.LDAP.HostFilter, "(cn=%s)"},
		{"file", c.File, config.File{Recipients: "/srv/recipients", Hosts: "/srv/hosts"}},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
}

// TestParseEveryErrorAtOnce: a file with one or more problems on most
// lines gets every one reported, each with its line and key, sorted by
// line, wrong types included.
func TestParseEveryErrorAtOnce(t *testing.T) {
	path := filepath.Join("testdata", "every-error.toml")
	_, err := config.Load(path)
	var es config.Errors
	if !errors.As(err, &es) {
		t.Fatalf("Load: %v, want config.Errors", err)
	}
	want := []string{
		"1 listen", "2 socket_mode", "4 mode", "5 trusted_networks", "5 trusted_networks",
		"6 decision_timeout", "7 shutdown_timeout", "8 max_sessions", "9 log_format", "10 log_level",
		"11 metrics_listen", "12 bogus",
		"15 hosts.reject_reply", "16 hosts.tempfail_reply", "17 hosts.on_lookup_error", "18 hosts.color",
		"21 recipients.domains", "22 recipients.recipient_delimiter", "23 recipients.always_accept",
		"24 recipients.reject_reply", "25 recipients.tempfail_reply",
		"28 cache.size", "29 cache.ttl", "30 cache.negative_ttl", "31 cache.stale_max",
		"34 memcache.servers", "34 memcache.servers", "35 memcache.key_prefix", "36 memcache.timeout", "37 memcache.max_idle_conns",
		"39 ldap.base_dn", // not in the file: its section's line
		"40 ldap.urls", "41 ldap.recipient_filter", "42 ldap.host_filter", "43 ldap.connections", "44 ldap.max_in_flight",
		"45 ldap.bind_dn",
	}
	if got := located(es); !reflect.DeepEqual(got, want) {
		t.Errorf("errors at:\n%q\nwant\n%q\nfull text:\n%v", got, want, err)
	}
	// Each is one line "FILE:LINE: key: message" (no line when unknown).
	for i, line := range strings.Split(err.Error(), "\n") {
		e := es[i]
		prefix := fmt.Sprintf("%s:%d: %s: ", path, e.Line, e.Key)
		if e.Line == 0 {
			prefix = fmt.Sprintf("%s: %s: ", path, e.Key)
		}
		if !strings.HasPrefix(line, prefix) || len(line) == len(prefix) || strings.Contains(line[len(prefix):], "toml: line") {
			t.Errorf("error line %q, want %q and a message of its own", line, prefix+"...")
		}
	}
	// Messages that say what is wrong, for a few of them.
	for _, want := range []string{
		`:6: decision_timeout: must be a duration string such as "5s", not an integer`,
		`:8: max_sessions: must be an integer, not a string`,
		`:12: bogus: unknown key`,
		`:16: hosts.tempfail_reply: "551 5.7.1 wrong class" must be a 4xx reply`,
		`:24: recipients.reject_reply: "550 4.1.1 <{rcpt}>: class mismatch": the SMTP code 5xx and the enhanced code 4.x.x disagree in class`,
		`:30: cache.negative_ttl: invalid duration`,
		`:31: cache.stale_max: 1s is shorter than memcache.ttl 1h0m0s`,
		`:41: ldap.recipient_filter: "(mail=%s))((x=1)" has unbalanced parentheses`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	ldap := "source = \"ldap\"\n[ldap]\nurls = [\"ldap://127.0.0.1\"]\nbase_dn = \"dc=example,dc=com\"\n"
	tests := []struct {
		name, data string
		want       []string // "LINE key: message part" for each error
	}{
		{"unknown top-level key", "listen = \"inet:1@127.0.0.1\"\nlisten_port = 25\n", []string{"2 listen_port: unknown key"}},
		{"unknown section", "[cache]\nsize = 1\n[caches]\nsize = 2\n", []string{"3 caches: unknown key"}},
		{"unknown key in a section", "[cache]\n  size = 10\n  sizee = 20\n", []string{"3 cache.sizee: unknown key"}},
		{"section as a value", "cache = 5\n", []string{"1 cache: must be a table ([cache]), not an integer"}},
		{"array for a string", "mode = [\"report\"]\n", []string{"1 mode: must be a string, not an array"}},
		{"string for a bool", "[hosts]\nenabled = \"yes\"\n", []string{"2 hosts.enabled: must be true or false, not a string"}},
		{"string for a list", "trusted_networks = \"10.0.0.0/8\"\n", []string{"1 trusted_networks: must be an array, not a string"}},
		{"float duration", "decision_timeout = 2.5\n", []string{`1 decision_timeout: must be a duration string such as "5s", not a float`}},
		{"negative duration", "[cache]\nttl = \"-1m\"\n", []string{"2 cache.ttl: must be a positive duration"}},
		{"zero max_sessions", "max_sessions = 0\n", []string{"1 max_sessions: must be at least 1, not 0"}},
		{"int overflow", "[cache]\nsize = 99999999999999999999\n", []string{"2 cache.size: "}},
		{"socket mode not octal", "socket_mode = \"0698\"\n", []string{"1 socket_mode: "}},
		{"socket mode too wide", "socket_mode = \"04777\"\n", []string{"1 socket_mode: "}},
		{"stale_max under ttl", "[cache]\nttl = \"1h\"\nstale_max = \"30m\"\n", []string{"3 cache.stale_max: 30m0s is shorter than cache.ttl 1h0m0s"}},
		{"metrics port", "metrics_listen = \"127.0.0.1:70000\"\n", []string{"1 metrics_listen: "}},
		{"metrics localhost garbage port", "metrics_listen = \"localhost:x\"\n", []string{"1 metrics_listen: port \"x\""}},
		{"metrics host name", "metrics_listen = \"example.com:9100\"\n", []string{"1 metrics_listen: "}},
		{"memcache port 0", "[memcache]\nservers = [\"127.0.0.1:0\"]\n", []string{"2 memcache.servers: "}},
		{"memcache no host", "[memcache]\nservers = [\":11211\"]\n", []string{"2 memcache.servers: "}},
		{"key prefix too long", "[memcache]\nkey_prefix = \"" + strings.Repeat("k", 65) + "\"\n", []string{"2 memcache.key_prefix: "}},
		{"key prefix CR LF", "[memcache]\nkey_prefix = \"a\\r\\nflush_all\"\n", []string{"2 memcache.key_prefix: "}},
		{"ldap without urls", "source = \"ldap\"\n[ldap]\nbase_dn = \"dc=x\"\n", []string{"2 ldap.urls: at least one URL"}},
		{"ldap without its section", "source = \"ldap\"\n", []string{"0 ldap.base_dn: must be set", "0 ldap.urls: at least one URL"}},
		{"ldap filter without placeholder", ldap + "recipient_filter = \"(mail=x)\"\n", []string{"5 ldap.recipient_filter: "}},
		{"ldap filter unbalanced", ldap + "host_filter = \"(|(cn=%s)(ipHostNumber=%s)\"\n", []string{"5 ldap.host_filter: "}},
		{"ldap filter closes early", ldap + "host_filter = \"(cn=%s))(|(cn=*)\"\n", []string{"5 ldap.host_filter: \"(cn=%s))(|(cn=*)\" has unbalanced parentheses"}},
		{"ldap max_in_flight", ldap + "max_in_flight = 1001\n", []string{"5 ldap.max_in_flight: "}},
		{"ldap password file alone", ldap + "bind_password_file = \"/nonexistent\"\n", []string{"5 ldap.bind_password_file: is set without ldap.bind_dn", "5 ldap.bind_password_file: stat /nonexistent: no such file"}},
		{"inline table section", "cache = { size = 7 }\n", nil},
		{"case matters", "Listen = \"inet:1@127.0.0.1\"\n", []string{"1 Listen: unknown key"}},
		{"unknown in inline table", "cache = { sise = 7 }\n", []string{"1 cache.sise: unknown key"}},
		{"ldap missing CA", ldap + "tls_ca_file = \"/nonexistent/ca.pem\"\n", []string{"5 ldap.tls_ca_file: "}},
		{"domain with @", "[recipients]\ndomains = [\"@example.com\"]\n", []string{"2 recipients.domains: "}},
		{"delimiter space", "[recipients]\nrecipient_delimiter = \"+ \"\n", []string{"2 recipients.recipient_delimiter: "}},
		// What lookup.NewChecker and lookup.NewLDAP refuse, config refuses.
		{"delimiter quote", "[recipients]\nrecipient_delimiter = \"+\\\"\"\n", []string{`2 recipients.recipient_delimiter: recipient delimiter '"' is not allowed`}},
		{"delimiter backslash", "[recipients]\nrecipient_delimiter = '\\-'\n", []string{`2 recipients.recipient_delimiter: recipient delimiter '\\' is not allowed`}},
		{"always_accept with a quote", "[recipients]\nalways_accept = ['ab\"use']\n", []string{`2 recipients.always_accept: always-accepted local part "ab\"use" is not a plain local part`}},
		{"always_accept with a backslash", "[recipients]\nalways_accept = ['ab\\use', 'abuse']\n", []string{"2 recipients.always_accept: always-accepted local part"}},
		{"always_accept with a control character", "[recipients]\nalways_accept = [\"ab\\u0001use\"]\n", []string{"2 recipients.always_accept: always-accepted local part"}},
		{"domain invalid A-label", "[recipients]\ndomains = [\"xn--a.example\"]\n", []string{`2 recipients.domains: domain "xn--a.example": `}},
		{"domain IDN joiner", "[recipients]\ndomains = [\"a\\u200Db.example\", \"bücher.example\"]\n", []string{`2 recipients.domains: domain "a\u200db.example": `}},
		{"domain bad label", "[recipients]\ndomains = [\"exa..mple.com\"]\n", []string{`2 recipients.domains: domain "exa..mple.com": `}},
		{"ldap two filters side by side", ldap + "recipient_filter = \"(mail=%s)(cn=%s)\"\n", []string{`5 ldap.recipient_filter: filter template "(mail=%s)(cn=%s)": `}},
		{"ldap filter bad operator", ldap + "recipient_filter = \"(mail~~%s)\"\n", []string{`5 ldap.recipient_filter: filter template`}},
		{"ldap host filter %d", ldap + "host_filter = \"(associatedDomain=%d)\"\n", []string{"5 ldap.host_filter: filter template \"(associatedDomain=%d)\": a host filter may only use %s"}},
		{"ldap host filter %u", ldap + "host_filter = \"(|(cn=%s)(uid=%u))\"\n", []string{"5 ldap.host_filter: filter template \"(|(cn=%s)(uid=%u))\": a host filter may only use %s"}},
		{"ldap host filter %u, hosts off", ldap + "host_filter = \"(uid=%u)\"\n[hosts]\nenabled = false\n", []string{"5 ldap.host_filter: filter template \"(uid=%u)\": a host filter may only use %s"}},
		{"ldap host filter %%d is a literal", ldap + "host_filter = \"(&(cn=%s)(description=100%%d))\"\n", nil},
		{"ldap no filter at all", ldap + "recipient_filter = \"\"\nhost_filter = \"\"\n[hosts]\nenabled = false\n[recipients]\nenabled = false\n", []string{"5 ldap.recipient_filter: and ldap.host_filter are both empty"}},
		{"ldap URL without a host", "source = \"ldap\"\n[ldap]\nurls = [\"ldap://\", \"ldaps://[::1\"]\nbase_dn = \"dc=x\"\n", []string{`3 ldap.urls: ldap URL "ldap://": no host`, `3 ldap.urls: ldap URL "ldaps://[::1": `}},
		{"ldap CA file without a certificate", ldap + "tls_ca_file = \"testdata/full.toml\"\n", []string{"5 ldap.tls_ca_file: ldap CA file testdata/full.toml: no PEM certificate in it"}},
		{"syntax error", "listen = \"inet:1@x\nmode = 1\n", []string{"1 listen: "}},
		{"duplicate key", "mode = \"report\"\nmode = \"enforce\"\n", []string{"2 mode: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, es := parse(t, tt.data)
			if len(es) != len(tt.want) {
				t.Fatalf("%d errors, want %d:\n%v", len(es), len(tt.want), es)
			}
			for i, e := range es {
				got := fmt.Sprintf("%d %s: %s", e.Line, e.Key, e.Msg)
				if !strings.HasPrefix(got, tt.want[i]) {
					t.Errorf("error %d: %q, want it to start %q", i, got, tt.want[i])
				}
			}
		})
	}
}

// TestParseReplies: reject replies are 5xx, tempfail replies 4xx, and the
// enhanced code's class agrees with the SMTP code's (Postfix refuses a
// mismatch); one line, with text.
func TestParseReplies(t *testing.T) {
	keys := []struct{ section, key string }{
		{"hosts", "reject_reply"}, {"hosts", "tempfail_reply"},
		{"recipients", "reject_reply"}, {"recipients", "tempfail_reply"},
	}
	tests := []struct {
		reply  string
		reject bool   // valid as a reject reply
		temp   bool   // valid as a tempfail reply
		msg    string // part of the error for a reject key
	}{
		{"550 5.1.1 <{rcpt}>: User unknown", true, false, ""},
		{"554 5.7.1 Go away", true, false, ""},
		{"599 5.999.999 x", true, false, ""},
		{"451 4.3.0 Try later", false, true, "must be a 5xx reply"},
		{"421 4.7.0 Closing", false, true, "must be a 5xx reply"},
		{"550 4.1.1 mismatch", false, false, "disagree in class"},
		{"450 5.1.1 mismatch", false, false, "must be a 5xx reply"},
		{"250 2.0.0 ok", false, false, "must be a 5xx reply"},
		{"550 5.1.1", false, false, "is not a reply"},
		{"550 5.1.1 ", false, false, "is not a reply"},
		{"550 User unknown", false, false, "is not a reply"},
		{"550-5.1.1 multi", false, false, "is not a reply"},
		{"55 5.1.1 short", false, false, "is not a reply"},
		{"650 6.1.1 x", false, false, "is not a reply"},
		{"550 5.1.1000 x", false, false, "is not a reply"},
		{"550 5.1.1 two\r\n550 5.1.1 lines", false, false, "one line"},
		{"550 5.1.1 a\nb", false, false, "one line"},
		{"", false, false, "is not a reply"},
	}
	for _, tt := range tests {
		for _, k := range keys {
			isReject := strings.HasPrefix(k.key, "reject")
			t.Run(k.section+"."+k.key+"="+tt.reply, func(t *testing.T) {
				_, es := parse(t, fmt.Sprintf("[%s]\n%s = %q\n", k.section, k.key, tt.reply))
				valid := tt.temp
				if isReject {
					valid = tt.reject
				}
				if valid {
					if es != nil {
						t.Errorf("refused: %v", es)
					}
					return
				}
				if len(es) != 1 || es[0].Key != k.section+"."+k.key || es[0].Line != 2 {
					t.Fatalf("errors %v, want one at 2 %s.%s", es, k.section, k.key)
				}
				if isReject && !strings.Contains(es[0].Msg, tt.msg) {
					t.Errorf("message %q, want it to say %q", es[0].Msg, tt.msg)
				}
			})
		}
	}
}

// TestParseListen: absurd specs get a clear error naming the key; what
// config accepts, milter.Listen's parser accepts too, so a daemon never
// starts on a config that passed and then fails to listen on it.
func TestParseListen(t *testing.T) {
	tests := []struct {
		spec string
		msg  string // "" when valid
	}{
		{"inet:8890@127.0.0.1", ""},
		{"inet:8890@localhost", ""},
		{"inet:8890", ""},
		{"inet:65535@[127.0.0.1]", ""},
		{"inet6:8890@[::1]", ""},
		{"inet6:8890@::1", ""},
		{"unix:/run/antespam-milter/milter.sock", ""},
		{"local:/tmp/m.sock", ""},
		{"inet:99999@x", `port "99999" is not between 1 and 65535`},
		{"inet:0@127.0.0.1", `port "0" is not between 1 and 65535`},
		{"inet:-1@127.0.0.1", "is not inet:PORT@HOST"},
		{"inet:+25@127.0.0.1", "is not inet:PORT@HOST"},
		{"inet:99999999999999999999999@x", "is not between 1 and 65535"},
		{"unix:", "is not inet:PORT@HOST"},
		{"unix:relative.sock", "is not inet:PORT@HOST"},
		{"local:", "is not inet:PORT@HOST"},
		{"tcp:1", "is not inet:PORT@HOST"},
		{"inet:", "is not inet:PORT@HOST"},
		{"inet:@127.0.0.1", "is not inet:PORT@HOST"},
		{"inet:8890@", "is not inet:PORT@HOST"},
		{"inet:8890@host name", "is not a host name or address"},
		{"inet:8890@a@b", "is not a host name or address"},
		{"inet:8890@a/b", "is not a host name or address"},
		{"inet:8890@[[::1]]", "is not a host name or address"},
		{"inet:8890@127.0.0.1:25", ""}, // net.Listen's problem: a clear error at start
		{"8890", "is not inet:PORT@HOST"},
		{"127.0.0.1:8890", "is not inet:PORT@HOST"},
		{"", "is not inet:PORT@HOST"},
		{"unix:/tmp/a\x00b", "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, es := parse(t, fmt.Sprintf("listen = %q\n", tt.spec))
			if tt.msg == "" {
				if es != nil {
					t.Fatalf("refused: %v", es)
				}
				if tt.spec == "inet:8890@127.0.0.1:25" {
					return
				}
				if _, _, err := milter.ParseSpec(tt.spec); err != nil {
					t.Errorf("config accepts it, milter.ParseSpec refuses it: %v", err)
				}
				return
			}
			if len(es) != 1 || es[0].Key != "listen" || es[0].Line != 1 || !strings.Contains(es[0].Msg, tt.msg) {
				t.Errorf("errors %v, want one at 1 listen saying %q", es, tt.msg)
			}
		})
	}
}

// TestBindPasswordFile: the password comes from a file, trailing newline
// removed; a world-readable file is a warning; an empty or missing one is
// an error; the password never appears in an error or a warning.
func TestBindPasswordFile(t *testing.T) {
	const password = "hunter2-Sup3rSecret"
	dir := t.TempDir()
	conf := func(pw string) string {
		// Domains listed, so that the only warning can be the password's.
		return fmt.Sprintf("source = \"ldap\"\n[ldap]\nurls = [\"ldap://127.0.0.1\"]\nbase_dn = \"dc=x\"\nbind_dn = \"cn=milter,dc=x\"\nbind_password_file = %q\n[recipients]\ndomains = [\"example.com\"]\n", pw)
	}
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		warning string // part of the one warning, "" for none
		err     string // part of the one error, "" for none
	}{
		{"private", write("private", password+"\n", 0o600), "", ""},
		{"group readable", write("group", password+"\r\n", 0o640), "", ""},
		{"world readable", write("world", password, 0o644), "is world-readable (mode 0644)", ""},
		{"world readable only", write("other", password+"\n", 0o604), "world-readable", ""},
		{"empty", write("empty", "", 0o600), "", "holds no password"},
		{"newline only", write("newline", "\n", 0o600), "", "holds no password"},
		{"missing", filepath.Join(dir, "missing"), "", "no such file"},
		{"a directory", dir, "", "is not a regular file"},
		{"a device", "/dev/zero", "", "is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, es := parse(t, conf(tt.path))
			if tt.err != "" {
				if len(es) != 1 || es[0].Key != "ldap.bind_password_file" || es[0].Line != 6 || !strings.Contains(es[0].Msg, tt.err) {
					t.Errorf("errors %v, want one at 6 ldap.bind_password_file saying %q", es, tt.err)
				}
				if strings.Contains(es.Error(), password) {
					t.Errorf("the password is in the error: %v", es)
				}
				return
			}
			if es != nil {
				t.Fatalf("errors: %v", es)
			}
			if c.LDAP.BindPassword != password {
				t.Errorf("BindPassword %q, want %q", c.LDAP.BindPassword, password)
			}
			if tt.warning == "" {
				if len(c.Warnings) != 0 {
					t.Errorf("warnings %q, want none", c.Warnings)
				}
			} else if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], tt.warning) || !strings.Contains(c.Warnings[0], "ldap.bind_password_file") {
				t.Errorf("warnings %q, want one saying %q", c.Warnings, tt.warning)
			}
			for _, w := range c.Warnings {
				if strings.Contains(w, password) {
					t.Errorf("the password is in a warning: %q", w)
				}
			}
			// %v and %+v of the config must not print it either.
			if s := fmt.Sprintf("%v %+v", c.LDAP.URLs, c.Warnings); strings.Contains(s, password) {
				t.Errorf("password printed: %s", s)
			}
		})
	}
	t.Run("with source file it is not read", func(t *testing.T) {
		c, es := parse(t, "[ldap]\nbind_dn = \"cn=x\"\nbind_password_file = \"/nonexistent\"\n")
		if es != nil || c.LDAP.BindPassword != "" {
			t.Errorf("errors %v, password %q", es, c.LDAP.BindPassword)
		}
	})
}

func TestParseAlwaysAccept(t *testing.T) {
	for _, tt := range []struct {
		data string
		want []string
	}{
		{"", []string{"postmaster"}},
		{"[recipients]\nalways_accept = []\n", []string{}},
		{"[recipients]\nalways_accept = [\"abuse\", \"hostmaster\"]\n", []string{"abuse", "hostmaster"}},
	} {
		c, es := parse(t, tt.data)
		if es != nil {
			t.Fatalf("%q: %v", tt.data, es)
		}
		if len(c.Recipients.AlwaysAccept) != len(tt.want) || (len(tt.want) > 0 && !reflect.DeepEqual(c.Recipients.AlwaysAccept, tt.want)) {
			t.Errorf("%q: always_accept %q, want %q", tt.data, c.Recipients.AlwaysAccept, tt.want)
		}
	}
	// The default list is not shared between configs.
	a, _ := parse(t, "")
	a.Recipients.AlwaysAccept[0] = "changed"
	if b, _ := parse(t, ""); b.Recipients.AlwaysAccept[0] != "postmaster" {
		t.Error("Parse shares the default always_accept slice")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "none.toml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want ErrNotExist", err)
	}
}

// TestParseDomainsWarning: checking recipients in every domain is allowed
// but rarely meant (relayed mail to outside domains is checked too).
func TestParseDomainsWarning(t *testing.T) {
	tests := []struct {
		name, data string
		warn       bool
	}{
		{"enabled, no domains", "[recipients]\nenabled = true\n", true},
		{"enabled, empty list", "[recipients]\ndomains = []\n", true},
		{"enabled with domains", "[recipients]\ndomains = [\"example.com\"]\n", false},
		{"disabled, no domains", "[recipients]\nenabled = false\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, es := parse(t, tt.data)
			if es != nil {
				t.Fatalf("errors: %v", es)
			}
			const want = "f.toml: recipients.domains: is empty, so every recipient domain is checked, including mail relayed for trusted or authenticated clients to outside domains; list your domains"
			if tt.warn && (len(c.Warnings) != 1 || c.Warnings[0] != want) {
				t.Errorf("warnings %q, want [%q]", c.Warnings, want)
			}
			if !tt.warn && len(c.Warnings) != 0 {
				t.Errorf("warnings %q, want none", c.Warnings)
			}
		})
	}
}
