package broker

import (
	"context"
	"crypto/rand"
	"net/http"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

// maxRequestIDLen bounds a caller's request id.
const maxRequestIDLen = 64

type requestIDKey struct{}

// withRequestID gives every request an id: the caller's if it sent exactly
// one well-formed id (see [validRequestID]), else a new random one. The id
// goes into the answer's header at once, so that even an answer the mux
// writes itself carries it.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := ""
		if vs := r.Header.Values(brokerapi.RequestIDHeader); len(vs) == 1 && validRequestID(vs[0]) {
			id = vs[0]
		} else {
			id = rand.Text()
		}
		w.Header().Set(brokerapi.RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// validRequestID reports whether a caller's id may be used as it is: 1 to
// 64 ASCII letters, digits, '.', '_' or '-'. Anything else (spaces, quotes,
// control characters, a log line's worth of text) could forge or garble
// log records and is replaced, not cleaned.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// requestID is the id [withRequestID] gave the request of ctx; "" for a
// call that did not come through the handler (a test calling
// [Server.Exchange] directly).
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
