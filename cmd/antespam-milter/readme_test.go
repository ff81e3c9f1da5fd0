package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/antespam/antespam-milter/config"
	"github.com/antespam/antespam-milter/internal/testserver"
)

// TestReadmeSnippets: the MTA snippets the end-to-end tests use are, byte
// for byte, fenced blocks of the README, so docs and tests cannot drift.
func TestReadmeSnippets(t *testing.T) {
	root := testserver.RepoRoot(t)
	readme := readFile(t, filepath.Join(root, "README.md"))
	for _, name := range []string{"postfix-main.cf.snippet", "sendmail.mc.snippet"} {
		snippet := readFile(t, filepath.Join(root, "examples", name))
		if !strings.HasSuffix(snippet, "\n") || strings.Contains(snippet, "```") {
			t.Errorf("examples/%s must end in a newline and hold no fence", name)
		}
		if !strings.Contains(readme, "```\n"+snippet+"```\n") {
			t.Errorf("README.md has no fenced block equal to examples/%s", name)
		}
	}
}

// TestReadmeConfigKeys: every key of the config is in the README's
// configuration reference, in its section's table, with its default.
func TestReadmeConfigKeys(t *testing.T) {
	readme := readFile(t, filepath.Join(testserver.RepoRoot(t), "README.md"))
	start := strings.Index(readme, "## Configuration reference")
	if start < 0 {
		t.Fatal("README lacks the configuration reference")
	}
	ref, _, _ := strings.Cut(readme[start:], "\n## Postfix")
	keys := 0
	walkKeys(reflect.ValueOf(config.Default()), "", func(sec, key string, def reflect.Value) {
		keys++
		heading := "### Top level"
		if sec != "" {
			heading = "### [" + sec + "]"
		}
		i := strings.Index(ref, heading)
		if i < 0 {
			t.Errorf("README lacks the section %q", heading)
			return
		}
		body, _, _ := strings.Cut(ref[i+len(heading):], "\n### ")
		prefix := "| `" + key + "` | "
		j := strings.Index(body, prefix)
		if j < 0 {
			t.Errorf("README's %s table lacks `%s`", heading, key)
			return
		}
		row, _, _ := strings.Cut(body[j+len(prefix):], "\n")
		if want := readmeDefault(def); !strings.HasPrefix(row, want) {
			t.Errorf("README: %s `%s` default is %q, want it to start with %s", heading, key, row, want)
		}
	})
	if keys < 40 {
		t.Errorf("found only %d config keys", keys)
	}
}

// walkKeys calls f for every TOML key of the config struct v.
func walkKeys(v reflect.Value, sec string, f func(sec, key string, def reflect.Value)) {
	for i := range v.NumField() {
		tag := v.Type().Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Duration(0)) {
			walkKeys(fv, tag, f)
			continue
		}
		f(sec, tag, fv)
	}
}

// readmeDefault renders a default as the README's tables write it.
func readmeDefault(v reflect.Value) string {
	var s string
	switch x := v.Interface().(type) {
	case time.Duration:
		d := x.String()
		switch {
		case x%time.Hour == 0:
			d = fmt.Sprintf("%dh", x/time.Hour)
		case x%time.Minute == 0:
			d = fmt.Sprintf("%dm", x/time.Minute)
		}
		s = `"` + d + `"`
	case string:
		s = `"` + x + `"`
	case []string:
		q := make([]string, len(x))
		for i, e := range x {
			q[i] = `"` + e + `"`
		}
		s = "[" + strings.Join(q, ", ") + "]"
	default:
		s = fmt.Sprint(x)
	}
	return "`" + strings.ReplaceAll(s, "|", "\\|") + "`"
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
