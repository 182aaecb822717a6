package action

import (
	"testing"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

// codeStatuses are the statuses the broker answers each code with (its
// classify and handleRotate). A code the broker gains must be added here,
// and then needs a hint: a new code is never a silent gap in the action.
var codeStatuses = map[string][]int{
	brokerapi.CodeBadRequest:          {400},
	brokerapi.CodeTooLarge:            {413},
	brokerapi.CodeMethodNotAllowed:    {405},
	brokerapi.CodeNotFound:            {404},
	brokerapi.CodeTokenMissing:        {401},
	brokerapi.CodeTokenInvalid:        {401},
	brokerapi.CodeDenied:              {403},
	brokerapi.CodeTooWide:             {403},
	brokerapi.CodeRateLimited:         {429},
	brokerapi.CodeStoreUnavailable:    {503},
	brokerapi.CodeNotConfigured:       {501},
	brokerapi.CodeUpstreamUnavailable: {429, 502, 503},
	brokerapi.CodeUpstreamRefused:     {502},
	brokerapi.CodeBusy:                {503},
	brokerapi.CodeRestarted:           {503},
	brokerapi.CodeRotationFailed:      {502},
	brokerapi.CodeRotationIncomplete:  {502},
	brokerapi.CodeInternal:            {500},
}

// TestEveryCodeHasAHint: for every code of the protocol, with or without
// any of its reasons, on every operation, the action says something
// better than "check broker-url and the broker's version".
func TestEveryCodeHasAHint(t *testing.T) {
	reasons := append([]string{""}, brokerapi.Reasons()...)
	for _, code := range brokerapi.Codes() {
		statuses, ok := codeStatuses[code]
		if !ok {
			t.Errorf("code %q has no statuses in codeStatuses: add them, and a hint in BrokerError.explain", code)
			continue
		}
		for _, status := range statuses {
			for _, op := range []string{opExchange, opRevoke, opRotate} {
				for _, reason := range reasons {
					e := &BrokerError{Op: op, Status: status, Code: code, Reason: reason, Attempts: 1}
					if _, ok := e.explain(); !ok {
						t.Errorf("%s answered %d %s/%s: the action has no hint for it", op, status, code, reason)
					}
				}
			}
		}
	}
}
