package broker

import (
	"context"
	"errors"
	"net/http"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
)

// rotationFailedError is a rotation that started and failed without a
// result to show; classify answers 502, never a retryable status.
type rotationFailedError struct{ err error }

func (e *rotationFailedError) Error() string { return "rotation failed: " + e.err.Error() }
func (e *rotationFailedError) Unwrap() error { return e.err }

func (s *Server) handleRotate(w http.ResponseWriter, r *http.Request) error {
	var req brokerapi.RotateRequest
	raw, err := readRequest(r, &req)
	if err == nil && (req.Name == "" || len(req.Name) > 256) {
		err = badRequest("name is required, at most 256 bytes")
	}
	if err != nil {
		return s.refuse(r.Context(), opRotate, err)
	}
	res, err := s.Rotate(r.Context(), raw, req.Name)
	var rerr *rotation.Error
	if errors.As(err, &rerr) && rerr.Result != nil {
		s.log.Error("rotation failed", "request_id", requestID(r.Context()), "name", req.Name, "error", rerr.Err)
		writeJSON(w, http.StatusBadGateway, brokerapi.RotateErrorBody{
			ErrorBody: brokerapi.ErrorBody{Error: brokerapi.CodeRotationIncomplete, Message: rerr.Message, RequestID: requestID(r.Context())},
			Sinks:     rerr.Result.Sinks,
			Warnings:  rerr.Result.Warnings,
		})
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// Rotate runs the named rotation if the caller's identity is allowed by the
// rotation's allow block. An unknown name and a name whose allow block
// refuses the caller get the same answer (403 denied), so that a workflow
// cannot list the policy's rotations by trying names; the log says which.
func (s *Server) Rotate(ctx context.Context, rawIDToken, name string) (_ *rotation.Result, err error) {
	e := s.begin(opRotate)
	defer func() { s.record(ctx, e, err) }()

	claims, err := s.verify(ctx, e, rawIDToken)
	if err != nil {
		return nil, err
	}
	if s.rotator == nil {
		return nil, errNoRotator
	}
	p := s.policies.Current()
	var rot *policy.Rotation
	if p != nil {
		rot, _ = p.Rotation(name)
	}
	if rot == nil {
		return nil, errNoSuchRotation
	}
	e.rotation, e.tokenID = rot.Name, rot.TokenID
	if m, missed := rot.Explain(policy.Claims(claims.Strings)); missed {
		s.logMiss(ctx, opRotate, m)
		return nil, errRotationDenied
	}
	if err := s.spend(ctx, claims); err != nil {
		return nil, err
	}
	// The rotation must finish even if the caller goes away: stopping
	// halfway is what could lose a value.
	res, err := s.rotator.Rotate(context.WithoutCancel(ctx), rot)
	if err != nil {
		// Once a rotation has started, no answer may look retryable (429,
		// 503): the action would run a second rotation. Whatever the
		// error, it is a 502; a *rotation.Error inside still gives the
		// answer its sinks.
		return res, &rotationFailedError{err: err}
	}
	e.tokenID = res.TokenID
	return res, nil
}
