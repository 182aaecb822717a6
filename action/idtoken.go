package action

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/internal/retry"
)

// ErrNoIDToken means the job cannot get an OIDC token at all: the runner
// did not set ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN, which happens when the job
// lacks `permissions: id-token: write` (and always for pull requests from
// forks).
var ErrNoIDToken = errors.New("no OIDC token: add `permissions: id-token: write` to the job (or workflow); pull requests from forks never get one")

// IDTokenError reports that the runner's token endpoint refused or failed
// every attempt. It carries the status only: the endpoint's body is not
// shown.
type IDTokenError struct {
	Status   int // 0 when no response came back
	Attempts int
	Err      error // the last transport error, when Status is 0
}

func (e *IDTokenError) Error() string {
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return fmt.Sprintf("the runner refused the OIDC token request (%d): check the job's `permissions: id-token: write`", e.Status)
	case e.Status != 0:
		return fmt.Sprintf("the runner's OIDC token endpoint failed (%d) after %d attempts: re-run the job", e.Status, e.Attempts)
	default:
		return fmt.Sprintf("could not reach the runner's OIDC token endpoint after %d attempts (%v): re-run the job", e.Attempts, e.Err)
	}
}

func (e *IDTokenError) Unwrap() error { return e.Err }

// idTokens fetches a fresh GitHub OIDC token for each broker call: the
// broker accepts each token (jti) once, so a retry or the post step cannot
// reuse one.
//
// [githubactions.Action.GetIDToken] makes a single request, so transient
// failures (no response, 429, 5xx) are retried here.
type idTokens struct {
	a        *githubactions.Action
	audience string
	retry    retry.Policy
	timeout  time.Duration // of each attempt
}

// fetch returns a fresh token, already masked: it is a bearer credential for
// the broker, so it must never show in the log (@actions/core masks it too).
func (s idTokens) fetch(ctx context.Context) (string, error) {
	var tok string
	err := s.retry.Do(ctx, func(attempt int) error {
		actx, cancel := context.WithTimeout(ctx, s.timeout)
		t, err := s.a.GetIDToken(actx, s.audience)
		cancel()
		err = explainTimeout(ctx, err, "the runner's OIDC token endpoint", s.timeout)
		if err == nil && t != "" {
			tok = t
			return nil
		}

		var missing *githubactions.EnvMissingError
		if errors.As(err, &missing) {
			return ErrNoIDToken
		}
		transient := true
		last := &IDTokenError{Attempts: attempt}
		var failed *githubactions.RequestFailedError
		switch {
		case errors.As(err, &failed):
			// The body is dropped: it is the runner's, not ours to show.
			last.Status = failed.StatusCode
			transient = failed.StatusCode >= 500 || failed.StatusCode == http.StatusTooManyRequests
		case err == nil:
			last.Err = errors.New("the endpoint answered without a token")
		default:
			last.Err = err
		}
		if transient {
			return retry.Again(last, 0)
		}
		return last
	})
	if err != nil {
		return "", err
	}
	mask(s.a, tok)
	return tok, nil
}
