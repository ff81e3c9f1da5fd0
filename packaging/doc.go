// Package packaging holds no code: the directory is the distro packaging of
// antespam-milter, built by `make package` with nfpm (nfpm.yaml). It ships
// the default configuration (antespam-milter.toml), the empty lists, the
// maintainer scripts (scripts/), the sysusers.d entry, the man page source
// (antespam-milter.8.md), the Debian copyright, changelog and lintian
// overrides, and the Postfix chroot drop-in example; the unit is
// antespam-milter.service at the repository root.
//
// The tests build both packages, install the .deb on the test machine (as
// root, purged again afterwards), and check the files, the user, the
// installed binary, an upgrade that keeps an edited config, removal and
// purge, lintian, the .rpm's layout and scripts, and the unit's
// systemd-analyze verify and security score.
package packaging
