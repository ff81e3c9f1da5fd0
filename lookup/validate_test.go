package lookup

import (
	"strings"
	"testing"
)

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		tmpl string
		kind Kind
		want string // part of the error, "" for none
	}{
		{"(|(mail=%s)(mailLocalAddress=%s))", Recipient, ""},
		{"(&(uid=%u)(associatedDomain=%d))", Recipient, ""},
		{"(|(ipHostNumber=%s)(cn=%s))", Host, ""},
		{"(description=100%%d)", Host, ""}, // %% is a literal percent
		{"(mail=%s)(cn=%s)", Recipient, "filter template"},
		{"(mail=%s", Recipient, "filter template"},
		{"mail=%s", Recipient, "filter template"},
		{"(associatedDomain=%d)", Host, "may only use %s"},
		{"(uid=%u)", Host, "may only use %s"},
	}
	for _, tt := range tests {
		err := ValidateFilter(tt.tmpl, tt.kind)
		if tt.want == "" {
			if err != nil {
				t.Errorf("ValidateFilter(%q, %s): %v", tt.tmpl, tt.kind, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ValidateFilter(%q, %s) = %v, want an error about %q", tt.tmpl, tt.kind, err, tt.want)
		}
	}
}

func TestValidateCheckerOptions(t *testing.T) {
	tests := []struct {
		name string
		opts CheckerOptions
		errs int
	}{
		{"valid", CheckerOptions{Domains: []string{"example.com", "bücher.example", "xn--bcher-kva.example"}, RecipientDelimiter: "+-", AlwaysAccept: []string{"abuse"}}, 0},
		{"invalid A-label", CheckerOptions{Domains: []string{"xn--a.example"}}, 1},
		{"joiner outside its context", CheckerOptions{Domains: []string{"a\u200db.example"}}, 1},
		{"quote and backslash delimiters", CheckerOptions{RecipientDelimiter: `+"\`}, 2},
		{"always_accept with a quote", CheckerOptions{AlwaysAccept: []string{`ab"use`, "ok", ""}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if errs := ValidateCheckerOptions(tt.opts); len(errs) != tt.errs {
				t.Errorf("%d errors, want %d: %v", len(errs), tt.errs, errs)
			}
		})
	}
}
