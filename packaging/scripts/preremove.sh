#!/bin/sh
# antespam-milter prerm (deb: remove|upgrade|...; rpm %preun: 0|1).
# When the package is removed (not upgraded), stops the daemon and disables
# the unit while its file still exists; an upgrade restarts the daemon in
# postinst instead.
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	# deb-systemd-invoke (Debian) honours policy-rc.d; rpm has systemctl.
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke stop antespam-milter.service >/dev/null 2>&1 || true
	else
		systemctl stop antespam-milter.service >/dev/null 2>&1 || true
	fi
fi
# Removes the enablement symlinks however they were made (deb-systemd-helper
# only removes its own); works without a running systemd too.
if command -v systemctl >/dev/null 2>&1; then
	systemctl --no-reload disable antespam-milter.service >/dev/null 2>&1 || true
fi
exit 0
