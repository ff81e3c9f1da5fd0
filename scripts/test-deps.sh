#!/usr/bin/env bash
# Installs, with apt-get, what `make test` needs when it is missing:
# memcached, slapd, ldap-utils, postfix, swaks, m4, rpm, lintian, openssl,
# systemd (systemd-analyze), man-db and strace for the packaging tests,
# and Sendmail's .debs unpacked (not installed: they conflict with postfix)
# under .cache/sendmail. Services are kept from starting by a temporary
# policy-rc.d; the tests start their own instances on loopback ports.
# Arguments name more packages to install the same way (bench/deps.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# libdb5.3 ... liblockfile1: the libraries of the unpacked sendmail-bin.
want=(memcached slapd ldap-utils postfix swaks m4 rpm lintian openssl procps iproute2 util-linux systemd man-db strace
	libdb5.3 libldap-2.5-0 liblockfile1 libnsl2 libsasl2-2 libssl3 libwrap0
	"$@")
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || { echo "test-deps: need root to install: ${missing[*]}" >&2; exit 1; }
	echo "test-deps: installing ${missing[*]}"
	made_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
	export DEBIAN_FRONTEND=noninteractive
	printf '%s\n' 'slapd slapd/no_configuration boolean true' \
		'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
sm="$top/.cache/sendmail"
if [ ! -x "$sm/usr/libexec/sendmail/sendmail" ] || [ ! -f "$sm/usr/share/sendmail/cf/m4/cf.m4" ]; then
	echo "test-deps: fetching sendmail .debs"
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download sendmail-bin sendmail-base sendmail-cf >/dev/null 2>&1 || { apt-get update -qq && apt-get download sendmail-bin sendmail-base sendmail-cf >/dev/null; })
	mkdir -p "$sm"
	for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$sm"; done
	rm -rf "$tmp"
fi
echo "test-deps: ok"
