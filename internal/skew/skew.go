// Package skew holds how far the clocks of GitHub, the broker and its store
// may disagree: the one figure the verifier ([idtoken]) and the replay
// store ([store]) must share, kept here so that neither imports the other.
package skew

import "time"

const (
	// Max is the most clock skew the verifier may allow (idtoken's
	// MaxLeeway), and so how long past its exp a token may still verify
	// and must still be remembered as used.
	Max = 60 * time.Second
	// Future is the most an iat or nbf may be ahead of the verifier's
	// clock (idtoken's FutureLeeway; whatever its Leeway says: past
	// leeway, for exp, may be longer). GitHub's clocks and the broker's
	// are NTP-synced, so seconds suffice. It is also how long before its
	// iat a token may have been used, which the replay checks that date
	// tokens rely on: after a loss of the replay store (a restart of a
	// memory broker, a Redis epoch), a token is refused while
	// iat-Future is before it. Short, so that the refusals a loss brings
	// end within the action's retries (1+2+4 s).
	Future = 5 * time.Second
)
