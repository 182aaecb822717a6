package astro

import (
	"errors"
	"net/http"
)

// NotProcessed reports whether err proves that Astro did not act on the
// request: it was refused before being sent ([ErrInvalidArgument], a token
// that cannot be sent), the connection was never established, or Astro
// answered 4xx (a 429 included: the request was turned away, not done).
// For any other error (a timeout, a reset, a 5xx, an answer that could not
// be read) the request may have been carried out, and for a create that
// means a token may exist that nobody got: the caller must go and look.
func NotProcessed(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrInvalidConfig) {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode >= 400 && ae.StatusCode < 500 && ae.StatusCode != http.StatusRequestTimeout
	}
	var te *transportError
	if errors.As(err, &te) {
		return te.neverSent()
	}
	return false
}
