package loopback_test

import (
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
