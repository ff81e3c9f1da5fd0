#!/usr/bin/env bash
# Installs, with apt-get, what `make bench` needs beyond `make test-deps`:
# postfix-ldap (Postfix's ldap: tables, for the native-LDAP setup (c) of
# bench-postfix). Services are kept from starting by a temporary
# policy-rc.d, as in scripts/test-deps.sh.
set -euo pipefail
want=(postfix-ldap slapd memcached postfix util-linux)
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" = 0 ] || { echo "bench deps: need root to install: ${missing[*]}" >&2; exit 1; }
echo "bench deps: installing ${missing[*]}"
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
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
	apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
