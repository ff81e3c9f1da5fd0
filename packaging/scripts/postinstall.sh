#!/bin/sh
# antespam-milter postinst (deb: configure [old-version]; rpm %post: 1|2).
# Reloads systemd's view of the unit and, on upgrade, restarts a running
# daemon. Nothing is enabled or started on a first install: the default
# config rejects nothing; configure it, then
# `systemctl enable --now antespam-milter`.
set -e

upgrade=
case "$1" in
configure) [ -n "$2" ] && upgrade=1 ;;
1) ;;
2) upgrade=1 ;;
*) exit 0 ;;
esac

# Only when systemd is the running init (not in a chroot or container build).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ -n "$upgrade" ]; then
		# deb-systemd-invoke (Debian) honours policy-rc.d; rpm has systemctl.
		if command -v deb-systemd-invoke >/dev/null 2>&1; then
			deb-systemd-invoke try-restart antespam-milter.service >/dev/null 2>&1 || true
		else
			systemctl try-restart antespam-milter.service >/dev/null 2>&1 || true
		fi
	fi
fi
exit 0
