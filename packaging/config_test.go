package packaging_test

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/internal/testserver"
)

// shippedConfig is the default configuration the packages install.
func shippedConfig(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testserver.RepoRoot(t), "packaging", "antespam-milter.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestShippedConfigRejectsNothing checks the installed default: valid, the
// file source, the recipient check off, and the address the issue names.
func TestShippedConfigRejectsNothing(t *testing.T) {
	c, err := config.Parse("antespam-milter.toml", shippedConfig(t))
	if err != nil {
		t.Fatalf("shipped config is invalid:\n%v", err)
	}
	if len(c.Warnings) > 0 {
		t.Errorf("warnings: %q", c.Warnings)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "inet:8890@127.0.0.1"},
		{"source", c.Source, "file"},
		{"mode", c.Mode, "enforce"},
		{"recipients.enabled", c.Recipients.Enabled, false},
		{"recipients.domains", len(c.Recipients.Domains), 0},
		{"hosts.on_lookup_error", c.Hosts.OnLookupError, "accept"},
		{"file.recipients", c.File.Recipients, "/etc/antespam-milter/recipients"},
		{"file.hosts", c.File.Hosts, "/etc/antespam-milter/hosts"},
		{"memcache.servers", len(c.Memcache.Servers), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	// The shipped lists hold comments only: nothing is listed.
	for _, name := range []string{"recipients", "hosts"} {
		data, err := os.ReadFile(filepath.Join(testserver.RepoRoot(t), "packaging", name))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				t.Errorf("packaging/%s:%d lists %q; the shipped lists must be empty", name, i+1, l)
			}
		}
	}
}

var (
	sectionRE = regexp.MustCompile(`^#?\s*\[([a-z_]+)\]`)
	keyRE     = regexp.MustCompile(`^#?\s*([a-z_]+)\s*=`)
)

// TestShippedConfigDocumentsEveryKey checks that every key of
// config.Config appears in the shipped file, set or commented out, in its
// section.
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	present := map[string]bool{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(shippedConfig(t))))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "##") {
			continue
		}
		if m := sectionRE.FindStringSubmatch(line); m != nil {
			section = m[1] + "."
			continue
		}
		if m := keyRE.FindStringSubmatch(line); m != nil {
			present[section+m[1]] = true
		}
	}
	for _, key := range configKeys(reflect.TypeOf(config.Config{}), "") {
		if !present[key] {
			t.Errorf("packaging/antespam-milter.toml does not show %s", key)
		}
	}
}

// configKeys lists "section.key" for every TOML key of a config struct.
func configKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			keys = append(keys, configKeys(f.Type, prefix+tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	return keys
}

// uncommented returns the shipped config with the commented [memcache] and
// [ldap] sections switched on and source = "ldap", as an admin would.
func uncommented(data []byte) []byte {
	var out []string
	inBlock := false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case line == "#[memcache]" || line == "#[ldap]":
			inBlock = true
			out = append(out, strings.TrimPrefix(line, "#"))
		case inBlock && strings.HasPrefix(line, "##"):
		case inBlock && strings.HasPrefix(line, "#"):
			out = append(out, strings.TrimPrefix(line, "#"))
		case line == `source = "file"`:
			inBlock = false
			out = append(out, `source = "ldap"`)
		default:
			inBlock = false
			out = append(out, line)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

// TestShippedConfigSectionsUncomment checks that the ready-to-uncomment
// [ldap] and [memcache] sections are valid once uncommented, and that
// every value the file shows is the daemon's default (the file says so).
func TestShippedConfigSectionsUncomment(t *testing.T) {
	c, err := config.Parse("uncommented.toml", uncommented(shippedConfig(t)))
	if err != nil {
		t.Fatalf("shipped config with [ldap] and [memcache] uncommented is invalid:\n%v", err)
	}
	if c.Source != "ldap" || len(c.LDAP.URLs) == 0 || len(c.Memcache.Servers) == 0 {
		t.Fatalf("uncommenting did not switch on LDAP and memcached: source %q, urls %q, servers %q",
			c.Source, c.LDAP.URLs, c.Memcache.Servers)
	}

	// What the file sets on purpose, against the defaults.
	want := config.Default()
	want.Source = "ldap"
	want.Recipients.Enabled = false
	want.LDAP.URLs = c.LDAP.URLs
	want.LDAP.BaseDN = c.LDAP.BaseDN
	want.Memcache.Servers = c.Memcache.Servers
	got := *c
	got.Path, got.Warnings = "", nil
	for _, s := range []*[]string{&got.TrustedNetworks, &got.Recipients.Domains, &want.TrustedNetworks, &want.Recipients.Domains} {
		if len(*s) == 0 {
			*s = nil
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the shipped config's values differ from config.Default():\n got %+v\nwant %+v", got, want)
	}
}
