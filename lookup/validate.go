package lookup

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// The validators here are the checks NewChecker and NewLDAP make, exported
// so that the config package runs the very same ones: what config-test
// accepts, serve accepts too.

// ValidateCheckerOptions returns every problem NewChecker refuses in opts:
// a domain that does not normalise (an invalid IDN, say), a delimiter that
// cannot be one, an always-accepted local part that is not a plain one.
func ValidateCheckerOptions(opts CheckerOptions) []error {
	var errs []error
	for _, d := range opts.Domains {
		if _, err := NormalizeDomain(strings.TrimSpace(d)); err != nil {
			errs = append(errs, fmt.Errorf("domain %q: %w", d, err))
		}
	}
	for _, r := range opts.RecipientDelimiter {
		// Quotes and backslashes would split a quoted local part in the
		// middle of its quoting.
		if r == '@' || r == '"' || r == '\\' || r <= ' ' || r == 0x7f {
			errs = append(errs, fmt.Errorf("recipient delimiter %q is not allowed", r))
		}
	}
	for _, l := range opts.AlwaysAccept {
		if l == "" || strings.ContainsAny(l, "@\"\\") || checkText(l) != nil {
			errs = append(errs, fmt.Errorf("always-accepted local part %q is not a plain local part", l))
		}
	}
	return errs
}

// Sample candidates that ValidateFilter substitutes into a template.
const (
	sampleRecipient = "user@example.com"
	sampleHost      = "192.0.2.1"
)

// ValidateFilter checks a filter template of kind (see
// LDAPOptions.RecipientFilter): the filter it gives for a sample candidate
// must compile, and a host template may only use %s, as a host has no
// local part or domain (%u or %d would make every host lookup a miss).
func ValidateFilter(template string, kind Kind) error {
	sample := sampleRecipient
	if kind == Host {
		sample = sampleHost
		for i := 0; i+1 < len(template); i++ {
			if template[i] != '%' {
				continue
			}
			i++
			if c := template[i]; c == 'u' || c == 'd' {
				return fmt.Errorf("filter template %q: a host filter may only use %%s (a host has no local part or domain, so %%%c never matches)", template, c)
			}
		}
	}
	f, ok := expandFilter(template, sample, kind)
	if !ok {
		return fmt.Errorf("filter template %q gives no filter for %s", template, sample)
	}
	if _, err := ldap.CompileFilter(f); err != nil {
		return fmt.Errorf("filter template %q: %w", template, err)
	}
	return nil
}

// ValidateLDAPURL checks one ldap://, ldaps:// or ldapi:// URL as NewLDAP
// parses it.
func ValidateLDAPURL(raw string) error {
	_, err := parseLDAPURL(raw, false, &tls.Config{})
	return err
}

// ValidateCAFile checks that path holds at least one PEM certificate, as
// NewLDAP requires of TLSCAFile.
func ValidateCAFile(path string) error {
	_, err := loadCAFile(path)
	return err
}

// loadCAFile reads the PEM certificates in path.
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ldap read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ldap CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// validateLDAPOptions is every check NewLDAP makes of opts before it
// dials, defaults applied.
func validateLDAPOptions(opts LDAPOptions) error {
	if len(opts.URLs) == 0 {
		return errors.New("ldap: no URLs")
	}
	if opts.BaseDN == "" {
		return errors.New("ldap: no base DN")
	}
	if opts.BindDN != "" && opts.BindPassword == "" {
		// go-ldap refuses an unauthenticated simple bind (RFC 4513 5.1.2).
		return fmt.Errorf("ldap: bind DN %q has an empty password", opts.BindDN)
	}
	if opts.RecipientFilter == "" && opts.HostFilter == "" {
		return errors.New("ldap: neither a recipient nor a host filter")
	}
	for _, f := range []struct {
		tmpl string
		kind Kind
	}{{opts.RecipientFilter, Recipient}, {opts.HostFilter, Host}} {
		if f.tmpl == "" {
			continue
		}
		if err := ValidateFilter(f.tmpl, f.kind); err != nil {
			return fmt.Errorf("ldap %w", err)
		}
	}
	return nil
}
