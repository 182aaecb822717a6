package idtoken

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/astro-sts/astro-sts/internal/loopback"
)

// maxResponseSize caps discovery and JWKS answers: GitHub's are a few KiB.
const maxResponseSize = 1 << 20

// maxRedirects bounds redirects on discovery and JWKS fetches.
const maxRedirects = 3

// errResponseTooLarge is returned by a response body that exceeds
// maxResponseSize.
var errResponseTooLarge = errors.New("response body too large")

// urlRule follows [loopback.ParseURL]'s reason in an error about an issuer
// or a jwks_uri: the reason names the problem, this the rule.
const urlRule = "want https://host[/path], plain http only to a loopback host, with no user info, query or fragment"

// boundedClient returns a copy of c (or a default client with timeouts when
// c is nil) whose responses are capped at maxResponseSize and whose
// redirects must stay on https or loopback http. The caller's client is not
// modified.
func boundedClient(c *http.Client) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	} else {
		out = http.Client{Timeout: 10 * time.Second}
	}
	base := out.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out.Transport = limitTransport{base: base}
	inner := out.CheckRedirect
	out.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		// The target's query is its own business (a signed CDN URL, say):
		// only where the keys come from is checked.
		if _, err := loopback.ParseURL(req.URL.Scheme + "://" + req.URL.Host + req.URL.EscapedPath()); err != nil {
			return fmt.Errorf("redirect refused: %v", err)
		}
		if inner != nil {
			return inner(req, via)
		}
		return nil
	}
	return &out
}

// limitTransport caps the size of every response body.
type limitTransport struct{ base http.RoundTripper }

func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: maxResponseSize}
	return resp, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Read one more byte to tell "exactly at the limit" from "over it".
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, errResponseTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
