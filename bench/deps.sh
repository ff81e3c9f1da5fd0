#!/usr/bin/env bash
# Installs what `make bench` needs: everything `make test` needs
# (scripts/test-deps.sh: slapd, memcached, postfix, ...) and, beyond it,
# postfix-ldap (Postfix's ldap: tables, for the native-LDAP setup (c) of
# bench-postfix).
set -euo pipefail
exec bash "$(dirname "$0")/../scripts/test-deps.sh" postfix-ldap
