// Package testserver starts real servers for tests — memcached, OpenLDAP
// slapd, Postfix, Sendmail and the daemon itself — each in a temp dir on a
// free loopback port, stopped by PID in t.Cleanup.
//
// When a server's program is missing the test is skipped, except in CI
// (CI=true), where it fails: a green run that skipped the real servers
// would be a lie. `make test` installs the programs first.
package testserver
