# antespam-milter. `make run` starts the daemon on the example config;
# `make test` installs what the tests need (as root, with apt-get) and runs
# every test against real memcached, slapd, Postfix and Sendmail.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null | sed 's/^v//' | grep -E '^[0-9]' || echo "0.0.0+g$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/antespam-milter
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'
TEST_TIMEOUT ?= 9m

.PHONY: all build run test test-deps check vet staticcheck fmt bench package deb rpm clean

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/antespam-milter

run: build
	@echo "antespam-milter on inet:8890@127.0.0.1 with examples/antespam-milter.toml (Ctrl-C stops it)"
	@echo "try:  $(BIN) check -config examples/antespam-milter.toml rcpt alice@example.com nobody@example.com"
	@echo "Postfix main.cf:   smtpd_milters = inet:127.0.0.1:8890"
	@echo "Sendmail .mc:      INPUT_MAIL_FILTER(\`antespam', \`S=inet:8890@127.0.0.1, F=T, T=C:10s;S:10s;R:10s;E:5m')"
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

clean:
	rm -rf bin dist
