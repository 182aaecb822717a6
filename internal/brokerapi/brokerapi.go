// Package brokerapi is the broker's HTTP contract: the request and answer
// bodies of /v1/exchange (and its dry run), /v1/revoke and /v1/rotate, the
// error body, and the stable codes and reasons of a refusal. The broker
// writes these types and the action reads them, so that a field or a code
// cannot exist on one side only.
package brokerapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"
)

// RequestIDHeader carries the id of a request in both directions: a caller
// may send one (the action does, so that it can name a request whose answer
// it never got), and every answer carries the id the broker used. The error
// body, the audit record and every log line of the request carry it too,
// so that "request id X" in a job log finds the broker's records.
const RequestIDHeader = "X-Request-Id"

// ExchangeRequest is the optional body of POST /v1/exchange: it may only
// narrow what the policy grants. Empty fields are omitted, so that the
// policy's defaults apply.
type ExchangeRequest struct {
	WorkspaceID  string `json:"workspace_id,omitempty"`
	DeploymentID string `json:"deployment_id,omitempty"`
	Role         string `json:"role,omitempty"`
	TTL          string `json:"ttl,omitempty"` // a Go duration, e.g. "15m"
}

// ExchangeResponse is the answer to a successful exchange.
type ExchangeResponse struct {
	Token          string    `json:"token"`
	TokenID        string    `json:"token_id"`
	OrganizationID string    `json:"organization_id"`
	WorkspaceID    string    `json:"workspace_id,omitempty"`
	DeploymentID   string    `json:"deployment_id,omitempty"`
	Role           string    `json:"role"`
	ExpiresAt      time.Time `json:"expires_at"`
	Rule           string    `json:"rule"`
}

// DryRunResponse is the answer to POST /v1/exchange?dry_run=true: what an
// exchange would mint, and under which rule. Nothing was minted and the ID
// token was not spent, so the same token can still be exchanged.
type DryRunResponse struct {
	DryRun         bool              `json:"dry_run"`  // always true
	Decision       string            `json:"decision"` // always "allow": a refusal is an error answer, as for an exchange
	Rule           string            `json:"rule"`
	Scope          string            `json:"scope"` // an astro.Scope: organization, workspace or deployment
	OrganizationID string            `json:"organization_id"`
	WorkspaceID    string            `json:"workspace_id,omitempty"`
	DeploymentID   string            `json:"deployment_id,omitempty"`
	WorkspaceRoles map[string]string `json:"workspace_roles,omitempty"`
	Role           string            `json:"role"`
	TTL            string            `json:"ttl"`
}

// RevokeRequest is the body of POST /v1/revoke. A revoke answers 204 with
// no body, also when the token is already gone.
type RevokeRequest struct {
	TokenID string `json:"token_id"`
}

// RotateRequest is the body of POST /v1/rotate: a workflow names which
// rotation to run, never where the value goes (the policy says that).
type RotateRequest struct {
	Name string `json:"name"`
}

// RotateResponse is the answer to a rotation. It never carries the value.
type RotateResponse struct {
	Name string `json:"name"`
	// TokenID is the token whose value the sinks should now hold: the
	// rotated token, the replacement, or (after a failed replace) the old
	// token that was kept.
	TokenID   string       `json:"token_id"`
	Strategy  string       `json:"strategy"`
	RotatedAt time.Time    `json:"rotated_at"`
	Sinks     []SinkResult `json:"sinks"`
	// Warnings are problems that did not stop the rotation, such as an old
	// token that could not be deleted after a replace.
	Warnings []string `json:"warnings,omitempty"`
}

// SinkResult is what happened at one sink (a Vault path, a GitHub secret).
type SinkResult struct {
	Kind   string `json:"kind"`
	Target string `json:"target"`
	// Version is the destination's name for the written state, as text:
	// the KV version for Vault, the key id the value was sealed with for
	// GitHub. A reader also takes a JSON number (see
	// [SinkResult.UnmarshalJSON]).
	Version string `json:"version,omitempty"`
	// Status is written, failed, not_written or restored.
	Status string `json:"status"`
	// Error says why the sink does not hold the new value; it is empty
	// exactly when Status is written.
	Error string `json:"error,omitempty"`
}

// ErrorBody is the broker's error answer. Error is one of the Code*
// constants and Reason, for token_invalid and upstream_unavailable, one of
// the Reason* constants; Message is a constant sentence, or one built only
// from what the caller sent and, for too_wide, from the one rule that
// trusts the caller. RequestID is the answer's X-Request-Id: the key to
// the broker's log records of the request.
type ErrorBody struct {
	Error     string `json:"error"`
	Reason    string `json:"reason,omitempty"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	// Rule, Field and Allowed explain a too_wide refusal: the rule that
	// trusts the caller, the field asked ("role", "ttl", "workspace_id",
	// "deployment_id") and the most that rule allows for it.
	Rule    string `json:"rule,omitempty"`
	Field   string `json:"field,omitempty"`
	Allowed string `json:"allowed,omitempty"`
}

// RotateErrorBody is the error answer of a rotation that failed in some
// sinks (code rotation_incomplete): the error body plus every sink and what
// happened there.
type RotateErrorBody struct {
	ErrorBody
	Sinks    []SinkResult `json:"sinks,omitempty"`
	Warnings []string     `json:"warnings,omitempty"`
}

// UnmarshalJSON accepts version as a JSON string, number or null: a Vault
// KV version is a number in Vault's own API, and a reader that refused one
// would lose every other sink's result with it.
func (s *SinkResult) UnmarshalJSON(b []byte) error {
	var w struct {
		Kind    string          `json:"kind"`
		Target  string          `json:"target"`
		Version json.RawMessage `json:"version"`
		Status  string          `json:"status"`
		Error   string          `json:"error"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*s = SinkResult{Kind: w.Kind, Target: w.Target, Status: w.Status, Error: w.Error}
	v := bytes.TrimSpace(w.Version)
	switch {
	case len(v) == 0 || bytes.Equal(v, []byte("null")):
	case v[0] == '"':
		if err := json.Unmarshal(v, &s.Version); err != nil {
			return err
		}
	default:
		var n json.Number
		if err := json.Unmarshal(v, &n); err != nil {
			return errors.New("sink version: want a string or a number")
		}
		s.Version = n.String()
	}
	return nil
}
