package main

import (
	"fmt"
	"io"
)

// configTest loads the config, prints every error and warning, one per
// line, and exits 2 when it is invalid or prints "config OK".
func configTest(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("config-test", stderr)
	if st, ok := parseFlags(fs, args); !ok {
		return st
	}
	if fs.NArg() != 0 {
		return usage(stderr, "config-test takes no arguments")
	}
	cfg := loadConfig(*path, stderr)
	if cfg == nil {
		return exitUsage
	}
	fmt.Fprintf(stdout, "config OK: %s\n", cfg.Path)
	return exitOK
}
