package loopback_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/loopback"
)

func TestIsHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"LOCALHOST", true},
		{"127.0.0.1", true},
		{"127.8.9.10", true},
		{"::1", true},
		{"", false},
		{"0.0.0.0", false},
		{"::", false},
		{"10.0.0.1", false},
		{"127.0.0.1.example.com", false},
		{"localhost.example.com", false},
		{"[::1]", false}, // a Hostname() never has brackets
		{"api.astronomer.io", false},
	} {
		if got := loopback.IsHost(tc.host); got != tc.want {
			t.Errorf("IsHost(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw      string
		want     string // the error; "" when accepted
		insecure bool
	}{
		{raw: "https://api.astronomer.io/v1"},
		{raw: "https://vault.example.com:8200"},
		{raw: "http://127.0.0.1:8888/v1"},
		{raw: "http://localhost:8888"},
		{raw: "HTTP://127.0.0.1"},
		{raw: "http://[::1]:8200"},
		{raw: "http://api.astronomer.io/v1", want: "plain http is allowed only for loopback hosts", insecure: true},
		{raw: "http://127.0.0.1.evil.com", want: "plain http is allowed only for loopback hosts", insecure: true},
		{raw: "http://0.0.0.0:80", want: "plain http is allowed only for loopback hosts", insecure: true},
		{raw: "ftp://127.0.0.1/", want: "scheme must be https", insecure: true},
		{raw: "https://user:hunter2@vault.example.com", want: "must not contain user information"},
		{raw: "http://localhost@evil.com", want: "must not contain user information"},
		{raw: "https://user:hunter2@", want: "must not contain user information"},
		{raw: "https://api.astronomer.io/v1?token=hunter2", want: "must not have a query or fragment"},
		{raw: "https://api.astronomer.io/v1?", want: "must not have a query or fragment"},
		{raw: "https://api.astronomer.io/v1#top", want: "must not have a query or fragment"},
		{raw: "/v1", want: "has no host"},
		{raw: "https:///v1", want: "has no host"},
		{raw: "mailto:ops@example.com", want: "has no host"},
		{raw: "", want: "has no host"},
		{raw: "::::", want: "not a URL"},
		{raw: "https://h/%zz", want: "not a URL"},
	} {
		u, err := loopback.ParseURL(tc.raw)
		if tc.want == "" {
			if err != nil || u == nil {
				t.Errorf("ParseURL(%q) = %v, %v; want a URL", tc.raw, u, err)
			}
			continue
		}
		if err == nil || err.Error() != tc.want || u != nil {
			t.Errorf("ParseURL(%q) = %v, %v; want %q", tc.raw, u, err, tc.want)
			continue
		}
		if errors.Is(err, loopback.ErrInsecure) != tc.insecure {
			t.Errorf("ParseURL(%q): errors.Is(%v, ErrInsecure) = %v", tc.raw, err, !tc.insecure)
		}
	}
}

// FuzzParseURL: whatever a setting or an input holds, an accepted URL is
// absolute https, or plain http to a loopback host, with no user info,
// query or fragment; a refused one is never echoed (the reason is one of
// a fixed set).
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"https://vault:8200", "http://127.0.0.1:8200/v1", "http://localhost", "http://[::1]:1", "http://[::ffff:127.0.0.1]:1",
		"http://10.0.0.1", "https://u:p@h", "http://127.0.0.1.evil.com", "HTTP://127.0.0.1", "https://", "%zz",
		"http://localhost@evil.com", "https://h/?q", "https://h/#f", "//h/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := loopback.ParseURL(raw)
		if err != nil {
			// A reason from a fixed set cannot carry the URL.
			switch err.Error() {
			case "not a URL", "must not contain user information", "has no host", "must not have a query or fragment",
				"plain http is allowed only for loopback hosts", "scheme must be https":
			default:
				t.Errorf("unexpected reason %q", err)
			}
			return
		}
		if u.User != nil || u.Host == "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			t.Fatalf("accepted %q: user info, no host, a query or a fragment", raw)
		}
		switch u.Scheme {
		case "https":
		case "http":
			ip := net.ParseIP(u.Hostname())
			if !strings.EqualFold(u.Hostname(), "localhost") && (ip == nil || !ip.IsLoopback()) {
				t.Fatalf("accepted plain http to %q", u.Hostname())
			}
		default:
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
	})
}
