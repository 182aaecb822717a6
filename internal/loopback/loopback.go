// Package loopback holds the one rule every part of astro-sts applies to a
// URL that carries a token: https, or plain http only to this machine.
// Keeping the rule in one place keeps the broker's and the rotate command's
// configuration, the action, the Astro client, the OIDC verifier and the
// sinks in agreement about what "this machine" means and what a base URL
// may hold.
//
// One URL is deliberately not checked here: the runner's
// ACTIONS_ID_TOKEN_REQUEST_URL. It is set by the runner, not by a user; it
// carries a query by design (go-githubactions appends `&audience=` to it);
// and the action hands it to go-githubactions untouched, as @actions/core
// does.
package loopback

import (
	"errors"
	"net"
	"net/url"
	"strings"
)

// ErrInsecure is matched (with [errors.Is]) by the error of [ParseURL] for
// a URL whose scheme is not https, or is plain http to another machine.
var ErrInsecure = errors.New("insecure URL")

// insecure is a reason that is also [ErrInsecure].
type insecure string

func (e insecure) Error() string      { return string(e) }
func (insecure) Is(target error) bool { return target == ErrInsecure }

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

// ParseURL parses raw as the base URL of a service a token is sent to:
// absolute, https, or plain http only to a loopback host ([IsHost]); no
// user information (a credential has no place in a setting that is
// printed), no query and no fragment (a base URL has paths appended to it).
//
// The error never repeats raw, which may carry a credential: the caller
// adds the name of its setting.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, errors.New("not a URL")
	case u.User != nil:
		return nil, errors.New("must not contain user information")
	case u.Host == "":
		return nil, errors.New("has no host")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("must not have a query or fragment")
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		if IsHost(u.Hostname()) {
			return u, nil
		}
		return nil, insecure("plain http is allowed only for loopback hosts")
	default:
		return nil, insecure("scheme must be https")
	}
}
