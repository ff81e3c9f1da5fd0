package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// workload draws recipients and client addresses. Generated recipients are
// known (user<i>@domain, i < knownN: what bench/ldapdata puts in the
// directory) or unknown (nobody<i>@domain), repeated (drawn from a pool of
// the first pool of each) or unique (never drawn before in this run, and,
// for unknown ones, tagged with the run id so that no earlier run's cache
// holds them).
type workload struct {
	rcpts     []string // from -rcpt-file
	seq       bool
	clients   []string // from -client-file
	knownFrac float64
	uniqFrac  float64
	pool      int
	knownN    int
	domain    string
	nClients  int
	runID     string

	rcptSeq   atomic.Uint64
	uniqSeq   atomic.Uint64
	clientSeq atomic.Uint64
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no entries", path)
	}
	return out, nil
}

// rcpt returns the next recipient.
func (w *workload) rcpt(r *rand.Rand) string {
	if len(w.rcpts) > 0 {
		if w.seq {
			i := w.rcptSeq.Add(1) - 1
			return w.rcpts[i%uint64(len(w.rcpts))]
		}
		return w.rcpts[r.IntN(len(w.rcpts))]
	}
	known := r.Float64() < w.knownFrac
	if r.Float64() < w.uniqFrac {
		u := w.uniqSeq.Add(1) - 1
		if known {
			// Known keys are finite: unique until knownN have been drawn,
			// which is what "no cache" benchmarks need anyway.
			return "user" + strconv.FormatUint((u+uint64(w.pool))%uint64(w.knownN), 10) + "@" + w.domain
		}
		return "new-" + w.runID + "-" + strconv.FormatUint(u, 10) + "@" + w.domain
	}
	i := r.IntN(w.pool)
	if known {
		return "user" + strconv.Itoa(i%w.knownN) + "@" + w.domain
	}
	return "nobody" + strconv.Itoa(i) + "@" + w.domain
}

// client returns the next client address: from -client-file in turn, or
// one of -clients addresses in 198.18.0.0/15 (RFC 2544, benchmarking), or
// with -clients 0 a fresh address per session.
func (w *workload) client(r *rand.Rand) string {
	if len(w.clients) > 0 {
		i := w.clientSeq.Add(1) - 1
		return w.clients[i%uint64(len(w.clients))]
	}
	var i uint64
	if w.nClients > 0 {
		i = uint64(r.IntN(w.nClients))
	} else {
		i = w.clientSeq.Add(1) - 1
	}
	i %= 1 << 17
	a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
	return a.String()
}
