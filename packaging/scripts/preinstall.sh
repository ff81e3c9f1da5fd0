#!/bin/sh
# antespam-milter preinst (deb: install|upgrade; rpm %pre: 1|2).
# Creates the antespam-milter system user and group before the files are
# unpacked, so that the config files get their group.
set -e

case "$1" in
install | upgrade | 1 | 2) ;;
*) exit 0 ;;
esac

if getent passwd antespam-milter >/dev/null 2>&1; then
	exit 0
fi
if command -v systemd-sysusers >/dev/null 2>&1; then
	# The same line as /usr/lib/sysusers.d/antespam-milter.conf, which is
	# not unpacked yet.
	echo 'u antespam-milter - "antespam-milter daemon" - -' |
		systemd-sysusers --replace=/usr/lib/sysusers.d/antespam-milter.conf -
elif command -v adduser >/dev/null 2>&1 && adduser --help 2>&1 | grep -q -- --system; then
	adduser --system --group --quiet --no-create-home --home /nonexistent \
		--gecos "antespam-milter daemon" antespam-milter
else
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	getent group antespam-milter >/dev/null 2>&1 || groupadd --system antespam-milter
	useradd --system --gid antespam-milter --no-create-home --home-dir / \
		--shell "$nologin" --comment "antespam-milter daemon" antespam-milter
fi
