# antespam-milter. `make run` starts the daemon on the example config;
# `make test` installs what the tests need (as root, with apt-get) and runs
# every test against real memcached, slapd, Postfix and Sendmail.
GO       ?= go
# A clone owned by another user makes VCS stamping fail; the version is
# stamped with -ldflags instead.
export GOFLAGS ?= -buildvcs=false
# VERSION is one string for the binary, the .deb and the .rpm, so it has no
# '-' (rpm forbids it; in a deb it would start a Debian revision): tag
# v1.2.3 -> 1.2.3; 3 commits later -> 1.2.3+3.gabc1234; v1.3.0-rc1 ->
# 1.3.0~rc1; a clone without version tags -> 0.0.0+gabc1234.
VERSION  ?= $(shell v=$$(git describe --tags --dirty --match 'v[0-9]*' --match '[0-9]*' 2>/dev/null) && echo "$$v" | sed -E 's/^v//; s/-(rc|alpha|beta|pre)/~\1/; s/-/+/; s/-/./g' || echo "0.0.0+g$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/antespam-milter
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'
TEST_TIMEOUT ?= 9m

.PHONY: all build run test test-deps check vet staticcheck fmt bench package deb rpm package-staging clean

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/antespam-milter

run: build
	@echo "antespam-milter on inet:8890@127.0.0.1 with examples/antespam-milter.toml (file source; Ctrl-C stops it)."
	@echo "Try it from another terminal:"
	@echo "  $(BIN) check -config examples/antespam-milter.toml rcpt alice@example.com alice+news@example.com nobody@example.com"
	@echo "  $(BIN) check -config examples/antespam-milter.toml host 192.0.2.1 mx.bad.example"
	@echo "Postfix main.cf (examples/postfix-main.cf.snippet):"
	@sed 's/^/    /' examples/postfix-main.cf.snippet
	@echo "Sendmail .mc (examples/sendmail.mc.snippet):"
	@sed 's/^/    /' examples/sendmail.mc.snippet
	$(BIN) serve -config examples/antespam-milter.toml

test-deps:
	bash scripts/test-deps.sh

test: test-deps check
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

check: vet staticcheck fmt

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# The long soak of issue 7 (not part of `make test`, whose soak runs 45s):
# e2e/faults' TestSoak for SOAK_DURATION at a steady rate with memcached and
# slapd faults in the middle; it prints RSS, goroutines and reply counts.
SOAK_DURATION ?= 10m
.PHONY: soak
soak: test-deps
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -v -timeout 30m -run '^TestSoak$$' ./e2e/faults/

# Benchmarks (BENCHMARKS.md), not part of `make test`: `make bench` runs
# them all (10-15 minutes, loopback only, everything stopped by PID) and
# rewrites the tables in BENCHMARKS.md; each also runs on its own, e.g.
# `make bench-ceiling BENCH_FLAGS='-rounds 5 -d 6s'`.
BENCH_FLAGS ?=
BENCHES := bench-micro bench-ceiling bench-memcache bench-ldap bench-coalesce bench-memory bench-postfix bench-profile

.PHONY: bench-build bench-deps $(BENCHES)

bench-build: build
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/antespam-bench ./cmd/antespam-bench
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/antespam-noop ./bench/noop
	$(GO) build -o bin/bench-run ./bench/run

bench-deps:
	bash bench/deps.sh

bench: bench-deps bench-build
	bin/bench-run $(BENCH_FLAGS) all

$(BENCHES): bench-deps bench-build
	bin/bench-run $(BENCH_FLAGS) $(@:bench-%=%)

# Packages (packaging/nfpm.yaml, nfpm run as a Go tool): $(DIST)/*.deb and
# $(DIST)/*.rpm, version $(VERSION), the same string the binary prints.
# Generated files (man page, changelog.gz, README) go to $(DIST)/staging.
# The package test runs e.g. `make package VERSION=0.0.1+test BIN=/tmp/x/antespam-milter DIST=/tmp/x`.
DIST        ?= dist
PKG_VERSION := $(VERSION)
PKG_ARCH     = $(shell $(GO) env GOARCH)
PKG_STAGING  = $(DIST)/staging
# File and archive times from the last commit: the same commit gives the same packages.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
NFPM_ENV     = VERSION='$(PKG_VERSION)' GOARCH='$(PKG_ARCH)' PKG_BIN='$(BIN)' PKG_STAGING='$(PKG_STAGING)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)'

package: deb rpm

deb rpm: build package-staging
	$(NFPM_ENV) $(GO) tool nfpm package -p $@ -f packaging/nfpm.yaml -t $(DIST)/

package-staging:
	rm -rf $(PKG_STAGING) && mkdir -p $(PKG_STAGING)
	$(GO) tool go-md2man -in packaging/antespam-milter.8.md -out $(PKG_STAGING)/antespam-milter.8
	gzip -9n $(PKG_STAGING)/antespam-milter.8
	gzip -9nc packaging/changelog >$(PKG_STAGING)/changelog.gz
	if [ -f README.md ]; then cp README.md $(PKG_STAGING)/README.md; \
	else printf '%s\n' 'antespam-milter: see antespam-milter(8) and' 'https://github.com/antespam/antespam-milter' >$(PKG_STAGING)/README.md; fi

clean:
	rm -rf bin dist
