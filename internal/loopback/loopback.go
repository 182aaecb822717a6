// Package loopback holds the one rule every part of astro-sts applies to a
// URL that carries a token: plain http is allowed only to this machine.
// Keeping the rule in one place keeps the broker, the action, the Astro
// client, the OIDC verifier and the sinks in agreement about what "this
// machine" means.
package loopback

import (
	"net"
	"strings"
)

// IsHost reports whether host (a URL's Hostname(), without port or
// brackets) is "localhost" or a loopback IP address (127.0.0.0/8, ::1).
// A name that merely starts with "127." or "localhost." is not.
func IsHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
