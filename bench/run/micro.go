package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// benchMicro runs the Go benchmarks of the hot path and summarises them.
func benchMicro(string) (string, error) {
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", "500ms", "-count", "3", "./lookup/", "./milter/"}
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	type bm struct {
		pkg           string
		ns            []float64
		bytes, allocs float64
	}
	var names []string
	all := map[string]*bm{}
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(p, "github.com/antespam/antespam-milter/")
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := pkg + "." + f[0]
		b := all[name]
		if b == nil {
			b = &bm{pkg: pkg}
			all[name] = b
			names = append(names, name)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				b.ns = append(b.ns, v)
			case "B/op":
				b.bytes = v
			case "allocs/op":
				b.allocs = v
			}
		}
	}
	if len(names) == 0 {
		return "_No Go benchmarks found in ./lookup/ and ./milter/._\n", nil
	}
	var s strings.Builder
	s.WriteString("| package | benchmark | ns/op median (min–max) of 3 | B/op | allocs/op |\n|---|---|---|---|---|\n")
	for _, n := range names {
		b := all[n]
		fmt.Fprintf(&s, "| %s | %s | %s | %.0f | %.0f |\n", b.pkg, strings.TrimPrefix(n, b.pkg+"."), statsOf(b.ns).f(1), b.bytes, b.allocs)
	}
	fmt.Fprintf(&s, "\nCommand: `go %s`\n", strings.Join(args, " "))
	return s.String(), nil
}
