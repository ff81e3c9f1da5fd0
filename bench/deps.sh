#!/usr/bin/env bash
# Installs what `make bench` needs: first everything `make test` needs
# (scripts/test-deps.sh: slapd, memcached, postfix, util-linux, ...),
# then, beyond it, postfix-ldap (Postfix's ldap: tables, for the
# native-LDAP setup (c) of bench-postfix). Services are kept from starting
# by a temporary policy-rc.d, as in scripts/test-deps.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/scripts/test-deps.sh" >/dev/null
want=(postfix-ldap)
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
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
	apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
