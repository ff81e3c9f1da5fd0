// Package config reads antespam-milter's TOML configuration.
//
// Decoding is strict: a key the daemon does not know is an error naming it.
// Defaults are applied first, then every value is validated and every
// problem is reported at once, each as "FILE:LINE: section.key: message"
// when the line of the key is known. Load never returns a partly valid
// Config: callers keep running on their previous one when it fails, which
// is how a SIGHUP with a broken file leaves the daemon untouched.
package config
