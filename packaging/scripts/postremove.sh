#!/bin/sh
# antespam-milter postrm (deb: remove|purge|upgrade|...; rpm %postun: 0|1).
# After removal, reloads systemd's view of the units. On purge (deb), also
# deletes /etc/antespam-milter with whatever the admin added there (a bind
# password file, say). The antespam-milter user and group stay, as Debian
# policy asks: files elsewhere may still belong to them.
set -e

case "$1" in
remove | purge | 0)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
esac
if [ "$1" = purge ]; then
	rm -rf /etc/antespam-milter
fi
exit 0
